"""Stage 4, probe: the largest training and encoding batch per device, found over out-of-memory.

    torchrun --standalone --nproc_per_node N -m tier1.probe --config '<json>' --out results/probe/gpusN.json

GPU only. On a CPU there is no device memory limit to find, so the file says "not applicable"
rather than inventing a number.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import os
import sys
from pathlib import Path

import torch

from tier1 import atomic, distributed, model, provenance
from tier1 import device as devices
from tier1.batch_search import largest_fitting
from tier1.cli import parse_stage_config, quiet_transformers, run_main, setup_logging
from tier1.config import ProbeConfig, config_hash
from tier1.distributed import Context
from tier1.training.step import PairEncoder, forward_backward

log = logging.getLogger("tier1.probe")
FILLER_TOKEN = 1037  # any ordinary vocabulary id: every position is computed on, none is padding


def _agreed_fit(trial, device) -> bool:
    """Run `trial`; True only if it fitted on every rank (one all-reduced flag per decision)."""
    try:
        trial()
        failed = 0.0
    except torch.OutOfMemoryError:
        failed = 1.0
    gc.collect()
    devices.free_cached(device)
    return distributed.all_reduce_max(failed, device) == 0.0


def probe(cfg: ProbeConfig, ctx: Context) -> dict:
    encoder, _ = model.load(cfg.model, cfg.gradient_checkpointing)
    encoder = encoder.to(ctx.device)
    pair_model = PairEncoder(encoder)
    dtype = devices.autocast_dtype(cfg.precision, ctx.device)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-9)
    seq = cfg.max_seq_length

    def tokens(b):
        return {"input_ids": torch.full((b, seq), FILLER_TOKEN, device=ctx.device),
                "attention_mask": torch.ones((b, seq), dtype=torch.long, device=ctx.device)}

    # A trial runs no collective: a rank that runs out of memory mid-step would otherwise leave
    # the others waiting in an all-gather. DDP's gradient buckets (one more copy of the
    # gradients) are held as a plain buffer instead, and the gathered negatives' extra scores
    # (b x N*b floats) are negligible beside the activations.
    buckets = torch.empty(sum(p.numel() for p in encoder.parameters()), device=ctx.device)

    def train_step(b):
        def run():
            forward_backward(pair_model, tokens(b), tokens(b), dtype, cfg.loss_scale, gather=False)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        return _agreed_fit(run, ctx.device)

    def encode(b):
        def run():
            with torch.inference_mode(), devices.autocast(ctx.device, dtype):
                encoder(**tokens(b))
        return _agreed_fit(run, ctx.device)

    train_batch = largest_fitting(train_step)
    encode_batch = largest_fitting(encode, limit=1 << 20)
    del buckets
    return {"max_train_batch_per_device": train_batch, "max_train_batch_global": train_batch * ctx.world_size,
            "max_encode_batch_per_device": encode_batch,
            "device_capacity_bytes": devices.capacity(ctx.device)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--world-size", type=int, default=1,
                        help="ranks to probe with; on a GPU machine this relaunches itself under torchrun")
    args = parser.parse_args(argv)
    if args.world_size > 1 and "RANK" not in os.environ and torch.cuda.is_available():
        os.execv(sys.executable, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                  f"--nproc_per_node={args.world_size}", "-m", "tier1.probe",
                                  "--config", args.config, "--out", str(args.out)])
    setup_logging()
    quiet_transformers()
    cfg: ProbeConfig = parse_stage_config(args.config, "probe")
    ctx = distributed.setup()
    started_at = provenance.utc_now()
    try:
        if ctx.device.type == "cuda":
            result = probe(cfg, ctx)
        else:
            result = {"max_train_batch_per_device": None, "max_train_batch_global": None,
                      "max_encode_batch_per_device": None, "not_applicable": "no GPU: there is no device memory limit to probe"}
        if ctx.is_main:
            world = ctx.world_size if ctx.device.type == "cuda" else args.world_size
            settings = dataclasses.asdict(cfg)
            atomic.write_json(args.out, {"stage": "probe", "world_size": world, "started_at": started_at,
                                         **result, "config": settings, **provenance.stamp(config_hash(settings)),
                                         "finished_at": provenance.utc_now()})
            log.info("probe x%d: %s", ctx.world_size, result)
    finally:
        distributed.teardown()


if __name__ == "__main__":
    run_main(main)
