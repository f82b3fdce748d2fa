"""The probe's stage file, on GPUs and on a CPU. Without GPUs there is no device memory limit to
find, so each world size's file says "not applicable" rather than inventing a number. Torch-free,
so the workflow writes those files in its own process (the CPU probe rule), with no job to start."""

from __future__ import annotations

import json
from pathlib import Path

from tier1.config import config_hash
from tier1.runtime import atomic, provenance

NOT_APPLICABLE = {"max_train_batch_per_device": None, "max_train_batch_global": None,
                  "max_encode_batch_per_device": None, "not_applicable": "no GPU: there is no device memory limit to probe",
                  "work_s": 0.0}  # nothing searched: the whole job is start-up and writing


def write_record(out: Path, world_size: int, started_at: str, result: dict, settings: dict) -> None:
    """A probe stage file (GPU or CPU): what was found, the config keys, provenance."""
    atomic.write_json(Path(out), {"stage": "probe", "world_size": world_size, "started_at": started_at, **result,
                                  "config": settings, **provenance.stamp(config_hash(settings)),
                                  "finished_at": provenance.utc_now()})


def write_not_applicable(outs: list[Path], world_sizes: list[int], settings: dict, started_at: str | None = None) -> None:
    """One record per world size, `settings` being the probe stage's config keys."""
    started_at = started_at or provenance.utc_now()
    for out, size in zip(outs, world_sizes, strict=True):
        write_record(out, size, started_at, NOT_APPLICABLE, settings)


def main_from_workflow(outs, world_sizes, settings_json: str, log: Path) -> None:
    write_not_applicable(list(outs), list(world_sizes), json.loads(settings_json))
    Path(log).write_text(f"no GPU: probe records 'not applicable' for world sizes {list(world_sizes)}\n")
