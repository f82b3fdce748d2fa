"""Stage: what one rank's compute really costs at its share of the batch.

    python -m tier1.stages.rank_compute --config '<train config json>' --data PAIRS.jsonl \\
        --tokens TOKENS.safetensors --world-sizes 1 2 4 --out RANK_COMPUTE.json

For each world size n, one process (no DDP, no collectives) runs forward and backward on the
batch one rank of an n-rank run gets (B/n with strong scaling, B with weak), on the same device,
with the hardware such a rank has: on a CPU, the threads an n-rank run gives each rank
(cores / n). The prediction (tier1.report.prediction) uses these times instead of assuming a
rank's compute shrinks as 1/n: on a step bound by fixed per-step work (the host, launches, shape
set-up), a quarter of the batch costs nearly as much as the whole.

Every batch is met once untimed first (its shapes warmed), then timed; the world sizes take turns
round by round, so a busy machine slows them alike. No optimizer step: the parameters never
change, so every round times the same work. On CUDA, a few more steps run under the profiler for
the share of the step the GPU spends in kernels (tier1.measure.gpu_busy).
"""

from __future__ import annotations

import logging
import statistics
from pathlib import Path

import torch

from tier1.config import TrainConfig, config_hash
from tier1.encoder import model
from tier1.encoder.token_cache import training_pairs
from tier1.measure import clock, disturbance, gpu_busy
from tier1.records import RankComputeRecord
from tier1.runtime import device as devices
from tier1.runtime import provenance
from tier1.runtime.cli import run_main, stage, training_stage_parser
from tier1.runtime.distributed import Context
from tier1.runtime.provenance import available_cores
from tier1.training.builder import make_optimizer
from tier1.training.comm_hook import AllreduceSpan
from tier1.training.lr_schedule import warmup_then_decay
from tier1.training.plan import BatchPlan
from tier1.training.step import PairEncoder
from tier1.training.trainer import Trainer

log = logging.getLogger("tier1.stages.rank_compute")

BATCHES = 2  # distinct batches per world size (the run's first steps)
ROUNDS = 2   # timed passes over them, world sizes taking turns (kept few: the default CPU pipeline stays under 6 minutes)


