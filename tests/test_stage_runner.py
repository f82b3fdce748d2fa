"""cli.stage, the runner every stage's main() goes through: its config view, ranks set up only
when the stage asks for them, and on the way out a failed rank ending its local peers and the
process group torn down."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import time

import pytest

from tier1.config import PrepareConfig
from tier1.runtime import cli, distributed


class FakeContext:
    def __init__(self, ranks: int):
        self.rank, self.distributed = 0, ranks > 1


@pytest.fixture
def calls(monkeypatch):
    seen = []
    monkeypatch.setattr(distributed, "setup", lambda: seen.append("setup") or FakeContext(2))
    monkeypatch.setattr(distributed, "teardown", lambda: seen.append("teardown"))
    monkeypatch.setattr(distributed, "end_local_peers", lambda announce: announce("killing rank 1") or seen.append("end peers"))
    return seen


def test_the_stage_gets_its_config_view_and_no_ranks_unless_it_asks(calls):
    parser = cli.parser("prepare: test")
    args = parser.parse_args(["--config", json.dumps({"dataset": "stdlib", "train_samples": 10, "test_samples": 5,
                                                     "seed": 1})])
    with cli.stage(args, "prepare", transformers=False) as run:
        assert isinstance(run.cfg, PrepareConfig) and run.cfg.train_samples == 10
    assert calls == []  # never asked for ctx: no process group, nothing to tear down


def test_ranks_are_set_up_once_and_torn_down(calls):
    with cli.stage(argparse.Namespace()) as run:
        assert run.cfg is None
        assert run.ctx is run.ctx
    assert calls == ["setup", "teardown"]


def test_a_failed_rank_says_why_then_ends_its_peers_then_tears_down(calls, caplog):
    """The cause is logged before the peers are killed: two ranks failing at once kill each other,
    and the one that speaks first must already have said why (else the log holds only SIGKILLs)."""
    said = logging.Handler()
    said.emit = lambda record: calls.append(record.getMessage())
    logging.getLogger("tier1.stages").addHandler(said)
    try:
        with caplog.at_level(logging.ERROR), pytest.raises(ValueError), cli.stage(argparse.Namespace()) as run:
            assert run.ctx.distributed
            raise ValueError("bad batch\nmore")
    finally:
        logging.getLogger("tier1.stages").removeHandler(said)
    assert calls == ["setup", "rank 0 failed (ValueError: bad batch)",
                     "rank 0 ends the job's other ranks on this machine: killing rank 1", "end peers", "teardown"]


def test_an_exit_is_not_a_failure(calls):
    with pytest.raises(SystemExit), cli.stage(argparse.Namespace()) as run:
        assert run.ctx.distributed
        raise SystemExit(3)
    assert calls == ["setup", "teardown"]


def test_ending_the_peers_says_which_it_ended_which_were_gone_and_which_were_stopped(monkeypatch):
    """The failure screen tells the SIGKILLs a failed rank sent from an outside one (the kernel's
    out-of-memory killer) by this line, said before the kills: a peer already dead (a zombie its
    torchrun has not reaped yet) is not one it ends."""
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]
    running, stopped, dead = (subprocess.Popen(sleeper) for _ in range(3))
    try:
        stopped.send_signal(signal.SIGSTOP)
        dead.kill()
        while open(f"/proc/{dead.pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z":
            time.sleep(0.01)  # a zombie until waited for, as a rank is until torchrun reaps it
        monkeypatch.setattr(distributed, "_local_peers", {1: running.pid, 2: stopped.pid, 3: dead.pid})
        said = []
        # said before the kills: both still alive when the line is written
        distributed.end_local_peers(lambda line: said.append((line, running.poll(), stopped.poll())))
        assert said == [("killing ranks 1, 2; rank 3 was gone already; rank 2 was stopped", None, None)]
        assert running.wait(timeout=10) == -signal.SIGKILL and stopped.wait(timeout=10) == -signal.SIGKILL
    finally:
        for proc in (running, stopped, dead):
            proc.kill()
            proc.wait()
