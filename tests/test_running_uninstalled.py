"""tier1 runs from PYTHONPATH alone, not installed (as on the GPU machine, where only the source
tree travels): every record names its version from the source tree, never from package metadata."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import torch

import tier1
from tier1.encoder import bert, model
from tier1.runtime import provenance

from helpers import REPO


def not_installed(monkeypatch):
    real = importlib.metadata.version

    def version(name):
        if name == "tier1":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(provenance.metadata, "version", version)


def test_records_name_the_source_trees_version_when_tier1_is_not_installed(monkeypatch, tiny_model):
    not_installed(monkeypatch)
    assert provenance.library_versions()["tier1"] == tier1.__version__
    encoder, _ = model.load(str(tiny_model))
    assert isinstance(encoder.transformer, bert.Bert)
    assert model.identity(encoder, torch.device("cpu"))["version"] == tier1.__version__


def test_the_installed_version_is_the_source_trees():
    """pyproject.toml reads the version from tier1/__init__.py: the two cannot drift apart."""
    assert importlib.metadata.version("tier1") == tier1.__version__
    assert 'attr = "tier1.__version__"' in (REPO / "pyproject.toml").read_text()


def test_the_gpu_tests_collect_without_snakemake():
    """The GPU machine has no Snakemake: `pytest -m gpu` must collect every test module there (a
    collection error would read as a failed check even when every GPU test passed)."""
    blocker = ("import sys; sys.modules['snakemake'] = None; import pytest; "
               "sys.exit(pytest.main(['-q', '--collect-only', '-m', 'gpu', '-p', 'no:cacheprovider', 'tests']))")
    proc = subprocess.run([sys.executable, "-c", blocker], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "error" not in proc.stdout.splitlines()[-1].lower(), proc.stdout[-3000:]
