"""Stage: the steady training step at one global batch size and world size, for the batch sweep.

    python -m tier1.stages.sweep_step --config '<train config json>' --batch 128 --data PAIRS.jsonl \\
        --tokens TOKENS.safetensors --out SWEEP_1.json
    torchrun --standalone --nproc_per_node 4 -m tier1.stages.sweep_step ... --out SWEEP_4.json

A short run at global batch B split over the ranks (strong scaling, whatever `scaling` says):
the first SWEEP_STEPS batches once untimed (forward and backward: every shape met, DDP's buckets
built), then the same batches as timed training steps. Its steps count toward nothing else: no
model, no loss curve, no checkpoint. On CUDA two more steps run under the profiler for the GPU-busy
share (tier1.measure.gpu_busy).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
from pathlib import Path

import torch

from tier1.config import ConfigError, TrainConfig, config_hash
from tier1.encoder import model
from tier1.encoder.token_cache import training_pairs
from tier1.measure import gpu_busy
from tier1.records import SweepRecord
from tier1.runtime import device as devices
from tier1.runtime import distributed, provenance
from tier1.runtime.cli import run_main, stage, training_stage_parser
from tier1.runtime.distributed import Context
from tier1.training.builder import build_trainer
from tier1.training.trainer import StepTimes

log = logging.getLogger("tier1.stages.sweep_step")

SWEEP_STEPS = 6
PROFILED_STEPS = 2


def sweep_config(cfg: TrainConfig, batch: int, n_pairs: int) -> TrainConfig:
    """The run's training settings at global batch `batch`, strong scaling, enough epochs for the steps."""
    if n_pairs < batch:
        raise ConfigError(f"batch_sweep: global batch {batch} needs at least {batch} training pairs, but the run "
                          f"prepared {n_pairs}; raise train_samples or leave {batch} out of batch_sweep")
    epochs = math.ceil(SWEEP_STEPS / (n_pairs // batch))
    return dataclasses.replace(cfg, batch_size=batch, scaling="strong", num_epochs=epochs, checkpoint_every=0)


def run(cfg: TrainConfig, ctx: Context, batch: int, data: Path, tokens_path: Path | None,
        out: Path) -> SweepRecord | None:
    started_at = provenance.utc_now()
    torch.manual_seed(cfg.seed)
    encoder, tokenizer = model.load(cfg.model, cfg.gradient_checkpointing, cfg.trust_remote_code, cfg.encoder)
    tokens = training_pairs(tokenizer, data, tokens_path, cfg.max_seq_length)
    scfg = sweep_config(cfg, batch, len(tokens.anchor))
    scfg.check_world_size(ctx.world_size)
    trainer = build_trainer(scfg, ctx, encoder, tokens)
    batches = [b for _, b in trainer.plan.schedule()[:SWEEP_STEPS]]
    for b in batches:  # untimed: every shape met once
        trainer.compute_gradients(b)
        trainer.optimizer.zero_grad(set_to_none=True)
    trainer.read_times()
    distributed.barrier()
    trainer.times = StepTimes()
    for b in batches:
        trainer.train_step(b)
    trainer.read_times()  # the step clock is read after the steps, never inside one
    distributed.barrier()
    steps = list(trainer.times.step)
    busy = None
    if ctx.device.type == "cuda":
        busy = gpu_busy.profile(lambda: [trainer.compute_gradients(b) for b in batches[:PROFILED_STEPS]],
                                PROFILED_STEPS)
        trainer.optimizer.zero_grad(set_to_none=True)
    ranks = distributed.all_gather_objects({"rank": ctx.rank, "median_step_s": statistics.median(steps),
                                            "threads": ctx.threads, "gpu_busy": busy})
    if not ctx.is_main:
        return None
    step_s = statistics.median(steps)
    record = SweepRecord(
        stage="sweep_step",
        started_at=started_at,
        global_batch=batch,
        world_size=ctx.world_size,
        per_rank_batch=batch // ctx.world_size,
        steady_step_s=step_s,
        step_times_s=steps,
        timed_steps=len(steps),
        gpu_busy=busy,
        gpu_busy_share=gpu_busy.busy_share((busy or {}).get("kernel_s_per_step"), step_s),
        device_name=devices.device_name(ctx.device),
        on_gpu=ctx.device.type == "cuda",
        # distinct GPUs under the ranks: fewer than the ranks in the shared-GPU rehearsal
        gpus=min(ctx.world_size, torch.cuda.device_count()) if ctx.device.type == "cuda" else 0,
        encoder=model.identity(trainer.encoder, ctx.device),
        ranks=ranks,
        method=(f"global batch {batch} over {ctx.world_size} rank(s), strong scaling: the first {len(batches)} "
                "batches once untimed (forward+backward), then the same batches as timed training steps; "
                "the median step"),
        finished_at=provenance.utc_now(),
        **provenance.stamp(config_hash(dict(vars(scfg)))),
    )
    record.write(out)
    log.info("batch %d on %d rank(s): steady step %.3f s", batch, ctx.world_size, step_s)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = training_stage_parser(__doc__)
    parser.add_argument("--batch", type=int, required=True, help="the global batch size")
    parser.add_argument("--out", type=Path, required=True, help="the JSON record to write")
    args = parser.parse_args(argv)
    with stage(args, "train") as running:
        run(running.cfg, running.ctx, args.batch, args.data, args.tokens, args.out)


if __name__ == "__main__":
    run_main(main)
