"""One timed job at a time on the machine, across runs: Snakemake's `timed` resource keeps a run's
own timed jobs apart, but two runs (`make quick` beside `make run`, two users on one GPU box) would
time at the same moment.

A timed job holds an exclusive `fcntl.flock` on one lock file per device it times (each GPU the run
may use; on a CPU machine the one key `cpu`) in the system's temp folder (TIER1_LOCK_DIR elsewhere),
for its whole life, windows included. The kernel drops a flock when its holder dies however it dies,
so a lock left by a dead process is simply taken over. Beside each lock, a small JSON file says who
holds it (pid, run, job, since when), so that a job that waits can say whom it waits for.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

LOCK_DIR_ENV = "TIER1_LOCK_DIR"
POLL_S = 0.5


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or Path(tempfile.gettempdir()) / "tier1-timed")


def keys(devices: str) -> list[str]:
    """The lock keys of a comma-separated device list ("cpu", or GPU UUIDs), sorted so that every
    job takes them in one order and two jobs never hold one each while waiting for the other's."""
    names = {re.sub(r"[^A-Za-z0-9_.-]", "_", d.strip()) for d in devices.split(",") if d.strip()}
    return sorted(names) or ["cpu"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(key: str, folder: Path | None = None) -> dict:
    """Who last said they hold `key` ({} if nobody or unreadable)."""
    try:
        return json.loads(((folder or lock_dir()) / f"{key}.json").read_text())
    except (OSError, ValueError):
        return {}


def describe(who: dict) -> str:
    if not who:
        return "another process"
    since = time.strftime("%H:%M:%S", time.localtime(who.get("since", 0)))
    return f"run '{who.get('run', '?')}', job '{who.get('job', '?')}' (pid {who.get('pid', '?')}, since {since})"


class TimedWindow:
    """Holds the machine's lock for `devices` while open; `say` tells the console about any wait."""

    def __init__(self, devices: str, run: str, job: str, say: Callable[[str], None] = print,
                 give_up: Callable[[], str | None] = lambda: None):
        """`give_up` is asked while waiting: a reason (e.g. the run was killed) ends the wait with it."""
        self.keys, self.run, self.job, self.say, self.give_up = keys(devices), run, job, say, give_up
        self.folder = lock_dir()
        self.files: list = []
        self.waited_s = 0.0

    def __enter__(self) -> TimedWindow:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            try:  # shared by every user of the machine, like the temp folder itself
                os.chmod(self.folder, 0o1777)
            except OSError:
                pass
        except OSError as err:
            self.say(f"cannot take the machine's timed-window lock ({err}); another run's timed jobs may overlap this one")
            return self
        for key in self.keys:
            self._take(key)
        return self

    def _take(self, key: str) -> None:
        path = self.folder / f"{key}.lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            self.say(f"cannot open the lock {path} ({err}); another run's timed jobs may overlap this one")
            return
        t0, told = time.monotonic(), None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pass
            who = holder(key, self.folder)
            if who != told:  # once, and again whenever the holder changes
                self.say(f"waiting for the machine ({key}): {describe(who)} holds its timed window; "
                         f"this job starts when that one ends")
                told = who
            reason = self.give_up()
            if reason:
                os.close(fd)
                self.__exit__()
                raise SystemExit(f"stopped waiting for the machine: {reason}")
            time.sleep(POLL_S)
        self.waited_s += time.monotonic() - t0
        stale = holder(key, self.folder)
        if stale and stale.get("pid") != os.getpid() and not _alive(int(stale.get("pid", 0) or 0)):
            self.say(f"took over the machine's lock ({key}) left by {describe(stale)}, which is gone")
        if told is not None:
            self.say(f"the machine is free ({key}) after {self.waited_s:.0f} s of waiting")
        me = {"pid": os.getpid(), "run": self.run, "job": self.job, "since": time.time(), "host": os.uname().nodename}
        tmp = self.folder / f"{key}.json.{os.getpid()}"
        try:
            tmp.write_text(json.dumps(me))
            os.replace(tmp, self.folder / f"{key}.json")
        except OSError:
            pass  # the lock holds without its note; a waiter then says "another process"
        self.files.append((key, fd))

    def __exit__(self, *exc) -> None:
        for key, fd in reversed(self.files):
            if holder(key, self.folder).get("pid") == os.getpid():
                try:
                    (self.folder / f"{key}.json").unlink()
                except OSError:
                    pass
            os.close(fd)  # releases the flock
        self.files.clear()
