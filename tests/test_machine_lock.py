"""The machine's timed-window lock (tier1.runtime.machine_lock): a second holder waits and says for whom, and
a lock whose holder died is taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tier1.runtime.machine_lock import TimedWindow, holder, keys

HOLD = ("import sys, time; from tier1.runtime.machine_lock import TimedWindow\n"
        "with TimedWindow('cpu', 'quick', 'train, 2 rank(s)'):\n"
        "    print('holding', flush=True); time.sleep(float(sys.argv[1]))\n")


def holding(seconds: float, env) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(seconds)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "holding"
    return proc


def test_keys_are_sorted_device_names_and_cpu_by_default():
    assert keys("GPU-b,GPU-a") == ["GPU-a", "GPU-b"] and keys("") == ["cpu"] and keys("gpu/0") == ["gpu_0"]


def test_a_second_holder_waits_and_says_for_whom(tmp_path, monkeypatch):
    monkeypatch.setenv("TIER1_LOCK_DIR", str(tmp_path))
    other = holding(3.0, {**os.environ})
    lines: list[str] = []
    t0 = time.monotonic()
    with TimedWindow("cpu", "default", "evaluate", say=lines.append):
        waited = time.monotonic() - t0
        assert holder("cpu", tmp_path)["pid"] == os.getpid()
    assert other.wait() == 0
    assert waited > 1.0, lines  # it did wait for the other holder
    assert any(f"run 'quick', job 'train, 2 rank(s)' (pid {other.pid}" in line for line in lines), lines
    assert any("the machine is free" in line for line in lines), lines
    assert holder("cpu", tmp_path) == {}  # the note goes with the lock


def test_a_lock_whose_holder_died_is_taken_over(tmp_path, monkeypatch):
    monkeypatch.setenv("TIER1_LOCK_DIR", str(tmp_path))
    dead = holding(600.0, {**os.environ})
    dead.send_signal(signal.SIGKILL)
    dead.wait()
    lines: list[str] = []
    t0 = time.monotonic()
    with TimedWindow("cpu", "default", "evaluate", say=lines.append):
        assert time.monotonic() - t0 < 5.0
    assert any(f"left by run 'quick', job 'train, 2 rank(s)' (pid {dead.pid}" in line and "which is gone" in line
               for line in lines), lines


def test_waiting_ends_when_the_run_is_gone(tmp_path, monkeypatch):
    monkeypatch.setenv("TIER1_LOCK_DIR", str(tmp_path))
    other = holding(600.0, {**os.environ})
    try:
        asked = []

        def give_up():
            asked.append(1)
            return "Snakemake (pid 1) is gone" if len(asked) > 2 else None

        with pytest.raises(SystemExit, match="stopped waiting for the machine: Snakemake"):
            with TimedWindow("cpu", "default", "evaluate", say=lambda _: None, give_up=give_up):
                pass
    finally:
        other.kill()
        other.wait()
