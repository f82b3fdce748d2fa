"""Stage 1, prepare: training pairs and the BEIR-form evaluation set.

    python -m tier1.prepare --config '{"dataset": "stdlib", ...}' --out results/data
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tier1 import atomic, provenance
from tier1.cli_common import parse_stage_config, run_main, setup_logging
from tier1.config import ConfigError, config_hash
from tier1.data import sources, split

log = logging.getLogger("tier1.prepare")


def write_beir(beir: sources.BeirSet, folder: Path) -> None:
    corpus = "".join(json.dumps({"_id": d, **doc}) + "\n" for d, doc in beir.corpus.items())
    queries = "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in beir.queries.items())
    qrels = "query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{s}\n" for q, docs in beir.qrels.items() for d, s in docs.items()
    )
    atomic.write_text(folder / "corpus.jsonl", corpus)
    atomic.write_text(folder / "queries.jsonl", queries)
    atomic.write_text(folder / "qrels" / "test.tsv", qrels)


def prepare(cfg: dict, out: Path) -> dict:
    source = sources.load(cfg["dataset"])
    log.info("loaded %d pairs from %s", len(source.pairs), source.description)
    if source.beir_test is not None:
        test_set = split.sample_queries(source.beir_test, cfg["test_samples"], cfg["seed"])
        train = split.shuffled(source.pairs, cfg["seed"], key=lambda p: p["id"])[: cfg["train_samples"]]
    else:
        train, test = split.split_pairs(source.pairs, cfg["train_samples"], cfg["test_samples"], cfg["seed"])
        test_set = split.beir_from_pairs(test)
    if not train:
        raise ConfigError(f"dataset: {cfg['dataset']!r} gives no training pairs")
    if len(train) < cfg["train_samples"]:
        log.warning("train_samples: %d asked for, only %d available", cfg["train_samples"], len(train))

    write_beir(test_set, out / "test")
    atomic.write_text(out / "train.jsonl", "".join(json.dumps(p) + "\n" for p in train))
    manifest = {
        "stage": "prepare",
        "dataset": source.description,
        "seed": cfg["seed"],
        "counts": {
            "available_pairs": len(source.pairs),
            "train_pairs": len(train),
            "test_queries": len(test_set.queries),
            "corpus_documents": len(test_set.corpus),
        },
        "config": cfg,
        **provenance.stamp(config_hash(cfg)),
    }
    atomic.write_json(out / "manifest.json", manifest)  # last: its presence means complete
    log.info("wrote %s", manifest["counts"])
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON of the prepare stage's config keys")
    parser.add_argument("--out", type=Path, default=Path("results/data"))
    args = parser.parse_args(argv)
    setup_logging()
    prepare(parse_stage_config(args.config, "prepare"), args.out)


if __name__ == "__main__":
    run_main(main)
