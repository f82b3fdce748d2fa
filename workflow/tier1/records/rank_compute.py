"""The rank-compute record (layout.RANK_COMPUTE): one rank's compute at each world size's share of the batch (the
prediction's input)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tier1.records.stamped import Stamped


@dataclass(frozen=True)
class RankComputeRecord(Stamped):
    KIND = "rank_compute"
    VERSION = 2  # 2: the timed rounds' disturbance (disturbed_by, marks); a version-1 file is refused


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
    disturbed_by: dict[str, Any]  # what else ran during the timed rounds (tier1.measure.disturbance.judge)
    marks: list[str]  # a disturbed measurement: the prediction does not use it
    finished_at: str
