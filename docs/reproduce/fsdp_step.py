"""DDP's and FSDP2's steady training step side by side, in the same processes, on the default model.

Run on 2 ranks (CPU, gloo):
    CUDA_VISIBLE_DEVICES= PYTHONPATH=workflow .venv/bin/python -m torch.distributed.run \
        --nproc-per-node 2 docs/reproduce/fsdp_step.py [--rounds 6] [--steps 3]

Each variant holds its own copy of the model; rounds alternate the variants (a few steps each), so
load on the machine falls on all of them alike and the ratio of medians is what counts. Batches are
the default config's shape at 2 ranks: 16 pairs of 64 tokens per rank, AdamW. Variants:
- ddp: tier1's DDP wrap;
- fsdp: tier1's FSDP2 wrap and step (tier1.training.parallel: every layer gathered once a step and
  kept to the step's last backward);
- fsdp-free: FSDP2 freeing each layer after every call (reshard_after_forward=True): a layer is
  gathered again for the positives' call and for each backward.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time

import torch
import torch.distributed as dist

from tier1.config import DEFAULT_MODEL, Tier1Config, TrainConfig
from tier1.encoder import model as models
from tier1.runtime import distributed
from tier1.training import parallel
from tier1.training.builder import make_optimizer
from tier1.training.comm_hook import AllreduceSpan
from tier1.training.step import PairEncoder, forward_backward


def build(variant: str, ctx, cfg: TrainConfig):
    torch.manual_seed(0)
    encoder, tokenizer = models.load(DEFAULT_MODEL)
    encoder.train()
    vocab = next(encoder.parameters()).shape[0]  # the word embeddings' rows, before sharding
    pair = PairEncoder(encoder)
    if variant == "fsdp-free":
        from torch.distributed.fsdp import fully_shard

        for layer in parallel.layers_of(encoder.transformer):
            fully_shard(layer, reshard_after_forward=True)
        wrapped = fully_shard(pair, reshard_after_forward=True)
    else:
        wrapped = parallel.wrap(pair, ctx, AllreduceSpan(), variant, None)
    return encoder, wrapped, make_optimizer(cfg, encoder.parameters()), vocab


def batch(vocab: int, rows: int, width: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (rows, width), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--variants", default="ddp,fsdp,fsdp-free")
    args = ap.parse_args()
    ctx = distributed.setup()
    cfg = Tier1Config(gpu_counts=(1, ctx.world_size)).view(TrainConfig)
    variants = args.variants.split(",")
    built = {v: build(v, ctx, cfg) for v in variants}
    rows, width = cfg.per_device_batch(ctx.world_size), cfg.max_seq_length
    times: dict[str, list[float]] = {v: [] for v in variants}

    def step(v: str, i: int) -> float:
        encoder, wrapped, optimizer, vocab = built[v]
        a = batch(vocab, rows, width, 2 * i + ctx.rank * 100003)
        p = batch(vocab, rows, width, 2 * i + 1 + ctx.rank * 100003)
        dist.barrier()
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        # tier1's step keeps every layer gathered through its last backward; the freeing variant does not
        with parallel.gathered_for_step(wrapped) if v == "fsdp" else contextlib.nullcontext():
            forward_backward(wrapped, a, p, None, cfg.loss_scale, cfg.gather_embeddings)
        optimizer.step()
        return time.perf_counter() - start

    for v in variants:  # every variant's first steps (allocation, first shapes) before any timing
        step(v, 0)
        step(v, 1)
    for r in range(args.rounds):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            for i in range(args.steps):
                times[v].append(step(v, 10 + r * args.steps + i))
    # a step ends on every rank at the next step's barrier: rank 0's times are the step's
    if ctx.is_main:
        med = {v: statistics.median(times[v]) for v in variants}
        out = {"world_size": ctx.world_size, "model": DEFAULT_MODEL, "rows_per_rank": rows, "width": width,
               "steps_per_variant": len(times["ddp"]) if "ddp" in times else None,
               "median_step_s": med, "ratio_to_ddp": {v: med[v] / med["ddp"] for v in variants if "ddp" in med},
               "step_s": times}
        print(json.dumps(out, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
