"""The GPU check's summary (tier1.stages.check_gpus --out): whether every rank did its work and
ended with the same parameters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tier1.records.stamped import Stamped


@dataclass(frozen=True)
class CheckGpusRecord(Stamped):
    KIND = "check_gpus"

    world_size: int
    encoder: dict[str, str]
    ranks: list[dict[str, Any]]
    all_ranks_did_work: bool
    checksums_equal: bool
    verdict_ok: bool
