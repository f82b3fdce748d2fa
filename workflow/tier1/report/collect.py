"""Read what the stages wrote into one structure the table and the plots share.

The report reads exactly the files Snakemake hands it and keeps their paths, so every number
in the table can name the file it came from. World sizes come from the files themselves.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from tier1.runtime.atomic import read_json

# The original card's table (4x A40), shown beside the measurements, never mixed with them.
CARD_EXPECTATION = {
    "gpus": 4,
    "device": "4x NVIDIA A40",
    "training_s": {1: 600.0, 4: 200.0},
    "evaluation_s": {1: 120.0, 4: 45.0},
    "memory_capacity_gb": {1: 46.0, 4: 184.0},
    "max_batch_size": {1: 32, 4: 128},
    "training_speedup": 3.0,
    "evaluation_speedup": 2.7,
}


@dataclass(frozen=True)
class Inputs:
    """The stage files a report is made from (lists in any order; loss files in train's order)."""

    manifest: Path
    train: list[Path]
    loss: list[Path]
    eval_base: list[Path]
    eval_trained: list[Path]
    probe: list[Path] = field(default_factory=list)
    reference_loss: Path | None = None  # the 1-rank run with other dropout masks
    preflight: Path | None = None  # the machine as the run found it
    comm: list[Path] = field(default_factory=list)  # collective bandwidths, one file per world size > 1
    internode_busbw_gbps: float | None = None  # the user's figure (config), for projections past the machine
    # Snakemake benchmark files of the run's jobs (results/benchmarks/<job>.tsv), for the overhead
    benchmarks: list[Path] = field(default_factory=list)
    reference_train: Path | None = None  # train_metrics.json of the dropout-reference run (its timed window)
    tokenize: Path | None = None  # the tokenize stage's record (tokens.json): its work window, for the overhead
    rank_compute: Path | None = None  # one rank's compute at each world size's share of the batch
    sweep: list[Path] = field(default_factory=list)  # the batch sweep's records, one per (batch, world size)


@dataclass
class Results:
    train: dict[int, dict] = field(default_factory=dict)          # world size -> train_metrics
    loss: dict[int, list[dict]] = field(default_factory=dict)     # world size -> loss rows
    eval_base: dict[int, dict] = field(default_factory=dict)      # world size -> metrics of base model
    eval_trained: dict[int, dict] = field(default_factory=dict)   # trained world size -> metrics
    probe: dict[int, dict] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    reference_loss: list[dict] = field(default_factory=list)
    preflight: dict = field(default_factory=dict)                 # the machine: CPU, GPUs, links, NCCL
    comm: dict[int, dict] = field(default_factory=dict)           # world size -> commbench record
    internode_busbw_gbps: float | None = None                     # stated in the config, not measured
    benchmarks: dict[str, dict] = field(default_factory=dict)     # job -> {"path", "s": wall s per repetition}
    benchmarks_left_out: list[str] = field(default_factory=list)  # the report job's own (an earlier report's)
    reference_train: dict = field(default_factory=dict)           # the dropout-reference run's train_metrics
    tokenize: dict = field(default_factory=dict)                  # the tokenize stage's record (tokens.json)
    rank_compute: dict = field(default_factory=dict)              # tier1.stages.rank_compute's record
    sweep: dict[tuple[int, int], dict] = field(default_factory=dict)  # (global batch, world size) -> record
    # (kind, world size) -> file read; a file not per world size (manifest, preflight, tokenize) is (kind, 0)
    paths: dict[tuple[str, int], str] = field(default_factory=dict)

    def source(self, kind: str, n: int) -> str:
        """The file a value of `kind` ("train", "eval_base", ...) at world size n was read from."""
        return self.paths[(kind, n)]


def read_loss(path: Path) -> list[dict]:
    with path.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def read_benchmark(path: Path) -> list[float]:
    """The wall seconds (`s`) of each repetition in a Snakemake benchmark file."""
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "s" not in rows[0]:
        raise ValueError(f"{path}: not a Snakemake benchmark file (no rows with an `s` column)")
    try:
        seconds = [float(row["s"]) for row in rows]
    except (TypeError, ValueError):
        raise ValueError(f"{path}: column `s` holds a value that is not a number") from None
    if not all(math.isfinite(s) and s >= 0 for s in seconds):
        raise ValueError(f"{path}: column `s` holds a negative or non-finite time")
    return seconds


def collect(inputs: Inputs) -> Results:
    r = Results(manifest=read_json(inputs.manifest), internode_busbw_gbps=inputs.internode_busbw_gbps)
    r.paths[("manifest", 0)] = str(inputs.manifest)
    if len(inputs.loss) != len(inputs.train):
        raise ValueError(f"{len(inputs.train)} training records but {len(inputs.loss)} loss files")
    for kind, paths in (("train", inputs.train), ("eval_base", inputs.eval_base),
                        ("eval_trained", inputs.eval_trained), ("probe", inputs.probe), ("comm", inputs.comm)):
        for path in paths:
            record = read_json(path)
            n = record["world_size"]
            getattr(r, kind)[n] = record
            r.paths[(kind, n)] = str(path)
    for train_path, loss_path in zip(inputs.train, inputs.loss):
        r.loss[read_json(train_path)["world_size"]] = read_loss(loss_path)
    if inputs.reference_loss is not None:
        r.reference_loss = read_loss(inputs.reference_loss)
    if inputs.preflight is not None:
        r.preflight = read_json(inputs.preflight)
        r.paths[("preflight", 0)] = str(inputs.preflight)
    if inputs.tokenize is not None:
        r.tokenize = read_json(inputs.tokenize)
        r.paths[("tokenize", 0)] = str(inputs.tokenize)
    if inputs.rank_compute is not None:
        r.rank_compute = read_json(inputs.rank_compute)
        r.paths[("rank_compute", 0)] = str(inputs.rank_compute)
    for path in inputs.sweep:
        record = read_json(path)
        key = (record["global_batch"], record["world_size"])
        r.sweep[key] = record
        r.paths[("sweep", key)] = str(path)
    if inputs.reference_train is not None:
        r.reference_train = read_json(inputs.reference_train)
        r.paths[("reference_train", 1)] = str(inputs.reference_train)
    for path in inputs.benchmarks:
        if path.stem == "report":  # the report cannot time itself: this one is an earlier report's
            r.benchmarks_left_out.append(str(path))
            continue
        if path.stem in r.benchmarks:
            raise ValueError(f"two benchmark files for job {path.stem!r}: {r.benchmarks[path.stem]['path']}, {path}")
        r.benchmarks[path.stem] = {"path": str(path), "s": read_benchmark(path)}
    return r
