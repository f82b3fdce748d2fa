"""The pinned environments, atomic writes and the CLI's error handling."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tier1.atomic import atomic_path, write_text

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
    proc = subprocess.run([sys.executable, "-m", "tier1.prepare", "--config",
                           f'{{"dataset": "{bad}", "train_samples": 1, "test_samples": 1, "seed": 0}}',
                           *[a for name in ("train", "corpus", "queries", "qrels", "manifest")
                             for a in (f"--{name}", str(tmp_path / name))]], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "configuration error: dataset:" in proc.stderr and "Traceback" not in proc.stderr
