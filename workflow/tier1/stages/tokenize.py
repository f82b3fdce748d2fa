"""Stage 3, tokenize: token ids of every text, computed once for all later stages and ranks.

    python -m tier1.stages.tokenize --config '{"model": ..., "max_seq_length": 64}' \\
        --train PAIRS.jsonl --corpus CORPUS.jsonl \\
        --queries QUERIES.jsonl --qrels QRELS.tsv \\
        --out TOKENS.safetensors --record-out TOKENS.json

Training and evaluation read these ids (tier1.encoder.token_cache) instead of re-tokenising on
every rank and every run. Beside the cache, a small JSON record (`--record-out`) says what was
tokenised and how long that took (`work_s`), for the report's pipeline overhead.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from tier1.config import TokenizeConfig, config_hash
from tier1.data.sources import read_beir_files, read_jsonl
from tier1.encoder.token_cache import build, count_truncated, save
from tier1.measure import clock
from tier1.records import TokensRecord
from tier1.runtime import cli, provenance
from tier1.runtime.cli import run_main

log = logging.getLogger("tier1.stages.tokenize")


def record(cfg: TokenizeConfig, cache: dict, work_s: float) -> TokensRecord:
    """What the stage tokenised and in how many seconds; the cache itself is not JSON."""
    settings = dataclasses.asdict(cfg)
    counts = {"train_pairs": len(cache["anchor"]), "documents": len(cache["corpus"]), "queries": len(cache["queries"])}
    return TokensRecord(stage="tokenize", work_s=work_s,  # the report's pipeline overhead counts the rest of the job
                        counts={**counts, "texts": 2 * counts["train_pairs"] + counts["documents"] + counts["queries"]},
                        truncated=cache["truncated"], max_seq_length=cache["max_seq_length"],
                        config=settings, **provenance.stamp(config_hash(settings)))


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--train", type=Path, required=True, help="training pairs (jsonl)")
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--qrels", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--record-out", type=Path, default=None,
                        help="a JSON record of what was tokenised and the seconds it took (the report's pipeline overhead)")
    args = parser.parse_args(argv)
    with cli.stage(args, "tokenize") as run:
        cfg: TokenizeConfig = run.cfg
        from tier1.encoder.tokenizer import load_tokenizer

        # the workflow turns the tokenizers library's threads off for the processes that fork
        # (its pool does not survive a fork); this one tokenises in bulk and forks nothing, on
        # every core its job holds
        os.environ["TOKENIZERS_PARALLELISM"] = "true"

        tokenizer = load_tokenizer(cfg.model, trust_remote_code=cfg.trust_remote_code, encoder=cfg.encoder)
        beir = read_beir_files(args.corpus, args.queries, args.qrels)
        pairs = read_jsonl(args.train)
        started = clock.now()  # the tokenising only: loading the tokenizer and texts is start-up
        cache = build(tokenizer, pairs, beir, cfg.max_seq_length)
        cache["truncated"] = count_truncated(tokenizer, cache, pairs, beir, cfg.max_seq_length)
        work_s = clock.now() - started
        save(cache, args.out)
        if args.record_out is not None:
            record(cfg, cache, work_s).write(args.record_out)
        log.info("token ids of %d pairs, %d documents and %d queries -> %s", len(cache["anchor"]),
                 len(cache["corpus"]), len(cache["queries"]), args.out)


if __name__ == "__main__":
    run_main(main)
