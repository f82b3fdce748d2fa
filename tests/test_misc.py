"""The max-batch search, the pinned environments, atomic writes and the CLI's error handling."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tier1.atomic import atomic_path, write_text
from tier1.batch_search import largest_fitting

from helpers import REPO


@pytest.mark.parametrize("limit", [1, 2, 3, 37, 64, 100, 1000, 4097])
def test_largest_fitting_finds_non_powers_of_two(limit):
    tried = []

    def fits(n):
        tried.append(n)
        return n <= limit

    assert largest_fitting(fits, limit=1 << 16) == limit
    assert len(tried) <= 2 * limit.bit_length() + 2


def test_largest_fitting_when_nothing_fits():
    assert largest_fitting(lambda n: False) == 0


def test_largest_fitting_stops_at_the_limit():
    assert largest_fitting(lambda n: True, limit=50) == 50


def test_failed_block_leaves_no_file(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    write_text(target, "whole")
    assert target.read_text() == "whole"


def test_leftover_temporaries_of_a_target_go_with_its_next_write(tmp_path):
    target = tmp_path / "out.json"
    ours = [tmp_path / ".tier1-tmp.0123abcd.out.json", tmp_path / ".out.json.k2j_9x0q"]  # now / earlier versions
    for folder in ours:
        folder.mkdir()
        (folder / "out.json").write_text("half, killed mid-write")
    others = [tmp_path / ".tier1-tmp.0123abcd.other.json", tmp_path / ".out.json.notes123"]
    for folder in others:
        folder.mkdir()
    (others[1] / "notes.txt").write_text("not a temporary: holds something else")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert sorted(tmp_path.iterdir()) == sorted(others)  # the failed write left nothing and cleaned up
    write_text(target, "whole")
    assert target.read_text() == "whole" and sorted(tmp_path.iterdir()) == sorted([*others, target])


def test_written_file_and_its_rename_are_flushed_to_disk(tmp_path, monkeypatch):
    import os

    from tier1 import atomic

    events = []
    fsync, replace = os.fsync, os.replace
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))) or fsync(fd))
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: events.append(("replace", str(b))) or replace(a, b))
    write_text(tmp_path / "out.txt", "data")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert events[0][1].endswith("/out.txt") and events[0][1] != str(tmp_path.resolve() / "out.txt")  # the temporary
    assert events[2][1] == str(tmp_path.resolve())  # the folder, which makes the rename durable


def pins(text: str) -> dict[str, str]:
    found = re.findall(r"^\s*(?:-\s+)?([A-Za-z0-9_.\-]+)==([^\s#]+)", text, flags=re.M)
    return {name.lower().replace("_", "-"): version for name, version in found}


def test_conda_env_and_pip_pins_agree():
    pip = pins((REPO / "envs" / "requirements.txt").read_text())
    conda = pins((REPO / "envs" / "tier1.yaml").read_text())
    assert pip == conda
    assert pip["torch"] == "2.13.0"


def test_cpu_probe_says_not_applicable(tmp_path):
    import json

    out = tmp_path / "probe.json"
    cfg = '{"model": "x", "max_seq_length": 32, "precision": "auto", "gradient_checkpointing": false, "loss_scale": 20.0}'
    subprocess.run([sys.executable, "-m", "tier1.probe", "--config", cfg, "--world-size", "2", "--out", str(out)],
                   check=True, capture_output=True)
    got = json.loads(out.read_text())
    assert got["max_train_batch_per_device"] is None and "no GPU" in got["not_applicable"]
    assert got["world_size"] == 2


def test_config_error_is_one_clear_line(tmp_path):
    bad = tmp_path / "missing.jsonl"
    proc = subprocess.run([sys.executable, "-m", "tier1.prepare", "--config",
                           f'{{"dataset": "{bad}", "train_samples": 1, "test_samples": 1, "seed": 0}}',
                           *[a for name in ("train", "corpus", "queries", "qrels", "manifest")
                             for a in (f"--{name}", str(tmp_path / name))]], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "configuration error: dataset:" in proc.stderr and "Traceback" not in proc.stderr
