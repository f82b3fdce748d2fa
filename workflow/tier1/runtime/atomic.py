"""Writes that either complete or leave nothing behind, so a crash never leaves a file that
Snakemake (or a person) would take as a finished result.

A write goes to a temporary folder beside its target, named `.tier1-tmp.<8 hex>.<target name>`;
the result is fsynced, renamed into place, and the rename is fsynced too, so a write that returned
survives a power cut. A kill mid-write leaves only such a temporary, which the next write of the
same target (or `remove_temporaries` on the folder) deletes. That assumes one writer per target
at a time, which holds here: Snakemake gives each output one job, and only rank 0 writes.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger("tier1.runtime.atomic")

TMP_PREFIX = ".tier1-tmp."
_TEMPORARY = re.compile(r"\.tier1-tmp\.[0-9a-f]{8}\.(?P<name>.+)")
# Earlier versions used mkdtemp's `.<name>.<8 chars>`; such a folder holding at most the target
# is one of their leftovers (a killed checkpoint save left up to a whole checkpoint there).
_OLD_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it into place only if the block succeeds.

    Works for files and directories alike: whatever the block creates at the temporary path
    is fsynced and replaces `path` in one rename.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_temporaries(path.parent, path.name)
    folder = _new_temporary(path)
    tmp = folder / path.name
    try:
        yield tmp
        _fsync_tree(tmp)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def remove_temporaries(folder: str | Path, name: str | None = None) -> list[Path]:
    """Delete the temporaries that interrupted writes left in `folder` (only those of the target
    `name` when given); returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        target = _temporary_of(entry)
        if target is not None and (name is None or target == name):
            shutil.rmtree(entry, ignore_errors=True)
            if not entry.exists():
                log.info("removed %s, left by an interrupted write", entry)
                removed.append(entry)
    return removed


def _temporary_of(entry: Path) -> str | None:
    """The name of the target that `entry` is a temporary of, or None if it is none."""
    if not entry.is_dir() or entry.is_symlink():
        return None
    if match := _TEMPORARY.fullmatch(entry.name):
        return match["name"]
    match = _OLD_TEMPORARY.fullmatch(entry.name)
    if match and {p.name for p in entry.iterdir()} <= {match["name"]}:
        return match["name"]
    return None


def _new_temporary(path: Path) -> Path:
    while True:
        folder = path.parent / f"{TMP_PREFIX}{secrets.token_hex(4)}.{path.name}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            continue


def _fsync_tree(path: Path) -> None:
    """Flush a written file, or every file and folder of a written tree, to disk."""
    if not path.is_dir():
        _fsync(path)
        return
    for root, _, files in os.walk(path):
        for name in files:
            _fsync(Path(root) / name)
        _fsync_dir(Path(root))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries (a rename is only durable once its folder is)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in (errno.EINVAL, errno.ENOTSUP):  # some filesystems cannot sync a folder
            raise
    finally:
        os.close(fd)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text())
