"""A rank's part of the distributed-evaluation tests."""

from __future__ import annotations

from pathlib import Path


def evaluate(rank: int, world_size: int, model_path: str, data: str, cfg: dict, out: str) -> None:
    from tier1 import distributed
    from tier1.evaluate import evaluate as run

    ctx = distributed.setup()
    run(model_path, Path(data), cfg, ctx, Path(out))
    distributed.teardown()
