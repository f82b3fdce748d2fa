"""One measurement in a process of its own: one side trains, then encodes.

    python -m tier1.bench.side --side tier1|sentence-transformers --workload W.json --out R.json \
        [--embeddings E.pt]
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import torch

from tier1.bench.workload import Workload, bench_device
from tier1.measure import disturbance
from tier1.runtime import atomic
from tier1.runtime.cli import quiet_transformers, run_main, setup_logging
from tier1.runtime.provenance import available_cores

SIDES = {"tier1": "tier1.bench.tier1_side", "sentence-transformers": "tier1.bench.st_side"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=sorted(SIDES), required=True)
    parser.add_argument("--workload", type=Path, required=True, help="JSON of tier1.bench.workload.Workload")
    parser.add_argument("--out", type=Path, required=True, help="this measurement's JSON")
    parser.add_argument("--embeddings", type=Path, default=None, help="save the embeddings here (torch)")
    args = parser.parse_args(argv)
    setup_logging()
    quiet_transformers()
    w = Workload.from_json(args.workload.read_text())
    side = importlib.import_module(SIDES[args.side])
    device = bench_device()
    result = {"side": args.side}
    with disturbance.Watch(device) as train_watch:
        result["train"] = side.train(w)
    with disturbance.Watch(device) as encode_watch:
        result["encode"], emb = side.encode(w)
    for task, watch in (("train", train_watch), ("encode", encode_watch)):
        result[task]["disturbance"], result[task]["marks"] = disturbance.judge([watch.record], available_cores())
    if args.embeddings is not None:
        args.embeddings.parent.mkdir(parents=True, exist_ok=True)
        torch.save(emb, args.embeddings)
    atomic.write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    run_main(main)
