"""Processes that end with the one that started them, so no rank outlives its launcher.

Linux's parent-death signal: the kernel sends the signal when the parent exits, however it exits
(SIGKILL included). It survives exec, so setting it just before exec covers the program exec'd.
Elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask for `sig` when the parent process exits; exits at once if it already has. True if set."""
    if not sys.platform.startswith("linux"):
        return False
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            return False
    except (OSError, AttributeError):
        return False
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)
    return True


SHELLS = {"sh", "bash", "dash", "zsh", "ksh"}


def _parent_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _name_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def owner(pid: int) -> int | None:
    """The nearest ancestor that is not a shell: what started the job (Snakemake, a terminal's
    command), past the `bash -c` a job runs in, which would outlive it."""
    parent = _parent_of(pid)
    while parent and parent > 1 and _name_of(parent) in SHELLS:
        parent = _parent_of(parent)
    return parent if parent and parent > 1 else None


def watch_owner(job: int, sig: int = signal.SIGTERM, interval: float = 1.0) -> None:
    """Fork a watchdog that sends `sig` to `job` once the job's owner is gone (checked every
    `interval` s), and exits when the job does. For the case the parent-death signal cannot see:
    the job's direct parent is a shell that survives a killed Snakemake."""
    boss = owner(job)
    if boss is None or boss == os.getppid() or not sys.platform.startswith("linux"):
        return
    if os.fork() != 0:
        return
    # the watchdog: a bare child that touches nothing of the job's state
    try:
        os.setsid()
        while _alive(job):
            if not _alive(boss):
                try:
                    os.kill(job, sig)
                except OSError:
                    pass
                break
            time.sleep(interval)
    finally:
        os._exit(0)
