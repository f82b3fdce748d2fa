"""compare.json of the bench stage: tier1 against sentence-transformers, recipe by recipe. Each
recipe's sides are free-form measurement blocks; each side names the encoder that ran (`encoder`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tier1.records.stamped import Stamped


@dataclass(frozen=True)
class BenchRecord(Stamped):
    KIND = "bench"

    device: str
    threads: int
    repeats: int
    config: dict[str, Any]
    recipes: dict[str, dict[str, Any]]  # recipe -> its measurement (bench.compare.measure)
    # sentence-transformers' host cost per step over tier1's (the step less its arithmetic floor,
    # tier1.bench.floor); None until the host_overhead recipe has run
    host_overhead_ratio: float | None
    host_overhead_ms_per_step: dict[str, float] | None  # side -> host cost per step (ms, median)
