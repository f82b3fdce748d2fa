"""Stage 2, train: fine-tune the encoder on one process or under DDP.

One process (the 1-GPU baseline):
    python -m tier1.train --config '<json>' --data results/data/train.jsonl --out results/train/gpus1
N processes on one machine (DDP; NCCL on GPUs, gloo on CPU):
    torchrun --standalone --nproc_per_node N -m tier1.train --config '<json>' ...
Several machines: torchrun --nnodes M --nproc_per_node N --rdzv-backend c10d
    --rdzv-endpoint HOST:PORT -m tier1.train ...
Only global rank 0 writes files and logs progress.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from pathlib import Path

import torch
from tier1 import atomic, checkpoint, distributed, model, provenance
from tier1.cli_common import parse_stage_config, progress, quiet_transformers, run_main, setup_logging
from tier1.config import Tier1Config, config_hash
from tier1.data.sources import read_jsonl
from tier1.loss import negatives_per_anchor
from tier1.resources import device_capacity, device_name, peak_memory, reset_peak
from tier1.tokenize import load as token_cache_load
from tier1.trainer import Trainer, allreduce_seconds, median, parameter_checksum

log = logging.getLogger("tier1.train")


def run_config(stage_cfg: dict, world_size: int) -> Tier1Config:
    """The typed config of this run: batch divisibility is checked against its own world size,
    not against world sizes this job does not train."""
    return Tier1Config.from_dict({**stage_cfg, "gpu_counts": [world_size]})


def objective(cfg: Tier1Config, world: int) -> dict:
    """What the loss saw: the facts that decide whether two runs optimised the same thing."""
    per_device = cfg.per_device_batch(world)
    return {
        "scaling": cfg.scaling,
        "global_batch": cfg.global_batch(world),
        "per_device_batch": per_device,
        "micro_batch": cfg.micro_batch(world),
        "grad_accum_steps": cfg.grad_accum_steps,
        "gathered_embeddings": cfg.gather_embeddings,
        "negatives_per_anchor": negatives_per_anchor(per_device, world, cfg.gather_embeddings),
        "learning_rate": cfg.learning_rate,
        "loss_scale": cfg.loss_scale,
        "max_seq_length": cfg.max_seq_length,
    }


def run_once(cfg: Tier1Config, ctx, pairs, tokens: dict | None, ckpt_dir: Path, fingerprint: str, repeat: int, walls: list[float],
             state: dict | None, stop_after: int | None) -> tuple[Trainer, list[dict], float, int]:
    """Train from scratch, or from `state` (a checkpoint of this repeat); returns trainer, loss
    rows, wall time and the step it started from. `walls` (earlier repeats) go into checkpoints."""
    torch.manual_seed(cfg.seed)
    encoder, tokenizer = model.load(cfg.model, cfg.gradient_checkpointing)
    trainer = Trainer(cfg, ctx, encoder, tokenizer, pairs, tokens)
    rows: list[dict] = []
    if state is not None:
        trainer.load_state_dict(state)
        rows = state["loss_rows"]
        log.info("resuming repeat %d from step %d of %d", repeat, trainer.step, trainer.total_steps)
    start_step = trainer.step
    schedule = trainer.schedule()
    reset_peak(ctx.device)
    distributed.barrier()
    t0 = time.perf_counter()
    bar = progress(trainer.total_steps, f"train x{ctx.world_size}", enabled=ctx.is_main)
    bar.update(trainer.step)
    for epoch, batch in schedule[trainer.step:]:
        loss = trainer.train_step(batch)
        rows.append({"step": trainer.step, "epoch": epoch, "samples_seen": trainer.step * trainer.global_batch,
                     "loss": loss, "lr": trainer.scheduler.get_last_lr()[0]})
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}")
        done = trainer.step == trainer.total_steps
        if not done and cfg.checkpoint_every and trainer.step % cfg.checkpoint_every == 0:
            if ctx.is_main:
                checkpoint.save(ckpt_dir, {**trainer.state_dict(), "repeat": repeat, "walls": walls,
                                           "loss_rows": rows}, fingerprint)
            distributed.barrier()
        if stop_after is not None and repeat * trainer.total_steps + trainer.step >= stop_after and not done:
            bar.close()
            raise Interrupted(trainer.step)
    distributed.barrier()
    wall = time.perf_counter() - t0
    bar.close()
    return trainer, rows, wall, start_step


class Interrupted(Exception):
    """Raised by --stop-after-steps, which stands in for a crash in resume tests."""


def train(cfg: Tier1Config, ctx, data: Path, out: Path, stop_after: int | None = None,
          tokens: Path | None = None) -> dict | None:
    started_at = provenance.utc_now()
    pairs = read_jsonl(data)
    token_cache = token_cache_load(tokens, cfg.max_seq_length) if tokens else None
    data_hash = hashlib.sha256(data.read_bytes()).hexdigest()
    fingerprint = config_hash({"cfg": cfg.to_dict(), "world": ctx.world_size, "data": data_hash})
    ckpt_dir = out / "checkpoints"
    state = checkpoint.load(ckpt_dir, fingerprint, ctx.device)
    first = state["repeat"] if state else 0  # repeats finished before an interruption are kept
    walls: list[float] = list(state["walls"]) if state else []
    for repeat in range(first, cfg.repeats):
        trainer, rows, wall, start_step = run_once(cfg, ctx, pairs, token_cache, ckpt_dir, fingerprint, repeat, walls,
                                                   state if repeat == first else None, stop_after)
        walls.append(wall)
        if repeat + 1 < cfg.repeats and ctx.is_main:
            checkpoint.clear(ckpt_dir)

    comm_s = allreduce_seconds(sum(p.numel() for p in trainer.encoder.parameters()), ctx)
    rank_info = {
        "rank": ctx.rank,
        "device": str(ctx.device),
        "device_name": device_name(ctx.device),
        "samples": trainer.samples_seen,
        "steps": trainer.step - start_step,
        "median_step_s": median(trainer.times.step),
        "peak_memory": peak_memory(ctx.device),
        "device_capacity_bytes": device_capacity(ctx.device),
        "threads": ctx.threads,
        "parameter_checksum": parameter_checksum(trainer.encoder),
    }
    ranks = distributed.all_gather_objects(rank_info)
    if not ctx.is_main:
        return None

    with atomic.atomic_path(out / "model") as tmp:
        model.save(trainer.encoder, trainer.tokenizer, tmp, cfg.max_seq_length)
    header = "step,epoch,samples_seen,loss,lr\n"
    atomic.write_text(out / "loss.csv", header + "".join(
        f"{r['step']},{r['epoch']},{r['samples_seen']},{r['loss']:.8f},{r['lr']:.6e}\n" for r in rows))
    samples = sum(r["samples"] for r in ranks)
    t = trainer.times
    metrics = {
        "stage": "train",
        "world_size": ctx.world_size,
        "started_at": started_at,
        "finished_at": None,
        "wall_time_s": median(walls),
        "wall_times_s": walls,
        "resumed_from_step": start_step,
        "steps": trainer.total_steps,
        "samples_per_s": samples / walls[-1] if walls[-1] else None,
        "samples_total": samples,
        "expected_samples": trainer.steps_per_epoch * trainer.global_batch * cfg.num_epochs - start_step * trainer.global_batch,
        "objective": objective(cfg, ctx.world_size),
        "precision": str(trainer.autocast_dtype or torch.float32).replace("torch.", ""),
        "gradient_checkpointing": cfg.gradient_checkpointing,
        "time_split_median_s": {
            "data": median(t.data), "forward_backward_with_comm": median(t.compute),
            "optimizer": median(t.optimizer), "step": median(t.step),
            # first bucket launched -> last bucket reduced, host-timed; overlaps the backward pass
            "gradient_allreduce_span": median(t.allreduce_span),
        },
        "allreduce_gradients_s": comm_s,
        "gradient_bytes": 4 * sum(p.numel() for p in trainer.encoder.parameters()),
        "checksums_equal": len({r["parameter_checksum"] for r in ranks}) == 1,
        "ranks": ranks,
        "final_loss": rows[-1]["loss"] if rows else None,
        "config": cfg.to_dict(),
        **provenance.stamp(config_hash(cfg.to_dict())),
    }
    metrics["finished_at"] = provenance.utc_now()
    atomic.write_json(out / "train_metrics.json", metrics)
    checkpoint.clear(ckpt_dir)
    log.info("trained %d steps on %d rank(s) in %.1f s (%.1f samples/s); checksums equal: %s",
             trainer.total_steps, ctx.world_size, metrics["wall_time_s"], metrics["samples_per_s"] or 0,
             metrics["checksums_equal"])
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON of the train stage's config keys")
    parser.add_argument("--data", type=Path, default=Path("results/data/train.jsonl"))
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tokens", type=Path, default=None, help="token ids from the tokenize stage")
    parser.add_argument("--stop-after-steps", type=int, default=None,
                        help="stop (as if killed) after this many steps, counted over all repeats, "
                             "leaving the checkpoint; for resume tests")
    args = parser.parse_args(argv)
    setup_logging()
    quiet_transformers()
    stage_cfg = parse_stage_config(args.config, "train")
    ctx = distributed.setup()
    cfg = run_config(stage_cfg, ctx.world_size)
    try:
        train(cfg, ctx, args.data, args.out, args.stop_after_steps, args.tokens)
    except Interrupted as stop:
        log.warning("stopped after step %d as asked; rerun to resume", stop.args[0])
        sys.exit(3)
    finally:
        distributed.teardown()


if __name__ == "__main__":
    run_main(main)
