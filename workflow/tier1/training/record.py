"""What a training run writes about itself: per-rank facts and the training record."""

from __future__ import annotations

import hashlib
import statistics
from typing import Any

import torch

from tier1.config import TrainConfig, config_hash
from tier1.encoder import shapes
from tier1.encoder.model import dropout_probabilities, identity
from tier1.measure import flops
from tier1.records import TrainRecord
from tier1.runtime import device as devices
from tier1.runtime import provenance
from tier1.runtime.distributed import Context
from tier1.training import decomposition, parallel
from tier1.training.loss import negatives_per_anchor
from tier1.training.trainer import Trainer


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def parameter_checksum(state: torch.nn.Module | dict[str, torch.Tensor]) -> str:
    """A hash of a model's state dict, or of a whole state dict given; under FSDP2 the same hash
    is taken while the state is gathered (tier1.training.parallel.full_model_state's `digest`)."""
    h = hashlib.sha256()
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    for name, p in sorted(state.items()):
        parallel.checksum_fold(h, name, p)
    return short(h)


def short(h) -> str:
    """The checksum as records show it: a hash's first 16 hex digits."""
    return h.hexdigest()[:16]


def objective(cfg: TrainConfig, world: int) -> dict[str, Any]:
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


def steady(values: list[float]) -> float | None:
    """The median after the first tenth of the steps (at least one): the step time once caches,
    allocator pools and clocks have settled, beside the time-to-train that includes them."""
    return median(values[max(1, len(values) // 10):]) if len(values) > 1 else median(values)


def steady_spread(values: list[float]) -> dict[str, Any] | None:
    """How far the steady steps scatter, and so how well their median is known: the interquartile
    range, and the median's standard error relative to it (~0.93 IQR / sqrt(n) for steps that
    scatter normally; robust to a few slow ones). The report judges ratios of medians with it."""
    kept = values[max(1, len(values) // 10):] if len(values) > 1 else list(values)
    if len(kept) < 4:
        return None
    q1, mid, q3 = statistics.quantiles(kept, n=4, method="inclusive")
    iqr = q3 - q1
    return {"steps": len(kept), "q1_s": q1, "q3_s": q3, "iqr_s": iqr,
            "median_se_relative": 0.93 * iqr / mid / len(kept) ** 0.5 if mid else None}


STALL_FACTOR = 10.0  # a step this many times the steady step (and over STALL_MIN_S) is a stall
STALL_MIN_S = 1.0


def stalls(step_times: list[float]) -> list[dict[str, float]]:
    """Steps that took far longer than the run's steady step: a stopped or starved peer, swapping."""
    typical = steady(step_times)
    if not typical:
        return []
    return [{"step_index": i, "seconds": t} for i, t in enumerate(step_times)
            if t > STALL_FACTOR * typical and t > STALL_MIN_S]


def marks(start_step: int, total_steps: int, step_stalls: list[dict]) -> list[str]:
    """Why this run's times are not clean measurements (empty when they are)."""
    out = []
    if start_step:
        out.append(f"resumed at step {start_step} of {total_steps}: the wall time covers only the steps after it")
    if step_stalls:
        worst = max(s["seconds"] for s in step_stalls)
        out.append(f"stalled: {len(step_stalls)} step(s) over {STALL_FACTOR:g}x the steady step (worst {worst:.1f} s)")
    return out


def rank_record(trainer: Trainer, ctx: Context, start_step: int, peaks: list[dict],
                unsynced: dict[str, list] | None = None, checksum: str | None = None) -> dict[str, Any]:
    """This rank's own account of the run: the work it did, its memory, its final parameters.
    `peaks` holds each repeat's peak memory, measured with the previous repeat freed; `unsynced`
    is Trainer.measure_unsynced's result, the input of the step decomposition; `checksum` that of the
    final state dict whole (taken while parallel.full_model_state gathered it; of the encoder's own
    state when not given).
    `model_state_bytes` are the model states this rank holds (parameters, gradients, optimizer
    state), from its own tensors: under FSDP2 its shards."""
    t = trainer.times
    return {
        "rank": ctx.rank,
        "device": str(ctx.device),
        "device_name": devices.device_name(ctx.device),
        "samples": trainer.samples_seen,
        "tokens": trainer.tokens_seen,
        "model_flops": trainer.flops,
        "steps": trainer.step - start_step,
        "median_step_s": median(trainer.times.step),
        "steady_step_s": steady(trainer.times.step),
        "peak_memory": peaks[-1] if peaks else devices.peak_memory(ctx.device),
        "peak_memory_per_repeat": peaks,
        "peak_device_used_bytes": trainer.peak_used_memory,
        "device_capacity_bytes": devices.capacity(ctx.device),
        "threads": ctx.threads,
        "parameter_checksum": checksum if checksum is not None else parameter_checksum(trainer.encoder),
        "model_state_bytes": parallel.model_state_bytes(trainer.encoder, trainer.optimizer),
        "first_step_gradient_norm": trainer.first_gradient_norm,
        "step_parts": decomposition.rank_parts(unsynced, t.data, t.optimizer, steady(t.step)) if unsynced else None,
        # a compiled encoder is warmed through the whole model on any device (Trainer.warm_shapes)
        "shapes": trainer.shape_log.record(trainer.rungs, shapes.note(devices.first_calls_cost(ctx.device)
                                                                      or trainer.compiled)),
    }


WALL_AVERAGE_SLACK = 0.10  # the wall-average step may exceed the steady median by this share


def step_evenness(wall: float, step_times: list[float], steady_s: float | None, disturbed: bool) -> dict[str, Any]:
    """The wall-average step beside the steady median, and where the difference went when the
    average is over WALL_AVERAGE_SLACK above. `wall` is the window that ran `step_times`. The
    difference, wall less the steps at the median, is split into parts that add up to it: the first
    tenth of the steps (left out of the median); the steps after it, their excess over the median
    and their shortfall under it apart (about half of them are under the median, so the excess
    alone can exceed the whole); and the time between the steps (progress, checkpoints, host work a
    GPU waited for: there the step clocks are the device's)."""
    n = len(step_times)
    average = wall / n if n else None
    excess = average / steady_s - 1 if average and steady_s else None
    parts = None
    why = None
    if excess is not None:
        head = max(1, n // 10) if n > 1 else 0
        after = [t - steady_s for t in step_times[head:]]
        parts = {"first_tenth_s": sum(t - steady_s for t in step_times[:head]),
                 "slow_steps_after_s": sum(d for d in after if d > 0),
                 "fast_steps_after_s": sum(d for d in after if d < 0),
                 "between_steps_s": wall - sum(step_times)}
        if excess > WALL_AVERAGE_SLACK:
            why = (f"the wall-average step is {excess:.0%} above the steady median; " + _difference(parts, n)
                   + ("; other work shared the machine during the window" if disturbed else ""))
    return {"wall_average_step_s": average, "steady_step_s": steady_s, "excess": excess,
            "where_s": parts, "note": why}


def _difference(parts: dict[str, float], n: int) -> str:
    """The difference and its parts, signed, so that they add up to it (rounding aside), and the
    largest of them named."""
    after = parts["slow_steps_after_s"] + parts["fast_steps_after_s"]
    net = {"the first tenth of the steps, left out of the median, ran slower": parts["first_tenth_s"],
           "steps after the first tenth were uneven": after,
           "time passed between the steps": parts["between_steps_s"]}
    return (f"the wall time is {sum(net.values()):.2f} s over {n} steps at the median: "
            f"{parts['first_tenth_s']:+.2f} s in the first tenth of the steps, {after:+.2f} s in the steps after it "
            f"({parts['slow_steps_after_s']:.2f} s above the median, {-parts['fast_steps_after_s']:.2f} s below), "
            f"{parts['between_steps_s']:+.2f} s between the steps; the largest part: {max(net, key=net.get)}")


def gpus_in_job(ctx: Context) -> int:
    """The GPUs whose peak the ranks' FLOPs are measured against: one per rank, or one per node where
    the node's ranks shared it (share_gpu: the launcher gives them the node's first GPU only)."""
    if ctx.shared_gpu:
        return max(1, ctx.world_size // ctx.local_world_size)
    return ctx.world_size


def utilisation(trainer: Trainer, ranks: list[dict], step_s: float | None) -> dict[str, Any]:
    """Model FLOPs per step (all ranks' padded batches, forward and backward) and the share of
    the devices' dense peak the steady step reaches. The peak is the datasheet's for the card and
    precision; a GPU missing from the table is measured with a matmul, and labelled so."""
    steps = ranks[0]["steps"]  # the steps this trainer ran (after a resume: only those)
    per_step = sum(r["model_flops"] for r in ranks) / steps if steps else None
    device = trainer.ctx.device
    dtype = devices.dtype_name(trainer.autocast_dtype)
    peak, source = (flops.peak_flops(devices.device_name(device), dtype) if device.type == "cuda" else (None, None))
    if device.type == "cuda" and peak is None:
        peak, source = flops.measured_matmul_peak(device, trainer.autocast_dtype or torch.float32), "measured matmul"
    value = flops.mfu(per_step, step_s, peak * gpus_in_job(trainer.ctx)) if per_step and step_s and peak else None
    return {"model_flops_per_step": per_step, "peak_flops_per_device": peak, "peak_source": source or
            "n/a (no GPU: a CPU has no datasheet peak here)", "mfu": value}


def train_record(cfg: TrainConfig, trainer: Trainer, ranks: list[dict], walls: list[float], start_step: int,
                 allreduce_s: float | None, started_at: str, decomposition_s: float,
                 disturbed_by: dict[str, Any], disturbed: list[str], warm_up_s: list[float]) -> TrainRecord:
    """The training record: times, throughput, per-rank accounting, objective and provenance.
    `decomposition_s` is the decomposition's own timed window (the report's pipeline overhead counts
    it as the stage's work); `disturbed_by` and `disturbed` are disturbance.judge's verdict on the
    ranks' windows; `warm_up_s`, rank 0's seconds warming shapes before each repeat's window."""
    plan, t = trainer.plan, trainer.times
    samples = sum(r["samples"] for r in ranks)
    wall = statistics.median(walls)
    tokens = {kind: sum(r["tokens"][kind] for r in ranks) for kind in ("real", "padded")}
    step_s, step_stalls = steady(t.step), stalls(t.step)
    n_params = sum(p.numel() for p in trainer.encoder.parameters())
    settings = dict(vars(cfg))
    return TrainRecord(
        stage="train",
        world_size=plan.world_size,
        started_at=started_at,
        wall_time_s=wall,
        wall_times_s=walls,
        warm_up_s=warm_up_s,
        resumed_from_step=start_step,
        steps=plan.total_steps,
        # the same median as wall_time_s (one repeat's samples over the median repeat's time)
        samples_per_s=samples / wall if wall else None,
        steady_step_s=step_s,
        steady_step_spread=steady_spread(t.step),
        # the trainer holds the last repeat's steps: beside its own wall, not the median repeat's
        step_evenness=step_evenness(walls[-1], t.step, step_s, bool(disturbed)),
        shapes=shapes.combine([r["shapes"] for r in ranks]),
        encoder=identity(trainer.encoder, trainer.ctx.device),
        stalls=step_stalls,
        marks=marks(start_step, plan.total_steps, step_stalls) + disturbed,
        throughput={
            "tokens_per_s": tokens["real"] / wall if wall else None,
            "padded_tokens_per_s": tokens["padded"] / wall if wall else None,
            "tokens": tokens,
            **utilisation(trainer, ranks, step_s),
        },
        samples_total=samples,
        expected_samples=plan.steps_per_epoch * plan.global_batch * plan.num_epochs - start_step * plan.global_batch,
        objective=objective(cfg, plan.world_size),
        precision=devices.dtype_name(trainer.autocast_dtype),
        gradient_checkpointing=cfg.gradient_checkpointing,
        dropout={**dropout_probabilities(trainer.encoder), "stream": trainer.dropout_stream},
        time_split_median_s={
            "data": median(t.data), "forward_backward_with_comm": median(t.compute),
            "optimizer": median(t.optimizer), "step": median(t.step),
            # first bucket launched -> last bucket reduced (CUDA events on a GPU, the host clock with gloo); overlaps the backward pass
            "gradient_allreduce_span": median(t.allreduce_span),
        },
        # compute, exposed communication, data, optimizer, stragglers, other (training.decomposition)
        decomposition=decomposition.decompose([r.get("step_parts") for r in ranks]),
        allreduce_gradients_s=allreduce_s,
        gradient_bytes=4 * n_params,
        checksums_equal=len({r["parameter_checksum"] for r in ranks}) == 1,
        ranks=ranks,
        final_loss=trainer.loss_rows[-1]["loss"] if trainer.loss_rows else None,
        config=settings,
        decomposition_s=decomposition_s,
        model_head=trainer.encoder.head.record(),  # the pooling trained, the folder's own max_seq_length
        warm_up_step=True,  # every device: Trainer.warm_up before the timed window
        disturbance=disturbed_by,
        **provenance.stamp(config_hash(settings)),
        finished_at=provenance.utc_now(),
    )
