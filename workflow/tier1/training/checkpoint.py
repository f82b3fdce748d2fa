"""Training checkpoints: written atomically, used only by a run with the same fingerprint."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from tier1.atomic import atomic_path

log = logging.getLogger("tier1.checkpoint")


def save(folder: Path, state: dict, fingerprint: str) -> Path:
    path = folder / "last.pt"
    with atomic_path(path) as tmp:
        torch.save({**state, "fingerprint": fingerprint}, tmp)
    return path


def load(folder: Path, fingerprint: str, device: torch.device) -> dict | None:
    """The latest checkpoint if it was written by the same configuration, else None."""
    path = folder / "last.pt"
    if not path.exists():
        return None
    state = torch.load(path, map_location=device, weights_only=False)
    if state.get("fingerprint") != fingerprint:
        log.warning("ignoring %s: written by a different configuration", path)
        return None
    return state


def clear(folder: Path) -> None:
    (folder / "last.pt").unlink(missing_ok=True)
