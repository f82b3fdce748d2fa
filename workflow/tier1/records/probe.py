"""The probe record (layout.probe(n)): the largest training and encoding batch that fit the device, on GPUs and on
a CPU. Without GPUs there is no device memory limit to find, so each world size's file says "not
applicable" rather than inventing a number. Torch-free, so the workflow writes those files in its
own process (the CPU probe rule), with no job to start."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tier1.config import config_hash
from tier1.records.stamped import Stamped
from tier1.runtime import provenance


@dataclass(frozen=True)
class ProbeRecord(Stamped):
    KIND = "probe"

    stage: str
    world_size: int
    started_at: str
    max_train_batch_per_device: int | None
    max_train_batch_global: int | None
    max_encode_batch_per_device: int | None
    device_capacity_bytes: int | None
    train_search: dict[str, Any] | None    # None where nothing was searched (no GPU)
    encode_search: dict[str, Any] | None
    trial_batches: int | None
    not_applicable: str | None             # why there is no figure (no GPU); None on GPUs
    work_s: float
    encoder: dict[str, str] | None         # the encoder searched with; None where none ran
    config: dict[str, Any]
    finished_at: str


NOT_APPLICABLE = {"max_train_batch_per_device": None, "max_train_batch_global": None,
                  "max_encode_batch_per_device": None, "device_capacity_bytes": None, "train_search": None,
                  "encode_search": None, "trial_batches": None,
                  "not_applicable": "no GPU: there is no device memory limit to probe", "encoder": None,
                  "work_s": 0.0}  # nothing searched: the whole job is start-up and writing


def write_record(out: Path, world_size: int, started_at: str, result: dict, settings: dict) -> None:
    """A probe stage file (GPU or CPU): what was found (`result`: the searched fields), the config
    keys, provenance."""
    ProbeRecord(stage="probe", world_size=world_size, started_at=started_at, **result, config=settings,
                **provenance.stamp(config_hash(settings)), finished_at=provenance.utc_now()).write(out)


def write_not_applicable(outs: list[Path], world_sizes: list[int], settings: dict, started_at: str | None = None) -> None:
    """One record per world size, `settings` being the probe stage's config keys."""
    started_at = started_at or provenance.utc_now()
    for out, size in zip(outs, world_sizes, strict=True):
        write_record(out, size, started_at, NOT_APPLICABLE, settings)


def main_from_workflow(outs, world_sizes, settings_json: str, log: Path) -> None:
    write_not_applicable(list(outs), list(world_sizes), json.loads(settings_json))
    line = f"no GPU, so no memory limit to find: 'not applicable' for world sizes {list(world_sizes)}"
    Path(log).write_text(line + "\n")
    # the console line every job has (a job's own is written by tier1.runtime.console, not run here)
    print(f"[tier1] probe: {line}", file=sys.stderr, flush=True)
