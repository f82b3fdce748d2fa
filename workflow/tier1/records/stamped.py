"""The provenance block (tier1.runtime.provenance.stamp) as declared fields, for the records that
carry it: the stage's config hash, the run's name and resolved-config hash, the code revision,
the hardware and library versions, and when the file was written."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tier1.records.base import Record


@dataclass(frozen=True)
class Stamped(Record):
    config_hash: str
    run: str | None
    run_config_hash: str | None
    git_revision: str | None
    hardware: dict[str, Any]
    libraries: dict[str, Any]
    written_at: str