def threads_for(n: int, cores: int, device: torch.device) -> int:
    """The threads one rank of an n-rank run has (tier1.runtime.distributed.setup's rule on one machine)."""
    return max(1, cores // n) if device.type == "cpu" else torch.get_num_threads()


def rank_trainer(cfg: TrainConfig, ctx: Context, encoder, tokens, n: int) -> Trainer:
    """A trainer for rank 0 of an n-rank plan, run alone: its slice of each global batch, no DDP."""
    plan = BatchPlan(n_pairs=len(tokens.anchor), global_batch=cfg.global_batch(n), world_size=n,
                     grad_accum_steps=cfg.grad_accum_steps, num_epochs=cfg.num_epochs, seed=cfg.seed)
    optimizer = make_optimizer(cfg, encoder.parameters())
    scheduler = warmup_then_decay(optimizer, cfg.warmup_ratio, plan.total_steps)
    return Trainer(cfg, ctx, encoder, PairEncoder(encoder), optimizer, scheduler, plan, tokens, AllreduceSpan(),
                   devices.autocast_dtype(cfg.precision, ctx.device))


def measure(cfg: TrainConfig, ctx: Context, encoder, tokens, world_sizes: list[int], cores: int,
            batches: int = BATCHES, rounds: int = ROUNDS) -> dict:
    """Per world size (under "world_sizes"): the rank's batch, its threads, and its forward+backward
    times (seconds); and what else ran during the timed rounds ("disturbed_by", "marks")."""
    trainers = {n: rank_trainer(cfg, ctx, encoder, tokens, n) for n in world_sizes}
    picked = {n: [b for _, b in t.plan.schedule()[:batches]] for n, t in trainers.items()}
    times: dict[int, list[float]] = {n: [] for n in world_sizes}
    data: dict[int, list[float]] = {n: [] for n in world_sizes}

    def one_pass(timed: bool) -> None:
        for n, trainer in trainers.items():
            torch.set_num_threads(threads_for(n, cores, ctx.device))
            trainer.times.compute.clear()
            trainer.times.data.clear()
            for batch in picked[n]:
                trainer.compute_gradients(batch)
                trainer.optimizer.zero_grad(set_to_none=True)
            trainer.read_times()  # the step clock is read after the steps, never inside one
            if timed:
                times[n] += trainer.times.compute
                data[n] += trainer.times.data

    one_pass(timed=False)  # the first pass meets every shape, untimed
    # the timed rounds watched as a training window is: what else ran beside them marks the record
    with clock.window(ctx.device, barriers=False) as window:
        for _ in range(rounds):
            one_pass(timed=True)
    disturbed_by, marks = disturbance.judge([window.disturbance], cores)
    busy = {}
    if ctx.device.type == "cuda":
        for n, trainer in trainers.items():
            busy[n] = gpu_busy.profile(lambda t=trainer, b=picked[n]: [t.compute_gradients(x) for x in b], len(picked[n]))
            trainer.optimizer.zero_grad(set_to_none=True)
    torch.set_num_threads(threads_for(1, cores, ctx.device))
    full = statistics.median(times[min(world_sizes)])
    out = {"disturbed_by": disturbed_by, "marks": marks, "world_sizes": {}}
    for n in world_sizes:
        t = trainers[n]
        med = statistics.median(times[n])
        out["world_sizes"][str(n)] = {
            "per_rank_batch": t.plan.per_device,
            "share_of_global_batch": t.plan.per_device / cfg.global_batch(1),
            "threads": threads_for(n, cores, ctx.device),
            "compute_s": {"median": med, "min": min(times[n]), "max": max(times[n]), "times": times[n]},
            "data_s": statistics.median(data[n]),
            "relative_to_one_rank": med / full if full else None,
            "gpu_busy": busy.get(n),
        }
    return out


def run(cfg: TrainConfig, ctx: Context, data: Path, tokens_path: Path | None, world_sizes: list[int],
        out: Path) -> RankComputeRecord:
    started_at = provenance.utc_now()
    if ctx.distributed:
        raise RuntimeError("tier1.stages.rank_compute runs as one process: it times one rank alone, without DDP")
    cores = available_cores()
    torch.manual_seed(cfg.seed)
    encoder, tokenizer = model.load(cfg.model, cfg.gradient_checkpointing, cfg.trust_remote_code, cfg.encoder)
    encoder = encoder.to(ctx.device).train()
    tokens = training_pairs(tokenizer, data, tokens_path, cfg.max_seq_length)
    sizes = sorted(set(world_sizes) | {1})
    measured = measure(cfg, ctx, encoder, tokens, sizes, cores)
    per_n = measured["world_sizes"]
    settings = dict(vars(cfg))
    record = RankComputeRecord(
        stage="rank_compute",
        started_at=started_at,
        device=str(ctx.device),
        device_name=devices.device_name(ctx.device),
        cores=cores,
        scaling=cfg.scaling,
        global_batch_1=cfg.global_batch(1),
        batches=BATCHES,
        rounds=ROUNDS,
        method=(f"one process, no DDP: rank 0's slice of the run's first {BATCHES} global batches at each world "
                f"size, every batch met once untimed, then {ROUNDS} timed rounds with the world sizes taking turns; "
                "forward+backward only (no optimizer step); on a CPU with the threads each rank of that run has"),
        encoder=model.identity(encoder, ctx.device),
        world_sizes=per_n,
        disturbed_by=measured["disturbed_by"],
        marks=measured["marks"],
        finished_at=provenance.utc_now(),
        **provenance.stamp(config_hash(settings)),
    )
    record.write(out)
    for mark in record.marks:
        log.warning("%s: the prediction will model each rank's compute instead of using these times", mark)
    for n, x in per_n.items():
        log.info("compute of one rank at world size %s (batch %d, %d thread(s)): %.3f s, %.2f of 1 rank's",
                 n, x["per_rank_batch"], x["threads"], x["compute_s"]["median"], x["relative_to_one_rank"] or 0)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = training_stage_parser(__doc__)
    parser.add_argument("--world-sizes", type=int, nargs="+", required=True, help="the run's world sizes")
    parser.add_argument("--out", type=Path, required=True, help="rank_compute.json to write")
    args = parser.parse_args(argv)
    with stage(args, "train") as running:
        run(running.cfg, running.ctx, args.data, args.tokens, args.world_sizes, args.out)


if __name__ == "__main__":
    run_main(main)
