"""preflight.json: the machine as the run found it (CPU, GPUs, links, NCCL settings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tier1.records.stamped import Stamped


@dataclass(frozen=True)
class PreflightRecord(Stamped):
    KIND = "preflight"

    stage: str
    started_at: str
    work_s: float
    world_sizes: list[int]
    backend: str
    backends_available: dict[str, bool]
    cpu: dict[str, Any]
    gpu: dict[str, Any] | None
    nccl_env: dict[str, str]
    unavailable: dict[str, str]         # what could not be inspected, and why
    finished_at: str
