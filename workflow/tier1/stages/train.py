"""Stage 4, train: fine-tune the encoder on one process, or on N under DDP or FSDP2 (the config's
`parallelism`; tier1.training.parallel).

(The stages in the order the workflow runs them and `tier1 --help` lists them: 1 preflight,
2 prepare, 3 tokenize, 4 train, 5 evaluate, 6 probe, 7 commbench, 8 report.)

One process (the 1-GPU baseline):
    python -m tier1.stages.train --config '<json>' --data PAIRS.jsonl \\
        --tokens TOKENS.safetensors --model-out MODEL_DIR \\
        --metrics-out RECORD.json --loss-out LOSS.csv
N processes on one machine (DDP; NCCL on GPUs, gloo on CPU), one GPU each with --gpus:
    python -m tier1.runtime.launch --ranks N [--gpus] tier1.stages.train ...
Several machines: the same command on each, with --nnodes M --rdzv-endpoint HOST:PORT.
Only global rank 0 writes files and logs progress. Checkpoints go to `checkpoints/` beside the
metrics file; a rerun of the same configuration resumes from the last one.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from tier1 import layout
from tier1.config import TrainConfig, config_hash
from tier1.encoder import model
from tier1.encoder.model import CPU_WARM_LAYERS
from tier1.encoder.token_cache import PairTokens, training_pairs
from tier1.measure import clock, disturbance
from tier1.records import TrainRecord
from tier1.runtime import atomic, distributed, provenance
from tier1.runtime import device as devices
from tier1.runtime.cli import progress, run_main, stage, training_stage_parser
from tier1.runtime.distributed import Context
from tier1.runtime.provenance import available_cores
from tier1.training import checkpoint, parallel, warm_steps
from tier1.training.builder import build_trainer
from tier1.training.record import rank_record, short, train_record
from tier1.training.trainer import UNSYNCED_STEPS, Trainer

log = logging.getLogger("tier1.stages.train")


@dataclass(frozen=True)
class Outputs:
    """Where a training job writes: the model folder, the metrics record and the loss log."""

    model: Path
    metrics: Path
    loss: Path

    @property
    def checkpoints(self) -> Path:
        return layout.checkpoints_beside(self.metrics)

    @classmethod
    def in_folder(cls, folder: Path) -> Outputs:
        """The files of a training's folder, named as in a run's train/<model>/."""
        return cls(folder / layout.MODEL, folder / layout.TRAIN_RECORD, folder / layout.LOSS)


class Interrupted(Exception):
    """Raised by --stop-after-steps, which stands in for a crash in resume tests."""


def run_once(cfg: TrainConfig, ctx: Context, tokens: PairTokens, ckpt_dir: Path, fingerprint: str, repeat: int,
             walls: list[float], state: dict | None, stop_after: int | None,
             dropout_stream: int = 0) -> tuple[Trainer, float, int, dict, float]:
    """Train from scratch, or from `state` (a checkpoint of this repeat); returns the trainer, the
    wall time, the step it started from, what could have disturbed the timed window and the
    seconds of warm-up before it. `walls` (earlier repeats) go into checkpoints."""
    torch.manual_seed(cfg.seed)
    encoder, _ = model.load(cfg.model, cfg.gradient_checkpointing, cfg.trust_remote_code, cfg.encoder)
    trainer = build_trainer(cfg, ctx, encoder, tokens, dropout_stream)
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resuming repeat %d from step %d of %d", repeat, trainer.step, trainer.plan.total_steps)
    start_step = trainer.step
    bar = progress(trainer.plan.total_steps, f"train x{ctx.world_size}", enabled=ctx.is_main)
    checkpoint_s: list[float] = []  # saving is not training: taken out of the wall time
    bar.update(trainer.step)

    def after_step(t: Trainer) -> None:
        bar.update(1)
        if t.last_loss is not None:  # read every few steps; not a scan of every row after every step
            bar.set_postfix(loss=f"{t.last_loss:.4f}", refresh=False)
        if not t.done and cfg.checkpoint_every and t.step % cfg.checkpoint_every == 0:
            saving = clock.now()
            state = t.state_dict()  # whole on every rank (FSDP2 gathers its shards: every rank takes part)
            if ctx.is_main:
                checkpoint.save(ckpt_dir, {**state, "repeat": repeat, "walls": walls}, fingerprint)
            distributed.barrier()
            checkpoint_s.append(clock.now() - saving)
        if stop_after is not None and repeat * t.plan.total_steps + t.step >= stop_after and not t.done:
            bar.close()
            raise Interrupted(t.step)

    warming = clock.now()
    trainer.warm_up()
    # every other shape once, before the window: through the whole model where a first meeting
    # costs (a GPU), through the first layer where it costs little (a CPU)
    trainer.warm_shapes(layers=None if devices.first_calls_cost(ctx.device) else CPU_WARM_LAYERS)
    warm_s = clock.now() - warming
    # the peak is the training's: not the warm-up's copy of the parameters, which no run holds
    devices.reset_peak(ctx.device)
    with clock.window(ctx.device) as window:
        trainer.fit(after_step)
    bar.close()
    return trainer, window.seconds - sum(checkpoint_s), start_step, window.disturbance, warm_s


def write_loss_csv(path: Path, rows: list[dict]) -> None:
    header = "step,epoch,samples_seen,loss,lr\n"
    atomic.write_text(path, header + "".join(
        f"{r['step']},{r['epoch']},{r['samples_seen']},{r['loss']:.8f},{r['lr']:.6e}\n" for r in rows))


def train(cfg: TrainConfig, ctx: Context, data: Path, out: Outputs, stop_after: int | None = None,
          tokens: Path | None = None, dropout_stream: int = 0) -> TrainRecord | None:
    cfg.check_world_size(ctx.world_size)
    started_at = provenance.utc_now()
    tokenizer = model.load_tokenizer(cfg.model, cfg.trust_remote_code, cfg.encoder)
    ids = training_pairs(tokenizer, data, tokens, cfg.max_seq_length)
    data_hash = hashlib.sha256(data.read_bytes()).hexdigest()
    fingerprint = config_hash({"cfg": vars(cfg), "world": ctx.world_size, "data": data_hash,
                               "dropout_stream": dropout_stream})
    state = checkpoint.load(out.checkpoints, fingerprint, ctx.device)
    first = state["repeat"] if state else 0  # repeats finished before an interruption are kept
    walls: list[float] = list(state["walls"]) if state else []
    trainer, peaks, windows, warm_s = None, [], [], []
    for repeat in range(first, cfg.repeats):
        # The previous repeat's model, optimizer state and DDP buckets go before this one's
        # memory peak is measured.
        trainer = None
        gc.collect()
        devices.free_cached(ctx.device)
        trainer, wall, start_step, window, warm = run_once(cfg, ctx, ids, out.checkpoints, fingerprint, repeat, walls,
                                             state if repeat == first else None, stop_after, dropout_stream)
        walls.append(wall)
        windows.append(window)
        warm_s.append(warm)
        peaks.append(devices.peak_memory(ctx.device))
        if repeat + 1 < cfg.repeats and ctx.is_main:
            checkpoint.clear(out.checkpoints)

    # after the timed window: the last steps again without gradient sync (the step decomposition)
    measuring = clock.now()
    warm = warm_steps.choose(trainer, UNSYNCED_STEPS)  # steps whose shapes every rank had met
    unsynced = {**trainer.measure_unsynced(indices=warm["indices"]), "cold_steps_in_window": warm["cold_steps_in_window"],
                "cold_steps_used": warm["cold_used"]}
    allreduce_s = clock.time_allreduce(sum(p.numel() for p in trainer.encoder.parameters()), ctx.device)
    decomposition_s = clock.now() - measuring
    # the trained weights whole (under FSDP2 gathered from every rank's shards: a collective)
    digest = hashlib.sha256()
    weights = parallel.full_model_state(trainer.encoder, trainer.model, keep=ctx.is_main, digest=digest)
    ranks = distributed.all_gather_objects({**rank_record(trainer, ctx, start_step, peaks, unsynced, short(digest)),
                                            "window": disturbance.combine(windows)})
    if not ctx.is_main:
        return None

    with atomic.atomic_path(out.model) as tmp:
        model.save(trainer.encoder, tokenizer, tmp, cfg.max_seq_length,
                   weights if parallel.is_sharded(trainer.model) else None)
    write_loss_csv(out.loss, trainer.loss_rows)
    disturbed_by, disturbed = disturbance.judge([r["window"] for r in ranks], available_cores())
    metrics = train_record(cfg, trainer, ranks, walls, start_step, allreduce_s, started_at, decomposition_s,
                           disturbed_by, disturbed, warm_s)
    if metrics.step_evenness["note"]:
        log.warning("%s", metrics.step_evenness["note"])
    metrics.write(out.metrics)
    checkpoint.clear(out.checkpoints)
    log.info("trained %d steps on %d rank(s) in %.1f s (%.1f samples/s); checksums equal: %s",
             trainer.plan.total_steps, ctx.world_size, metrics.wall_time_s, metrics.samples_per_s or 0,
             metrics.checksums_equal)
    return metrics


def main(argv: list[str] | None = None) -> None:
    parser = training_stage_parser(__doc__)
    parser.add_argument("--model-out", type=Path, required=True, help="folder for the trained model")
    parser.add_argument("--metrics-out", type=Path, required=True, help="the training record (JSON) to write")
    parser.add_argument("--loss-out", type=Path, required=True, help="loss.csv (one row per step)")
    parser.add_argument("--dropout-stream", type=int, default=0,
                        help="another sequence of dropout masks, same data: the dropout-noise reference run")
    parser.add_argument("--stop-after-steps", type=int, default=None,
                        help="stop (as if killed) after this many steps, counted over all repeats, "
                             "leaving the checkpoint; for resume tests")
    args = parser.parse_args(argv)
    with stage(args, "train") as run:
        try:
            train(run.cfg, run.ctx, args.data, Outputs(args.model_out, args.metrics_out, args.loss_out),
                  args.stop_after_steps, args.tokens, args.dropout_stream)
        except Interrupted as stop:
            log.warning("stopped after step %d as asked; rerun to resume", stop.args[0])
            sys.exit(3)


if __name__ == "__main__":
    run_main(main)
