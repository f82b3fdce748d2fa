"""The rank-compute record (layout.RANK_COMPUTE): one rank's compute at each world size's share of the batch (the
prediction's input)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tier1.records.stamped import Stamped


@dataclass(frozen=True)
class RankComputeRecord(Stamped):
    KIND = "rank_compute"

    stage: str
    started_at: str
    device: str
    device_name: str
    cores: int
    scaling: str
    global_batch_1: int
    batches: int
    rounds: int
    method: str
    encoder: dict[str, str]
    world_sizes: dict[str, dict[str, Any]]  # world size (as text) -> that share's compute
    finished_at: str
