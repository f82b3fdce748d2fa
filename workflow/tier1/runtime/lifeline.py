"""Processes that end with the one that started them, so no rank outlives its launcher, and no job
outlives the Snakemake (or terminal command) that started it, whatever wraps the job.

Linux's parent-death signal: the kernel sends the signal when the parent exits, however it exits
(SIGKILL included). It survives exec, so setting it just before exec covers the program exec'd.
Elsewhere this does nothing.

The parent-death signal sees only the direct parent. A job runs as `bash -c '...'`, often through
wrappers (the console story `python -m tier1.runtime.console`, `env`, `timeout`), and those outlive a
killed Snakemake. So the job also watches its lifeline: the pids it lives by, handed down in
TIER1_LIFELINE by each wrapper that knows it is one (tier1.runtime.console adds itself and its owner), plus
its own owner, the nearest ancestor that is neither a shell nor a wrapper. A watchdog ends the job
when any of them is gone.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from collections.abc import Callable

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
# Programs that only wrap a command and outlive it when their own parent dies (by process name)
WRAPPERS = SHELLS | {"env", "nice", "nohup", "timeout", "stdbuf", "setsid", "time", "taskset", "numactl",
                     "chrt", "ionice"}
LIFELINE_ENV = "TIER1_LIFELINE"
CONSOLE_MODULE = "tier1.runtime.console"


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


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace").split("\0")
    except OSError:
        return []


def is_console(pid: int) -> bool:
    """tier1's console story (`python -m tier1.runtime.console ...`)."""
    cmd = _cmdline(pid)
    return "-m" in cmd and CONSOLE_MODULE in cmd


def is_wrapper(pid: int) -> bool:
    """A shell, a command wrapper (`env`, `timeout`, ...) or tier1's console story."""
    return _name_of(pid) in WRAPPERS or is_console(pid)


def owner(pid: int) -> int | None:
    """The nearest ancestor that is neither a shell nor a wrapper: what started the job (Snakemake,
    a terminal's command), past the `bash -c` a job runs in and the wrappers, which would outlive it."""
    parent = _parent_of(pid)
    while parent and parent > 1 and is_wrapper(parent):
        parent = _parent_of(parent)
    return parent if parent and parent > 1 else None


def inherited(env: dict[str, str] | None = None) -> list[int]:
    """The lifeline handed down by the wrappers above this process (TIER1_LIFELINE)."""
    text = (os.environ if env is None else env).get(LIFELINE_ENV, "")
    return [int(p) for p in text.split(",") if p.strip().isdigit()]


def lifeline(pid: int) -> list[int]:
    """Every process `pid` lives by: the inherited lifeline and its own owner."""
    boss = owner(pid)
    return list(dict.fromkeys([*inherited(), *([boss] if boss else [])]))


def gone(pids: list[int]) -> int | None:
    """The first of `pids` no longer running, if any."""
    return next((p for p in pids if not _alive(p)), None)


def wait_for_loss(pids: list[int], running: Callable[[], bool], interval: float) -> int | None:
    """Poll `pids` every `interval` s while `running()`: the first found gone, or None once the
    watched job has ended. The console's thread and the launcher's watchdog both watch this way."""
    while running():
        dead = gone(pids)
        if dead is not None:
            return dead
        time.sleep(interval)
    return None


def watch_owner(job: int, sig: int = signal.SIGTERM, interval: float = 1.0) -> None:
    """Fork a watchdog that sends `sig` to `job` once any process of the job's lifeline is gone
    (checked every `interval` s), and exits when the job does. For what the parent-death signal
    cannot see: the job's direct parent is a shell or a wrapper that survives a killed Snakemake."""
    pids = [p for p in lifeline(job) if p != os.getppid()]  # the parent: the parent-death signal's
    if not pids or not sys.platform.startswith("linux"):
        return
    if os.fork() != 0:
        return
    # the watchdog: a bare child that touches nothing of the job's state
    try:
        os.setsid()
        if wait_for_loss(pids, lambda: _alive(job), interval) is not None:
            try:
                os.kill(job, sig)
            except OSError:
                pass
    finally:
        os._exit(0)
