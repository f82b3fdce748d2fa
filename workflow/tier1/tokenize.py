"""Stage 1b, tokenize: token ids of every text, computed once for all later stages and ranks.

    python -m tier1.tokenize --config '{"model": ..., "max_seq_length": 64}' \
        --data results/data --out results/data/tokens.pt

Training and evaluation read these ids instead of re-tokenising on every rank and every run.
Trained models keep the base model's tokenizer, so one cache serves all of them.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from tier1.atomic import atomic_path
from tier1.cli_common import parse_stage_config, quiet_transformers, run_main, setup_logging
from tier1.data.sources import read_beir, read_jsonl

log = logging.getLogger("tier1.tokenize")


def token_ids(tokenizer, texts: list[str], max_seq_length: int) -> list[list[int]]:
    """Unpadded, truncated ids; batches pad them to their own longest text."""
    return tokenizer(texts, truncation=True, max_length=max_seq_length, padding=False)["input_ids"]


def doc_text(doc: dict[str, str]) -> str:
    return f"{doc['title']} {doc['text']}".strip()


def build(tokenizer, data: Path, max_seq_length: int) -> dict:
    pairs = read_jsonl(data / "train.jsonl")
    beir = read_beir(data / "test", "test")
    doc_ids, query_ids = sorted(beir.corpus), sorted(beir.queries)
    return {
        "max_seq_length": max_seq_length,
        "vocab_size": len(tokenizer),
        "train_ids": [p["id"] for p in pairs],
        "anchor": token_ids(tokenizer, [p["anchor"] for p in pairs], max_seq_length),
        "positive": token_ids(tokenizer, [p["positive"] for p in pairs], max_seq_length),
        "doc_ids": doc_ids,
        "corpus": token_ids(tokenizer, [doc_text(beir.corpus[d]) for d in doc_ids], max_seq_length),
        "query_ids": query_ids,
        "queries": token_ids(tokenizer, [beir.queries[q] for q in query_ids], max_seq_length),
    }


def load(path: Path, max_seq_length: int) -> dict:
    cache = torch.load(path, weights_only=False)
    if cache["max_seq_length"] != max_seq_length:
        raise ValueError(f"{path} holds ids cut at {cache['max_seq_length']} tokens, not {max_seq_length}: "
                         f"rerun the tokenize stage")
    return cache


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON of the tokenize stage's config keys")
    parser.add_argument("--data", type=Path, default=Path("results/data"))
    parser.add_argument("--out", type=Path, default=Path("results/data/tokens.pt"))
    args = parser.parse_args(argv)
    setup_logging()
    quiet_transformers()
    cfg = parse_stage_config(args.config, "tokenize")
    from tier1 import model

    _, tokenizer = model.load(cfg["model"])
    cache = build(tokenizer, args.data, cfg["max_seq_length"])
    with atomic_path(args.out) as tmp:
        torch.save(cache, tmp)
    log.info("token ids of %d pairs, %d documents and %d queries -> %s", len(cache["anchor"]),
             len(cache["corpus"]), len(cache["queries"]), args.out)


if __name__ == "__main__":
    run_main(main)
