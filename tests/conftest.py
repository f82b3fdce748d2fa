"""Shared fixtures: a tiny randomly initialised BERT with the real tokenizer, and real text."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Timed jobs of the tests' runs hold a machine lock of their own, apart from any real run on this
# machine (tier1.runtime.machine_lock); a test of the lock itself points both runs at one folder.
os.environ.setdefault("TIER1_LOCK_DIR", tempfile.mkdtemp(prefix="tier1-test-locks-"))
sys.path.insert(0, str(Path(__file__).parent))

import helpers  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """GPU tests run where a CUDA device is visible and are skipped, saying why, elsewhere."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    return helpers.make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def pairs() -> list[dict]:
    return helpers.real_pairs(200)
