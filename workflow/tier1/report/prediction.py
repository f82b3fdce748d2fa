"""The predicted ceiling: what the step time and speedup should be at each world size, from the
1-rank step, the measured collectives and DDP's overlap; and where a measured run falls short.

The model, per world size n (all times per step, per rank):
- compute and data: the 1-rank times x the rank's share of the global batch (strong scaling 1/n,
  weak 1) x how much slower the rank's share of the hardware is. With one GPU per rank that is 1.
  Ranks sharing hardware split it: n ranks on C CPU cores get min(threads, C/n) cores each, so on a
  CPU box strong scaling's 1/n of the work runs on about 1/n of the cores and compute does not
  shrink (linear thread scaling assumed; a real CPU often scales threads sublinearly, which
  favours more ranks a little). Ranks sharing a GPU split it the same way.
- the loss's embedding all-gather (forward) and its backward all-reduce (about two all-gathers):
  3x the all-gather time measured at the loss's size (the commbench record), added to compute.
- optimizer: every rank updates all parameters: the 1-rank time x the hardware-share factor.
- gradient all-reduce: the gradient bytes at the bus bandwidth measured at that size for n ranks
  (the all-reduce sweep, interpolated), t = bytes x 2(n-1)/n / busbw. DDP reduces buckets while
  backward runs (backward taken as BACKWARD_FRACTION of forward+backward), so only what backward
  cannot hide is exposed, and never less than the last bucket (DDP_BUCKET_BYTES), which can only
  start when backward ends.
- FSDP2 (parallelism: fsdp) instead of the gradient all-reduce: every unit's parameters
  all-gathered before its forward and again before its backward, its gradients reduce-scattered
  (fsdp_bytes: (2 P + G)(n-1)/n bus bytes per rank against DDP's 2 G (n-1)/n, 1.5x with P = G),
  each at the bus bandwidth the collectives benchmark measured for that collective at that size
  (busbw = algbw x (n-1)/n for both; fsdp_seconds). The forward's gathers wait for nothing but
  the previous unit, so like DDP's buckets they hide behind compute where the device overlaps
  them; the same overlap rule is applied to the whole (backward's share of the step hides it).
- other (loss logging, scheduler, Python): as at 1 rank. Stragglers: none.
Speedup = (1-rank step / n-rank step) x (n-rank global batch / 1-rank global batch): the same
work per wall-second ratio the measured speedup is.

Pure: dicts in, dicts out; tier1.report.analysis and table put it in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tier1 import layout
from tier1.records import CollectivesRecord, PreflightRecord, RankComputeRecord, TrainRecord
from tier1.report import noise
from tier1.training.decomposition import LABELS, TERMS

BACKWARD_FRACTION = 2 / 3  # backward ~ 2x the forward's FLOPs: 2/3 of forward+backward
DDP_BUCKET_BYTES = 25 * 2**20  # DDP's default bucket_cap_mb
GATHER_ROUNDS = 3  # the loss's all-gather, and its backward all-reduce (~2 all-gathers)
FLAG_BELOW = 0.8  # a world size under this fraction of its predicted speedup is flagged
PROJECT_TO = (8, 16, 32)


# -- collectives ------------------------------------------------------------------------------

def allreduce_seconds(sweep: list[dict], nbytes: float) -> float | None:
    """All-reduce time of `nbytes` from a measured sweep (rows with `bytes` and `time_s.median`):
    log-log interpolation between measured sizes; below the smallest, its time (latency-bound);
    above the largest, the largest's bus bandwidth (bandwidth-bound)."""
    pts = sorted((row["bytes"], row["time_s"]["median"]) for row in sweep if row.get("time_s"))
    if not pts or nbytes <= 0:
        return None
    if nbytes <= pts[0][0]:
        return pts[0][1]
    if nbytes >= pts[-1][0]:
        return pts[-1][1] * nbytes / pts[-1][0]
    for (b0, t0), (b1, t1) in zip(pts, pts[1:]):
        if b0 <= nbytes <= b1:
            w = (math.log(nbytes) - math.log(b0)) / (math.log(b1) - math.log(b0))
            return math.exp(math.log(t0) + w * (math.log(t1) - math.log(t0)))
    return None


def ring_seconds(nbytes: float, n: int, busbw_gbps: float) -> float:
    """All-reduce time of `nbytes` on n ranks at a bus bandwidth (nccl-tests: busbw = S/t x 2(n-1)/n)."""
    return nbytes * 2 * (n - 1) / n / (busbw_gbps * 1e9) if n > 1 else 0.0


