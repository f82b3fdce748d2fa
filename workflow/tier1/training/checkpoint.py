"""Training checkpoints that cannot run code, used only by a run with the same fingerprint.

A checkpoint is two files in its folder:
- `last.json`: format and version, the fingerprint of the run that wrote it, the state's plain
  parts (step, repeat, walls, loss rows) and the name, size and sha256 of its tensor file. It is
  read first and written last: a checkpoint exists once it does.
- `tensors-<repeat>-<step>.pt`: the model, optimizer and LR-scheduler state dicts, read with
  `torch.load(weights_only=True)` (tensors and plain containers only, no code) and only after the
  fingerprint, size and checksum matched.
Each save gets a new tensor file, so a kill at any point leaves the previous pair intact.

A checkpoint of another configuration is ignored without reading its tensors. One that cannot be
used is renamed `*.corrupt` (kept for inspection) with a warning, and training starts over, so a
rerun always heals. Only rank 0 changes the folder; every rank reads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import torch

from tier1.runtime import distributed
from tier1.runtime.atomic import atomic_path, remove_temporaries, write_text

log = logging.getLogger("tier1.checkpoint")

FORMAT = "tier1-checkpoint"
FORMAT_VERSION = 1
SIDECAR = "last.json"
TENSOR_KEYS = ("model", "optimizer", "scheduler")
_TENSOR_FILE = re.compile(r"tensors-\d+-\d+\.pt")
_PICKLED = "last.pt"  # the single pickled file of earlier versions: never read


class Unusable(Exception):
    """A checkpoint file that is damaged, truncated, crafted or not in this format."""


def save(folder: Path, state: dict, fingerprint: str) -> Path:
    """Write `state` (the TENSOR_KEYS state dicts plus JSON-plain values) as the latest checkpoint."""
    plain = {k: v for k, v in state.items() if k not in TENSOR_KEYS}
    json.dumps(plain)  # a value that is not plain JSON fails here, before any file is written
    name = f"tensors-{int(state['repeat'])}-{int(state['step'])}.pt"
    folder.mkdir(parents=True, exist_ok=True)
    remove_temporaries(folder)
    with atomic_path(folder / name) as tmp, tmp.open("wb") as f:
        out = _HashingWriter(f)
        torch.save({k: state[k] for k in TENSOR_KEYS}, out)
    sidecar = {"format": FORMAT, "version": FORMAT_VERSION, "fingerprint": fingerprint,
               "tensors": {"file": name, "bytes": out.size, "sha256": out.sha256.hexdigest()}, "state": plain}
    write_text(folder / SIDECAR, json.dumps(sidecar) + "\n")
    for old in _tensor_files(folder):
        if old.name != name:
            old.unlink(missing_ok=True)
    return folder / SIDECAR


def load(folder: Path, fingerprint: str, device: torch.device) -> dict | None:
    """The latest checkpoint if it was written by the same configuration and is intact, else None."""
    main = distributed.rank() == 0
    if main:
        remove_temporaries(folder)
        _set_aside(folder / _PICKLED, "it is in the pickled format of earlier versions, which is never loaded")
    path = folder / SIDECAR
    if not path.exists():
        return None
    tensor_file = None
    try:
        meta = _read_sidecar(path)
        if meta["fingerprint"] != fingerprint:
            log.warning("ignoring %s: written by a different configuration", path)
            return None
        tensor_file = folder / meta["tensors"]["file"]
        tensors = _read_tensors(tensor_file, meta["tensors"], device)
    except Unusable as err:
        if main:
            _set_aside(path, str(err))
            if tensor_file is not None:
                _set_aside(tensor_file, "its checkpoint is unusable")
        return None
    return {**meta["state"], **tensors}


def clear(folder: Path) -> None:
    """Remove the checkpoint (the sidecar first, so no half is ever taken for one); keeps `*.corrupt`."""
    (folder / SIDECAR).unlink(missing_ok=True)
    for path in _tensor_files(folder):
        path.unlink(missing_ok=True)
    remove_temporaries(folder)


def _tensor_files(folder: Path) -> list[Path]:
    return [p for p in folder.glob("tensors-*.pt") if _TENSOR_FILE.fullmatch(p.name)]


def _read_sidecar(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # ValueError covers bad UTF-8 and bad JSON
        raise Unusable(f"not readable as JSON ({err})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise Unusable(f"not a {FORMAT} version {FORMAT_VERSION} sidecar")
    tensors, state = meta.get("tensors"), meta.get("state")
    valid = (isinstance(meta.get("fingerprint"), str)
             and isinstance(tensors, dict) and isinstance(tensors.get("file"), str)
             and _TENSOR_FILE.fullmatch(tensors["file"]) is not None  # a plain name inside the folder
             and _is_int(tensors.get("bytes")) and isinstance(tensors.get("sha256"), str)
             and isinstance(state, dict) and _is_int(state.get("step")) and _is_int(state.get("repeat"))
             and isinstance(state.get("walls"), list) and all(_is_number(w) for w in state["walls"])
             and isinstance(state.get("loss_rows"), list)
             and all(isinstance(r, dict) and all(_is_number(v) for v in r.values()) for r in state["loss_rows"]))
    if not valid:
        raise Unusable("its fields are missing or of the wrong type")
    return meta


def _read_tensors(path: Path, record: dict, device: torch.device) -> dict:
    """The state dicts in `path`, once its size and sha256 are those the sidecar recorded."""
    try:
        if path.stat().st_size != record["bytes"]:
            raise Unusable(f"{path.name} has {path.stat().st_size} bytes, not {record['bytes']}")
        with path.open("rb") as f:
            digest = _sha256(f)
    except OSError as err:
        raise Unusable(f"{path.name} cannot be read ({err})") from None
    if digest != record["sha256"]:
        raise Unusable(f"{path.name} does not match its checksum")
    try:
        tensors = torch.load(path, map_location=device, weights_only=True)
    except (MemoryError, torch.OutOfMemoryError):
        raise  # the file may be fine; the machine is not
    except Exception as err:  # torch reports refused or damaged archives with several types
        raise Unusable(f"{path.name} cannot be loaded as tensors only ({type(err).__name__}: {err})") from None
    if not isinstance(tensors, dict) or any(not isinstance(tensors.get(k), dict) for k in TENSOR_KEYS):
        raise Unusable(f"{path.name} does not hold the {', '.join(TENSOR_KEYS)} state dicts")
    return {k: tensors[k] for k in TENSOR_KEYS}


def _set_aside(path: Path, reason: str) -> None:
    """Rename an unusable checkpoint file to `*.corrupt`, so the next run starts clean."""
    target = path.with_name(path.name + ".corrupt")
    try:
        path.replace(target)
    except FileNotFoundError:
        return
    log.warning("checkpoint file %s is unusable (%s): moved aside to %s; training starts from scratch",
                path, reason, target)


def _sha256(f) -> str:
    h = hashlib.sha256()
    while chunk := f.read(1 << 20):
        h.update(chunk)
    return h.hexdigest()


def _is_int(value) -> bool:
    return type(value) is int and value >= 0


def _is_number(value) -> bool:
    return type(value) in (int, float)


class _HashingWriter:
    """A binary file that also counts and hashes what goes through it (no second read)."""

    def __init__(self, f) -> None:
        self.f, self.size, self.sha256 = f, 0, hashlib.sha256()

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += memoryview(data).nbytes
        return self.f.write(data)

    def flush(self) -> None:
        self.f.flush()
