"""The batch sweep's record (layout.sweep(b, n)): the steady training step at one global batch and world size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tier1.records.stamped import Stamped


@dataclass(frozen=True)
class SweepRecord(Stamped):
    KIND = "sweep"

    stage: str
    started_at: str
    global_batch: int
    world_size: int
    per_rank_batch: int
    steady_step_s: float
    step_times_s: list[float]
    timed_steps: int
    gpu_busy: dict[str, Any] | None
    gpu_busy_share: float | None
    device_name: str
    on_gpu: bool
    gpus: int
    encoder: dict[str, str]
    ranks: list[dict[str, Any]]
    method: str
    finished_at: str