def busbw_from_time(nbytes: float, n: int, seconds: float) -> float:
    return nbytes * 2 * (n - 1) / n / seconds / 1e9


def ddp_bytes(gradient_bytes: float, n: int) -> float:
    """Bytes one rank moves per step under DDP: a ring all-reduce of the gradients, 2 G (n-1)/n."""
    return 2 * gradient_bytes * (n - 1) / n


def fsdp_bytes(parameter_bytes: float, gradient_bytes: float, n: int) -> float:
    """Bytes one rank moves per step under FSDP2: the parameters (as gathered: bf16 on a GPU with
    mixed precision) all-gathered in forward and again in backward, P (n-1)/n each, and the
    gradients (fp32) reduce-scattered, G (n-1)/n. With P = G: 1.5x DDP's all-reduce."""
    return (2 * parameter_bytes + gradient_bytes) * (n - 1) / n


def fsdp_seconds(parameter_bytes: float, gradient_bytes: float, n: int, allgather_busbw_gbps: float,
                 reduce_scatter_busbw_gbps: float) -> float:
    """FSDP2's collective time per step at the measured bus bandwidths (nccl-tests: all-gather and
    reduce-scatter busbw = algbw x (n-1)/n, so t = S (n-1)/n / busbw for each)."""
    if n < 2:
        return 0.0
    gather = 2 * parameter_bytes * (n - 1) / n / (allgather_busbw_gbps * 1e9)
    scatter = gradient_bytes * (n - 1) / n / (reduce_scatter_busbw_gbps * 1e9)
    return gather + scatter


# -- the model --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Baseline:
    """The 1-rank step and its parts (seconds)."""

    step_s: float
    compute_s: float
    data_s: float = 0.0
    optimizer_s: float = 0.0
    measured_split: bool = True  # False: the whole step was taken as compute

    @property
    def other_s(self) -> float:
        """The rest of the step; signed, so the parts add up to the 1-rank step (negative when
        the steps the parts were taken from ran slower than the steady median)."""
        return self.step_s - self.compute_s - self.data_s - self.optimizer_s


@dataclass(frozen=True)
class Comm:
    """What the collectives cost at one world size (seconds), and where the numbers came from."""

    allreduce_s: float  # the whole gradient
    last_bucket_s: float
    gather_s: float  # the loss's gather, forward and backward
    busbw_gbps: float | None
    source: str


