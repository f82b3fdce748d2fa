"""Read what the stages wrote into one structure the table and the plots share."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from tier1.atomic import read_json

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


@dataclass
class Results:
    results: Path
    train: dict[int, dict] = field(default_factory=dict)          # world size -> train_metrics
    loss: dict[int, list[dict]] = field(default_factory=dict)     # world size -> loss rows
    eval_base: dict[int, dict] = field(default_factory=dict)      # world size -> metrics of base model
    eval_trained: dict[int, dict] = field(default_factory=dict)   # trained world size -> metrics
    probe: dict[int, dict] = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    def source(self, kind: str, n: int) -> str:
        paths = {
            "train": f"train/gpus{n}/train_metrics.json",
            "eval_base": f"eval/base/ws{n}/metrics.json",
            "eval_trained": f"eval/gpus{n}/ws{n}/metrics.json",
            "probe": f"probe/gpus{n}.json",
        }
        return str(Path("results") / paths[kind])


def read_loss(path: Path) -> list[dict]:
    with path.open() as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def collect(results: Path, world_sizes: list[int], eval_world_sizes: list[int]) -> Results:
    r = Results(results)
    r.manifest = read_json(results / "data" / "manifest.json")
    for n in world_sizes:
        r.train[n] = read_json(results / "train" / f"gpus{n}" / "train_metrics.json")
        r.loss[n] = read_loss(results / "train" / f"gpus{n}" / "loss.csv")
        r.eval_trained[n] = read_json(results / "eval" / f"gpus{n}" / f"ws{n}" / "metrics.json")
        probe = results / "probe" / f"gpus{n}.json"
        if probe.exists():
            r.probe[n] = read_json(probe)
    for w in eval_world_sizes:
        r.eval_base[w] = read_json(results / "eval" / "base" / f"ws{w}" / "metrics.json")
    return r
