"""The training record (layout.train_record(model)): one training run's times, throughput, per-rank accounting, objective and
provenance (built by tier1.training.record, written by the train stage)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tier1.records.stamped import Stamped


@dataclass(frozen=True)
class TrainRecord(Stamped):
    KIND = "train"

    stage: str
    world_size: int
    started_at: str
    finished_at: str | None
    wall_time_s: float
    wall_times_s: list[float]           # one per repeat; wall_time_s is their median
    warm_up_s: list[float]              # rank 0's shape warm-up before each repeat's window (overhead)
    resumed_from_step: int
    steps: int
    samples_per_s: float | None
    steady_step_s: float | None
    steady_step_spread: dict[str, Any] | None
    step_evenness: dict[str, Any]
    shapes: dict[str, Any]
    encoder: dict[str, str]             # tier1.encoder.model.identity: implementation, version, attention
    stalls: list[dict[str, float]]
    marks: list[str]                    # why the times are not clean measurements (empty when they are)
    throughput: dict[str, Any]
    samples_total: int
    expected_samples: int
    objective: dict[str, Any]
    precision: str
    gradient_checkpointing: bool
    dropout: dict[str, Any]
    time_split_median_s: dict[str, float | None]
    decomposition: dict[str, Any] | None
    allreduce_gradients_s: float | None
    gradient_bytes: int
    checksums_equal: bool
    ranks: list[dict[str, Any]]
    final_loss: float | None
    config: dict[str, Any]
    decomposition_s: float              # the decomposition's own timed window (re-run steps, all-reduce)
    model_head: dict[str, Any]
    warm_up_step: bool                 # an untimed step (with its optimizer update, undone) before the window
    disturbance: dict[str, Any]