def hardware_share(n: int, on_gpu: bool, gpus: int, cores: int, threads: int | None) -> float:
    """The compute one rank of n has: GPUs (1 when each rank has its own) or CPU cores."""
    if on_gpu:
        return min(1.0, gpus / n)
    return min(float(threads or max(1, cores // n)), cores / n)


def predict_step(base: Baseline, n: int, work: float, slowdown: float, comm: Comm | None,
                 compute_factor: float | None = None) -> dict[str, Any]:
    """Predicted parts of the n-rank step. `work`: the rank's share of the 1-rank batch; `slowdown`:
    1-rank hardware share / n-rank share; `compute_factor`: one rank's compute at its share over the
    1-rank compute, measured (tier1.stages.rank_compute); without it, work x slowdown (compute shrinks with
    the batch)."""
    compute = base.compute_s * (work * slowdown if compute_factor is None else compute_factor)
    backward = BACKWARD_FRACTION * compute
    if n == 1 or comm is None:
        exposed = hidden = 0.0
        gather = 0.0
    else:
        exposed = min(comm.allreduce_s, max(comm.allreduce_s - backward, comm.last_bucket_s))
        hidden = comm.allreduce_s - exposed
        gather = comm.gather_s
    seconds = {"compute": compute + gather, "exposed_comm": exposed, "data": base.data_s * work * slowdown,
               "optimizer": base.optimizer_s * slowdown, "stragglers": 0.0, "other": base.other_s}
    return {"seconds": seconds, "step_s": sum(seconds.values()), "allreduce_s": comm.allreduce_s if comm else 0.0,
            "hidden_by_backward_s": hidden, "gather_s": gather}


def predicted_speedup(base: Baseline, step_n: float, batch_ratio: float) -> float:
    return base.step_s / step_n * batch_ratio


def gap_terms(measured: dict[str, float], predicted: dict[str, float]) -> dict[str, float]:
    """Per term, how much longer the measured step spent there than predicted (seconds)."""
    return {k: (measured.get(k) or 0.0) - (predicted.get(k) or 0.0) for k in TERMS}


def largest_gap(measured: dict[str, float], predicted: dict[str, float]) -> str | None:
    gaps = gap_terms(measured, predicted)
    term = max(gaps, key=gaps.get)
    return term if gaps[term] > 0 else None


# -- from the collected results ---------------------------------------------------------------

def baseline(record: TrainRecord) -> Baseline | None:
    """The 1-rank split: the decomposition when the record has one, else the phase medians, else
    the whole step as compute."""
    d = record.decomposition
    if d and d.get("step_s"):
        s = d["seconds"]
        return Baseline(d["step_s"], s["compute"], s["data"], s["optimizer"])
    split = record.time_split_median_s
    step = record.steady_step_s or split.get("step")
    if not step:
        return None
    if split.get("forward_backward_with_comm"):
        return Baseline(step, split["forward_backward_with_comm"], split.get("data") or 0.0,
                        split.get("optimizer") or 0.0)
    return Baseline(step, step, measured_split=False)


def _hardware(record: TrainRecord, preflight: PreflightRecord | None) -> tuple[bool, int, int]:
    hw = record.hardware
    gpus = len(hw.get("gpus", []))
    cores = (preflight.cpu.get("cores_available") if preflight else None) or hw.get("cores") or 1
    return gpus > 0, gpus, cores


def _threads(record: TrainRecord) -> int | None:
    return record.ranks[0].get("threads") if record.ranks else None


def measured_comm(comm: CollectivesRecord | None, record: TrainRecord, n: int) -> Comm | None:
    """The n-rank collectives from the commbench record; without it, from the train record's own
    gradient all-reduce timing (no gather, last bucket scaled from it)."""
    nbytes = record.gradient_bytes
    if not nbytes or n < 2:
        return None
    gathered = record.objective.get("gathered_embeddings", True)
    if record.config.get("parallelism") == "fsdp":
        return fsdp_comm(comm, record, n, gathered)
    if comm and comm.all_reduce:
        sweep = comm.all_reduce
        t = allreduce_seconds(sweep, nbytes)
        gather = comm.summary.get("loss_all_gather", {}).get("time_s", {}).get("median") or 0.0
        return Comm(t, allreduce_seconds(sweep, min(nbytes, DDP_BUCKET_BYTES)), GATHER_ROUNDS * gather if gathered else 0.0,
                    busbw_from_time(nbytes, n, t), f"{layout.comm(n)} all-reduce sweep at {nbytes / 1e6:.1f} MB")
    t = record.allreduce_gradients_s
    if not t:
        return None
    return Comm(t, t * min(1.0, DDP_BUCKET_BYTES / nbytes), 0.0, busbw_from_time(nbytes, n, t),
                f"the train record's gradient all-reduce at {n} ranks")


def fsdp_comm(comm: CollectivesRecord | None, record: TrainRecord, n: int, gathered: bool) -> Comm | None:
    """FSDP2's collectives at world size n from the commbench record's parameter all-gather and
    gradient reduce-scatter (measured at the gradient's size); None where the record lacks them.
    The parameters are gathered in the training's precision (bf16 on a GPU: half the fp32 bytes)."""
    summary = comm.summary if comm else {}
    ag, rs = summary.get("parameter_all_gather"), summary.get("gradient_reduce_scatter")
    if not ag or not rs or not ag.get("busbw_gbps") or not rs.get("busbw_gbps"):
        return None
    grads = record.gradient_bytes
    params = grads // 2 if record.config.get("precision") == "bf16" or record.hardware.get("gpus") else grads
    t = fsdp_seconds(params, grads, n, ag["busbw_gbps"], rs["busbw_gbps"])
    gather = summary.get("loss_all_gather", {}).get("time_s", {}).get("median") or 0.0
    return Comm(t, min(t, rs["time_s"]["median"] * min(1.0, DDP_BUCKET_BYTES / grads)),
                GATHER_ROUNDS * gather if gathered else 0.0, min(ag["busbw_gbps"], rs["busbw_gbps"]),
                f"{layout.comm(n)}: parameter all-gather {ag['busbw_gbps']:.2f} GB/s and gradient reduce-scatter "
                f"{rs['busbw_gbps']:.2f} GB/s busbw, {fsdp_bytes(params, grads, n) / 1e6:.0f} MB per rank per step")


def measured_compute_factor(rank_compute: RankComputeRecord | None, n: int, hardware: float,
                            on_gpu: bool) -> dict[str, Any] | None:
    """One rank's compute at world size n over the 1-rank compute, from tier1.stages.rank_compute's record,
    measured side by side in one process. The rank ran alone with the hardware it would have had
    if it had it to itself (a whole GPU; cores/n threads); where n ranks share less than that
    (more ranks than GPUs or cores: they time-slice), the time grows by the shortfall. None where it
    was not measured, or measured beside other work (marked): the prediction then models the compute."""
    per = rank_compute.world_sizes if rank_compute and not rank_compute.marks else {}
    x, one = per.get(str(n)), per.get("1")
    if not x or not one or not one["compute_s"]["median"]:
        return None
    relative = x["compute_s"]["median"] / one["compute_s"]["median"]
    alone = 1.0 if on_gpu else float(x["threads"])
    factor = relative * alone / hardware if hardware < alone else relative
    return {"relative": relative, "factor": factor, "per_rank_batch": x["per_rank_batch"],
            "share_of_global_batch": x["share_of_global_batch"], "threads": x["threads"],
            "compute_s": x["compute_s"]["median"], "gpu_busy": x.get("gpu_busy")}


def world_size_rows(r, flag_below: float = FLAG_BELOW) -> list[dict[str, Any]]:
    """Per measured world size: predicted and measured step parts and speedups, the ratio, the
    flag and the gap's largest term. `r` is tier1.report.collect.Results."""
    if 1 not in r.train:
        return []
    one = r.train[1]
    base = baseline(one)
    if base is None:
        return []
    on_gpu, gpus, cores = _hardware(one, r.preflight)
    share1 = hardware_share(1, on_gpu, gpus, cores, _threads(one))
    g1 = one.objective.get("global_batch") or 1
    out = []
    for n, rec in sorted(r.train.items()):
        g = rec.objective.get("global_batch") or g1
        share = hardware_share(n, on_gpu, gpus, cores, _threads(rec))
        work, slowdown = g / g1 / n, share1 / share
        comm = measured_comm(r.comm.get(n), rec, n)
        rank = measured_compute_factor(r.rank_compute, n, share, on_gpu)
        pred = predict_step(base, n, work, slowdown, comm, rank["factor"] if rank else None)
        pred_speedup = predicted_speedup(base, pred["step_s"], g / g1)
        d = rec.decomposition
        step = (d or {}).get("step_s") or rec.steady_step_s
        measured = predicted_speedup(base, step, g / g1) if step else None
        ratio = measured / pred_speedup if measured and pred_speedup else None
        marks = [f"{n}-rank run: {m}" for m in rec.marks]
        marks += [f"1-rank run: {m}" for m in one.marks] if n != 1 else []
        uncertainty = noise.ratio_uncertainty(one, rec) if n != 1 else None
        flagged, judgement = noise.judge(ratio, flag_below, uncertainty)
        if marks or n == 1:
            flagged, judgement = None, "not judged (marked)" if marks else "n/a"
        term = largest_gap(d["seconds"], pred["seconds"]) if d and flagged else None
        out.append({
            "world_size": n, "predicted": pred, "predicted_speedup": pred_speedup,
            "measured_step_speedup": measured, "measured_step_s": step, "measured": d,
            "ratio": ratio, "flagged": flagged, "judgement": judgement, "uncertainty": uncertainty,
            "marks": marks, "largest_gap_term": term,
            "comm": comm, "work": work, "slowdown": slowdown, "hardware_share": share, "rank_compute": rank,
            "compute_factor": rank["factor"] if rank else work * slowdown,
            "on_gpu": on_gpu, "gpus": gpus, "cores": cores, "threads": _threads(rec),
            "gradient_bytes": rec.gradient_bytes,
            "why": explain(term, n, {**d, "compute_measured_alone": rank is not None}, pred, comm, on_gpu, cores,
                           _threads(rec), rec.gradient_bytes) if term else None,
        })
    return out


def explain(term: str, n: int, measured: dict, pred: dict, comm: Comm | None, on_gpu: bool, cores: int,
            threads: int | None, gradient_bytes: int | None) -> str:
    """The gap's largest term in words: its share of the step, measured beside predicted, and why."""
    m, p = measured["seconds"][term], pred["seconds"][term]
    share = m / measured["step_s"] if measured.get("step_s") else None
    head = (f"{LABELS[term]}: {100 * share:.0f}% of the {n}-rank step" if share is not None else LABELS[term]) + \
           f" ({m:.3f} s measured, {p:.3f} s predicted)"
    if term == "exposed_comm" and comm is not None:
        bw = f"bus bandwidth {comm.busbw_gbps:.2f} GB/s" if comm.busbw_gbps else "bus bandwidth unknown"
        return (f"{head}; {bw} at the {(gradient_bytes or 0) / 1e6:.0f} MB gradient makes one all-reduce "
                f"{comm.allreduce_s:.3f} s, of which backward was predicted to hide {pred['hidden_by_backward_s']:.3f} s; "
                f"more was exposed than that, so less overlapped or the links were slower during training "
                f"than in the benchmark")
    if term == "compute":
        if not on_gpu:
            return (f"{head}; {n} ranks share {cores} CPU cores ({threads} thread(s) each): per-rank compute "
                    f"shrinks at best with the cores each rank has, and grew more than that")
        return (f"{head}; per-rank compute grew past the one measured alone at this per-rank batch "
                "(tier1.stages.rank_compute): the ranks slowed each other (shared host, memory bandwidth, clocks)"
                if measured.get("compute_measured_alone") else
                f"{head}; per-rank compute did not shrink with the per-rank batch: a fixed per-step cost each rank "
                "pays (host, launches, set-up) or small batches using the GPU less well; the per-rank compute "
                "measurement (rank_compute.json) tells which")
    if term == "stragglers":
        ranks = measured.get("per_rank", {}).get("compute_s") or []
        spread = f" (ranks' compute {min(ranks):.3f}-{max(ranks):.3f} s)" if ranks else ""
        return f"{head}; the slowest rank held the others back{spread}"
    if term == "data":
        return f"{head}; building and copying batches on the host took longer than its share of the 1-rank time"
    if term == "optimizer":
        return f"{head}; every rank updates all parameters, and it took longer than at 1 rank"
    return f"{head}; time outside the measured parts (loss logging, scheduler, Python, waiting)"


def projection_rows(r, internode_busbw_gbps: float | None = None,
                    targets: tuple[int, ...] = PROJECT_TO) -> list[dict[str, Any]]:
    """Projected speedups at world sizes beyond those measured, on GPUs only (one per rank): the
    1-rank step, and the bus bandwidth measured at the largest world size, or `internode_busbw_gbps`
    for world sizes beyond the machine's GPUs when the user states it. Always a projection."""
    if 1 not in r.train or len(r.train) < 2:
        return []
    largest = max(r.train)
    rec = r.train[largest]
    on_gpu, gpus, _ = _hardware(rec, r.preflight)
    if not on_gpu or gpus < largest:
        return []  # ranks sharing cores or devices tell nothing about per-device step time
    base = baseline(r.train[1])
    comm = measured_comm(r.comm.get(largest), rec, largest)
    if base is None or comm is None or not comm.busbw_gbps:
        return []
    machine_gpus = ((r.preflight.gpu if r.preflight else None) or {}).get("count") or gpus
    nbytes = rec.gradient_bytes
    g1 = r.train[1].objective.get("global_batch") or 1
    weak = rec.objective.get("global_batch", g1) != g1
    gather_per_n = comm.gather_s  # small; kept at the largest measured world size's cost
    out = []
    for t in (x for x in targets if x > largest):
        beyond = t > machine_gpus
        if beyond and internode_busbw_gbps:
            bw, source = internode_busbw_gbps, f"internode_busbw_gbps = {internode_busbw_gbps:g} GB/s (config)"
        else:
            bw = comm.busbw_gbps
            source = (f"{bw:.2f} GB/s measured within the node at {largest} ranks"
                      + ("; assumes links between nodes as fast (set internode_busbw_gbps)" if beyond else ""))
        c = Comm(ring_seconds(nbytes, t, bw), ring_seconds(min(nbytes, DDP_BUCKET_BYTES), t, bw), gather_per_n, bw, source)
        ratio = t if weak else 1
        pred = predict_step(base, t, ratio / t, 1.0, c)
        out.append({"world_size": t, "speedup": predicted_speedup(base, pred["step_s"], ratio), "bus_bandwidth_GBps": bw,
                    "from_world_size": largest, "beyond_machine": beyond, "source": source, "predicted": pred})
    return out
