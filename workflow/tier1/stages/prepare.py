"""Stage 2, prepare: training pairs and the BEIR-form evaluation set.

    python -m tier1.stages.prepare --config '{"dataset": "stdlib", ...}' --train PAIRS.jsonl \\
        --corpus CORPUS.jsonl --queries QUERIES.jsonl \\
        --qrels QRELS.tsv --manifest MANIFEST.json
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from tier1 import layout
from tier1.config import PrepareConfig, config_hash
from tier1.data import sources, split
from tier1.measure import clock
from tier1.records import ManifestRecord
from tier1.runtime import atomic, cli, provenance
from tier1.runtime.cli import run_main

log = logging.getLogger("tier1.stages.prepare")


@dataclass(frozen=True)
class Outputs:
    """Where preparation writes: the training pairs, the BEIR test set and the manifest (last)."""

    train: Path
    corpus: Path
    queries: Path
    qrels: Path
    manifest: Path

    @classmethod
    def in_folder(cls, folder: Path) -> Outputs:
        """The files of a run's data folder (tier1.layout), inside `folder`."""
        return cls(*(layout.in_data_folder(p, folder) for p in (layout.TRAIN_PAIRS, layout.CORPUS, layout.QUERIES,
                                                                  layout.QRELS, layout.MANIFEST)))


def write_beir(beir: sources.BeirSet, corpus: Path, queries: Path, qrels: Path) -> None:
    atomic.write_text(corpus, "".join(json.dumps({"_id": d, **doc}) + "\n" for d, doc in beir.corpus.items()))
    atomic.write_text(queries, "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in beir.queries.items()))
    atomic.write_text(qrels, "query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t{s}\n" for q, docs in beir.qrels.items() for d, s in docs.items()
    ))


def _sha256(*paths: Path) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def prepare(cfg: PrepareConfig, out: Outputs) -> ManifestRecord:
    started = clock.now()  # the stage's own work: reading, extracting and splitting the data
    source = sources.load(cfg.dataset)
    log.info("loaded %d pairs from %s", len(source.pairs), source.description)
    if any(source.dropped.values()):
        log.warning("left out %d rows with an empty text and %d repeating an earlier id or text",
                    source.dropped["dropped_empty"], source.dropped["dropped_duplicates"])
    if source.unused:
        log.warning("%s", source.unused)
    if source.beir_test is not None:
        test_set = split.sample_queries(source.beir_test, cfg.test_samples, cfg.seed)
        if len(test_set.queries) < cfg.test_samples:
            log.warning("%s", sources.fewer_test_queries(cfg.dataset, len(test_set.queries), cfg.test_samples))
        train = split.shuffled(source.pairs, cfg.seed, key=lambda p: p["id"])[: cfg.train_samples]
    else:
        train, test = split.split_pairs(source.pairs, cfg.train_samples, cfg.test_samples, cfg.seed)
        test_set = split.beir_from_pairs(test)
    if len(train) < cfg.train_samples:
        log.warning("train_samples: %d asked for, only %d available", cfg.train_samples, len(train))
    work_s = clock.now() - started

    write_beir(test_set, out.corpus, out.queries, out.qrels)
    atomic.write_text(out.train, "".join(json.dumps(p) + "\n" for p in train))
    settings = dataclasses.asdict(cfg)
    manifest = ManifestRecord(
        stage="prepare",
        dataset=source.description,
        seed=cfg.seed,
        work_s=work_s,  # the report's pipeline overhead counts the rest of the job
        counts={
            "available_pairs": len(source.pairs),
            "dropped_empty": source.dropped["dropped_empty"],
            "dropped_duplicates": source.dropped["dropped_duplicates"],
            "train_pairs": len(train),
            "test_queries": len(test_set.queries),
            "corpus_documents": len(test_set.corpus),
        },
        # what the data is, whatever produced it (the stdlib default differs from one Python to the next)
        content_sha256={"train": _sha256(out.train), "test": _sha256(out.corpus, out.queries, out.qrels)},
        config=settings,
        **provenance.stamp(config_hash(settings)),
    )
    manifest.write(out.manifest)  # last: its presence means complete
    log.info("wrote %s", manifest.counts)
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    for name, what in (("train", "training pairs (jsonl)"), ("corpus", "BEIR corpus.jsonl"),
                       ("queries", "BEIR queries.jsonl"), ("qrels", "BEIR qrels (tsv)"),
                       ("manifest", "manifest.json, written last")):
        parser.add_argument(f"--{name}", type=Path, required=True, help=what)
    args = parser.parse_args(argv)
    with cli.stage(args, "prepare", transformers=False) as run:
        prepare(run.cfg, Outputs(args.train, args.corpus, args.queries, args.qrels, args.manifest))


if __name__ == "__main__":
    run_main(main)
