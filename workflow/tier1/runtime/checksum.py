"""The checksum tier1's safetensors files carry, computed without torch: Snakemake checks the
intermediates with it while it plans the run (a torch import there would cost every invocation
seconds), so a damaged file is remade before any job reads it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

# The token cache's format (tier1.encoder.token_cache writes it): name, version, metadata texts summed.
TOKEN_CACHE_FORMAT, TOKEN_CACHE_VERSION, TOKEN_CACHE_TEXTS = "tier1-token-cache", "2", ("kinds", "scalars")


def digest(arrays: dict[str, np.ndarray], *texts: str) -> str:
    """sha256 over `texts`, then every array's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode() + b"\0")
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(json.dumps([name, a.dtype.name, list(a.shape)]).encode())
        h.update(a.reshape(-1).view(np.uint8).tobytes())
    return h.hexdigest()


def problem(path: Path, fmt: str, version: str, text_keys: tuple[str, ...]) -> str | None:
    """Why the safetensors file at `path` is not a sound file of format `fmt` (None if it is)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            arrays = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        return f"not a readable safetensors file ({err})"
    if meta.get("format") != fmt or meta.get("version") != version:
        return f"written in another format ({meta.get('format')} version {meta.get('version')})"
    if meta.get("sha256") != digest(arrays, *(meta.get(k, "") for k in text_keys)):
        return "its checksum does not match: the file is damaged"
    return None


def token_cache_problem(path: Path) -> str | None:
    """Why the file at `path` cannot serve as the token cache (None if it can)."""
    return problem(path, TOKEN_CACHE_FORMAT, TOKEN_CACHE_VERSION, TOKEN_CACHE_TEXTS)
