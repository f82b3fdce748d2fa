"""A rank's part of the distributed-evaluation tests."""

from __future__ import annotations

from pathlib import Path


def evaluate(rank: int, world_size: int, model_path: str, data: str, cfg: dict, out: str) -> None:
    from tier1.config import EvalConfig
    from tier1.data.sources import read_beir
    from tier1.runtime import distributed
    from tier1.stages.evaluate import Outputs
    from tier1.stages.evaluate import evaluate as run

    ctx = distributed.setup()
    run(model_path, read_beir(Path(data)), EvalConfig(**cfg), ctx, Outputs.in_folder(Path(out)))
    distributed.teardown()
