"""The commbench stage's record (layout.comm(n)): all-reduce, all-gather and reduce-scatter times and bandwidths at one
world size, the sizes training moves among them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tier1.records.stamped import Stamped


@dataclass(frozen=True)
class CollectivesRecord(Stamped):
    KIND = "collectives"
    VERSION = 2  # 2: reduce_scatter; a version-1 file (no reduce-scatter rows) is refused, naming the stage to rerun

    stage: str
    started_at: str
    world_size: int
    work_s: float
    backend: str
    device_type: str
    device_names: list[str]
    threads_per_rank: int | None
    dtype: str
    definitions: dict[str, str]
    gradient_bytes: int
    embedding_block_bytes: int
    all_reduce: list[dict[str, Any]]
    all_gather: list[dict[str, Any]]
    summary: dict[str, Any]
    matmul: dict[str, Any] | None
    disturbance: dict[str, Any]
    marks: list[str]
    rank_windows: list[dict[str, Any]]
    model: dict[str, Any]
    config: dict[str, Any]
    finished_at: str
    # FSDP2's gradient reduce-scatter at the gradient size
    reduce_scatter: list[dict[str, Any]] = dataclasses.field(default_factory=list)
