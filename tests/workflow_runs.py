"""Snakemake runs of the tiny config in a folder of their own, started and watched as a user would
(imported by the fault and machine-lock tests)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import psutil

from helpers import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
TINY = ".test/config/config.yaml"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}


def workdir(root: Path, tiny_model: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name in ("Snakefile", "workflow", "config", "profiles", "envs", ".test"):
        (root / name).symlink_to(REPO / name)
    (root / "tiny-model").symlink_to(tiny_model)
    return root


def copy(prepared: Path, to: Path) -> Path:
    """A copy of a prepared folder (its results and Snakemake's records), links kept as links."""
    shutil.copytree(prepared, to, symlinks=True)
    return to


def snakemake(folder: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([*SNAKEMAKE, *args], cwd=folder, capture_output=True, text=True, env=env or ENV)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def start(folder: Path, *args: str, screen: str = "screen.txt", env: dict | None = None) -> subprocess.Popen:
    """Snakemake in the background, in a session of its own (as a terminal or CI job starts it), its
    whole screen (stdout and stderr) to `folder/screen`."""
    return subprocess.Popen([*SNAKEMAKE, *args], cwd=folder, env=env or ENV, stdout=open(folder / screen, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def processes_in(folder: Path) -> list[psutil.Process]:
    """Every process (but this one) working in `folder`: Snakemake, its job shells, the console
    wrappers, launchers and ranks all run there."""
    found, me = [], os.getpid()
    for p in psutil.process_iter(["pid"]):
        try:
            if p.pid != me and Path(p.cwd()) == folder and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except (psutil.Error, OSError):
            pass
    return found


def wait_for(path: Path, proc: subprocess.Popen, folder: Path, limit_s: float = 240) -> None:
    deadline = time.monotonic() + limit_s
    while not path.exists():
        assert proc.poll() is None, (folder / "screen.txt").read_text()[-4000:]
        assert time.monotonic() < deadline, f"no {path} within {limit_s} s"
        time.sleep(0.2)


def seconds_until_gone(folder: Path, t0: float, limit_s: float) -> float:
    """Seconds from t0 until no process works in `folder` (killing the rest after limit_s + 30)."""
    while processes_in(folder):
        if time.monotonic() - t0 > limit_s + 30:
            for p in processes_in(folder):
                p.kill()
            break
        time.sleep(0.2)
    return time.monotonic() - t0


def ranks(folder: Path) -> list[psutil.Process]:
    """The training ranks (torchrun's workers) working in `folder`."""
    return [p for p in processes_in(folder) if "tier1.stages.train" in p.cmdline() and "tier1.runtime.launch" not in p.cmdline()]
