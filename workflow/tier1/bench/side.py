"""One measurement in a process of its own: one side trains, then encodes.

    python -m tier1.bench.side --side tier1|sentence-transformers --workload W.json --out R.json \
        [--embeddings E.pt]
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import torch

from tier1.bench.workload import Workload, bench_device
from tier1.measure import clock, disturbance
from tier1.runtime import atomic, cli
from tier1.runtime.cli import run_main
from tier1.runtime.provenance import available_cores

SIDES = {"tier1": "tier1.bench.tier1_side", "sentence-transformers": "tier1.bench.st_side"}


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__, config=False)
    parser.add_argument("--side", choices=sorted(SIDES), required=True)
    parser.add_argument("--workload", type=Path, required=True, help="JSON of tier1.bench.workload.Workload")
    parser.add_argument("--out", type=Path, required=True, help="this measurement's JSON")
    parser.add_argument("--embeddings", type=Path, default=None, help="save the embeddings here (torch)")
    args = parser.parse_args(argv)
    with cli.stage(args):
        w = Workload.from_json(args.workload.read_text())
        side = importlib.import_module(SIDES[args.side])
        device = bench_device()
        result = {"side": args.side}
        # one process: the windows have no ranks to wait for; each side times its own span inside
        with clock.window(device) as train_window:
            result["train"] = side.train(w)
        with clock.window(device) as encode_window:
            result["encode"], emb = side.encode(w)
        for task, window in (("train", train_window), ("encode", encode_window)):
            result[task]["disturbance"], result[task]["marks"] = disturbance.judge([window.disturbance], available_cores())
        if args.embeddings is not None:
            args.embeddings.parent.mkdir(parents=True, exist_ok=True)
            torch.save(emb, args.embeddings)
        atomic.write_text(args.out, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    run_main(main)
