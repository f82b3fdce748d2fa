"""The pinned environments, atomic writes and the CLI's error handling."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tier1.runtime.atomic import atomic_path, write_text

from helpers import REPO


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

    from tier1.runtime import atomic

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


def test_config_error_is_one_clear_line(tmp_path):
    bad = tmp_path / "missing.jsonl"
    proc = subprocess.run([sys.executable, "-m", "tier1.stages.prepare", "--config",
                           f'{{"dataset": "{bad}", "train_samples": 1, "test_samples": 1, "seed": 0}}',
                           *[a for name in ("train", "corpus", "queries", "qrels", "manifest")
                             for a in (f"--{name}", str(tmp_path / name))]], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "configuration error: dataset:" in proc.stderr and "Traceback" not in proc.stderr


EXITING_STAGE = """
import logging, sys
from tier1.runtime.cli import run_main, setup_logging

def main():
    setup_logging()
    sys.stdout.write("buffered, no newline")
    logging.getLogger("tier1.x").info("logged last")
    if sys.argv[1] == "fail":
        raise RuntimeError("it broke")

run_main(main)
"""


@pytest.mark.parametrize("outcome", ["ok", "fail"])
def test_a_stage_that_skips_the_interpreter_teardown_loses_no_output(tmp_path, outcome):
    # stdout to a file is block-buffered: only an explicit flush gets it out before os._exit
    out, err = tmp_path / "out", tmp_path / "err"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with out.open("w") as o, err.open("w") as e:
        rc = subprocess.run([sys.executable, "-c", EXITING_STAGE, outcome], stdout=o, stderr=e, env=env).returncode
    assert out.read_text() == "buffered, no newline"
    assert "INFO tier1.x: logged last" in err.read_text()
    assert rc == (0 if outcome == "ok" else 1)
    assert ("RuntimeError: it broke" in err.read_text()) == (outcome == "fail")


def test_a_record_made_inside_a_slurm_job_names_its_allocation(monkeypatch):
    from tier1.runtime import provenance

    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)
    assert "slurm_allocation" not in provenance.hardware()
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node1")
    given = provenance.hardware()["slurm_allocation"]
    assert given["SLURM_JOB_ID"] == "42" and given["SLURM_CPUS_PER_TASK"] == "2" and given["SLURM_JOB_NODELIST"] == "node1"
