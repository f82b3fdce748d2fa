"""cli.stage, the runner every stage's main() goes through: its config view, ranks set up only
when the stage asks for them, and on the way out a failed rank ending its local peers and the
process group torn down."""

from __future__ import annotations

import argparse
import json
import logging

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
    monkeypatch.setattr(distributed, "end_local_peers", lambda: seen.append("end peers") or "2 ended")
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


def test_a_failed_rank_ends_its_peers_then_tears_down(calls, caplog):
    with caplog.at_level(logging.ERROR), pytest.raises(ValueError), cli.stage(argparse.Namespace()) as run:
        assert run.ctx.distributed
        raise ValueError("bad batch\nmore")
    assert calls == ["setup", "end peers", "teardown"]
    assert "rank 0 failed (ValueError: bad batch); ending the job's ranks on this machine: 2 ended" in caplog.text


def test_an_exit_is_not_a_failure(calls):
    with pytest.raises(SystemExit), cli.stage(argparse.Namespace()) as run:
        assert run.ctx.distributed
        raise SystemExit(3)
    assert calls == ["setup", "teardown"]
