"""Read what the stages wrote into one structure the table and the plots share.

The report reads exactly the files the report rule names in its index (kind -> file, or world
size -> file), each through its record class (tier1.records), and keeps their paths, so every
number in the table can name the file it came from. A record's own world size must match the one
the index gives it.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tier1.records import (
    CollectivesRecord,
    EvaluationRecord,
    ManifestRecord,
    PreflightRecord,
    ProbeRecord,
    RankComputeRecord,
    Record,
    SweepRecord,
    TokensRecord,
    TrainRecord,
)

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


# The kinds of file the report reads, by the name the report rule's index gives them: the record
# class each is read through (tier1.records), or the loss-curve reader.
RECORDS: dict[str, type[Record]] = {
    "manifest": ManifestRecord,          # the data set (prepare)
    "tokens": TokensRecord,              # what was tokenised, and its work window (tokenize)
    "preflight": PreflightRecord,        # the machine as the run found it
    "train": TrainRecord,                # per world size
    "reference_train": TrainRecord,      # the 1-rank run with other dropout masks (its timed window)
    "eval_base": EvaluationRecord,       # the base model, per world size
    "eval_trained": EvaluationRecord,    # each trained model at its own world size
    "probe": ProbeRecord,                # per world size
    "comm": CollectivesRecord,           # collective bandwidths, per world size above 1
    "rank_compute": RankComputeRecord,   # one rank's compute at each world size's share of the batch
    "sweep": SweepRecord,                # the batch sweep, one per (global batch, world size)
    # a second data-parallel strategy (parallelism: [a, b]), per world size, beside the first's
    "second_train": TrainRecord,
    "second_eval_trained": EvaluationRecord,
}
LOSS = ("loss", "reference_loss", "second_loss")  # loss.csv files: per world size, the dropout reference's
PER_WORLD_SIZE = ("train", "loss", "eval_base", "eval_trained", "probe", "comm", "second_train", "second_loss",
                  "second_eval_trained")


@dataclass(frozen=True)
class Inputs:
    """The files a report is made from, by name (the report rule's index, tier1.report's --records):
    `records` maps each kind (RECORDS, LOSS) to a file, or, for the kinds in PER_WORLD_SIZE, a
    world size to a file (any other label for the sweep); `jobs` maps each job of the run to its
    Snakemake benchmark file and the records (`kind` or `kind:world size`) that hold its timed
    windows, for the pipeline overhead."""

    records: dict[str, Any]
    jobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    internode_busbw_gbps: float | None = None  # the user's figure (config), for projections past the machine

    @classmethod
    def from_json(cls, index: dict[str, Any], internode_busbw_gbps: float | None = None) -> Inputs:
        unknown = sorted(set(index) - {"records", "jobs"})
        if unknown or "records" not in index:
            raise ValueError(f"the report's index holds {sorted(index)}: expected 'records' and 'jobs'")
        return cls(index["records"], index.get("jobs", {}), internode_busbw_gbps)


@dataclass(frozen=True)
class Job:
    """One job of the run: its benchmark file and where its timed windows are recorded."""

    benchmark: str
    seconds: list[float]      # Snakemake's wall seconds, one per repetition
    windows: list[str]        # `kind` or `kind:world size`; empty: the job times nothing


@dataclass
class Results:
    train: dict[int, TrainRecord] = field(default_factory=dict)             # world size -> record
    loss: dict[int, list[dict]] = field(default_factory=dict)               # world size -> loss rows
    eval_base: dict[int, EvaluationRecord] = field(default_factory=dict)    # world size -> base model's
    eval_trained: dict[int, EvaluationRecord] = field(default_factory=dict)  # trained world size -> record
    probe: dict[int, ProbeRecord] = field(default_factory=dict)
    manifest: ManifestRecord | None = None
    reference_loss: list[dict] = field(default_factory=list)
    preflight: PreflightRecord | None = None                                # the machine: CPU, GPUs, links, NCCL
    comm: dict[int, CollectivesRecord] = field(default_factory=dict)        # world size -> commbench record
    internode_busbw_gbps: float | None = None                               # stated in the config, not measured
    jobs: dict[str, Job] = field(default_factory=dict)                      # the run's jobs, in the order given
    reference_train: TrainRecord | None = None                              # the dropout-reference run's
    tokens: TokensRecord | None = None                                      # the tokenize stage's record
    rank_compute: RankComputeRecord | None = None
    sweep: dict[tuple[int, int], SweepRecord] = field(default_factory=dict)  # (global batch, world size) -> record
    # the second strategy's runs (parallelism: [a, b]): world size -> record, loss rows, evaluation
    second_train: dict[int, TrainRecord] = field(default_factory=dict)
    second_loss: dict[int, list[dict]] = field(default_factory=dict)
    second_eval_trained: dict[int, EvaluationRecord] = field(default_factory=dict)
    # (kind, world size) -> file read; a file not per world size (manifest, preflight, tokens) is (kind, 0)
    paths: dict[tuple[str, Any], str] = field(default_factory=dict)

    def source(self, kind: str, n: int) -> str:
        """The file a value of `kind` ("train", "eval_base", ...) at world size n was read from."""
        return self.paths[(kind, n)]

    def window(self, ref: str) -> tuple[Record | None, str | None]:
        """The record (and its file) a job's `kind` or `kind:world size` reference names; None when
        the report holds no such record."""
        kind, _, key = ref.partition(":")
        if kind not in RECORDS or kind == "sweep":
            raise ValueError(f"the report's index names a timed window {ref!r}: no record kind {kind!r}")
        if kind in PER_WORLD_SIZE:
            n = int(key)
            return getattr(self, kind).get(n), self.paths.get((kind, n))
        return getattr(self, kind), self.paths.get((kind, 0))


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
    r = Results(internode_busbw_gbps=inputs.internode_busbw_gbps)
    for kind, given in inputs.records.items():
        if kind not in RECORDS and kind not in LOSS:
            raise ValueError(f"the report's index names {kind!r}: not a kind the report reads "
                             f"({', '.join([*RECORDS, *LOSS])})")
        if kind in PER_WORLD_SIZE or kind == "sweep":
            if not isinstance(given, dict):
                raise ValueError(f"the report's index gives {kind!r} one file: expected one per world size")
            for key, path in given.items():
                _add(r, kind, key, Path(path))
        else:
            _add(r, kind, None, Path(given))
    if set(r.loss) != set(r.train) or set(r.second_loss) != set(r.second_train):
        raise ValueError(f"training records at world sizes {sorted(r.train)} ({sorted(r.second_train)} of the second "
                         f"strategy) but loss files at {sorted(r.loss)} ({sorted(r.second_loss)})")
    for name, job in inputs.jobs.items():
        r.jobs[name] = Job(str(job["benchmark"]), read_benchmark(Path(job["benchmark"])), list(job["windows"]))
    return r


def _add(r: Results, kind: str, key: str | None, path: Path) -> None:
    if kind in LOSS:
        rows = read_loss(path)
        if kind in ("loss", "second_loss"):
            getattr(r, kind)[int(key)] = rows
        else:
            r.reference_loss = rows
        return
    record = RECORDS[kind].read(path)
    if kind == "sweep":
        where = (record.global_batch, record.world_size)
        r.sweep[where] = record
        r.paths[("sweep", where)] = str(path)
    elif kind in PER_WORLD_SIZE:
        n = int(key)
        if record.world_size != n:
            raise ValueError(f"{path}: a record of world size {record.world_size}, given as world size {n}")
        getattr(r, kind)[n] = record
        r.paths[(kind, n)] = str(path)
    else:
        setattr(r, kind, record)
        r.paths[(kind, 0)] = str(path)


def strategy(m: TrainRecord) -> str:
    """The data-parallel strategy a training ran (`ddp` in a record that predates the setting)."""
    return m.config.get("parallelism", "ddp")


def second_strategy(r: Results) -> Results | None:
    """The results as the second strategy's runs would make them (its trainings, loss curves and
    evaluations in place of the first's; all else shared), so every verdict and row reads it the
    same way; None when only one strategy ran."""
    if not r.second_train:
        return None
    import dataclasses

    paths = {k: v for k, v in r.paths.items() if k[0] not in ("train", "eval_trained")}
    paths |= {(kind[len("second_"):], n): v for (kind, n), v in r.paths.items()
              if kind in ("second_train", "second_eval_trained")}
    return dataclasses.replace(r, train=r.second_train, loss=r.second_loss, eval_trained=r.second_eval_trained,
                               second_train={}, second_loss={}, second_eval_trained={}, paths=paths)
