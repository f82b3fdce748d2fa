"""commbench: the collectives training uses, measured as nccl-tests measures them, on N ranks.

    torchrun --standalone --nproc_per_node N -m tier1.stages.commbench --config '<json>' --out COMM.json

Two sweeps of float32 messages, the same code on gloo (CPU) and NCCL (GPU):
- all-reduce, as DDP reduces the gradients: 1 MiB doubling up to the gradient size (the
  model's trainable parameters x 4 bytes), plus exactly the gradient size; over NCCL the doubling
  goes on to 1 GiB, where bus bandwidth has usually levelled off (not over gloo, which ranks
  sharing one GPU use: each call goes through host memory, and 1 GiB calls would take minutes);
- all-gather, as the loss gathers the positives' embeddings: the per-rank block (per-device batch
  x embedding width x 4 bytes) and 4, 16 and 64 times it. This is the forward half; the
  gather's backward all-reduces a gradient of the gathered size (n x the block).
For each size: untimed warm-up calls, then timed calls, each after a barrier, timed with CUDA
events on a GPU and the host clock on a CPU (tier1.measure.clock's stopwatch). A call's time is its slowest rank's (the collective
is done when every rank has its result); a size's time is the median over calls.

Plus a dense matmul in the training precision on every rank at once (one rank at a time where the
ranks share one GPU, so each figure is the GPU's, not a share of it), beside the datasheet peak:
the compute side of the same question. It lives here, not in the preflight, because it must
not run beside another timed job.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
from pathlib import Path

import torch
import torch.distributed as dist

from tier1.config import CommbenchConfig, config_hash
from tier1.measure import clock, disturbance, flops
from tier1.records import CollectivesRecord
from tier1.runtime import cli, distributed, provenance
from tier1.runtime import device as devices
from tier1.runtime.cli import run_main
from tier1.runtime.distributed import Context
from tier1.runtime.provenance import available_cores

log = logging.getLogger("tier1.stages.commbench")

MiB = 2**20
GB = 1e9  # bandwidths in GB/s of 1e9 bytes, as nccl-tests prints them
ELEMENT_BYTES = 4  # float32: DDP's gradient buckets and the gathered embeddings
GPU_SWEEP_TO = 2**30  # on GPUs the all-reduce sweep continues to 1 GiB (nccl-tests' plateau region)
ALLGATHER_MULTIPLES = (1, 4, 16, 64)

# Warm-up and timed calls per size. nccl-tests' defaults (5 and 20) on GPUs. On a CPU, gloo
# moves well under a GB/s between processes, so calls above 8 MiB get fewer repeats (never fewer
# than 5): the CPU sweep stays within seconds per world size.
GPU_WARMUP, GPU_ITERS = 5, 20
CPU_WARMUP, CPU_ITERS, CPU_MIN_ITERS, CPU_FULL_ITERS_UP_TO = 1, 10, 5, 8 * MiB

# -- the definitions (nccl-tests, doc/PERFORMANCE.md and src/all_reduce.cu, src/all_gather.cu) --
#
# algbw = S / t, with S the operation's size in bytes:
#   all-reduce: S = the buffer every rank reduces (count x element size);
#   all-gather: S = the gathered output, i.e. n x the per-rank block (nccl-tests computes it as
#               sendcount x element size x nranks);
#   reduce-scatter: S = the reduced input, i.e. n x the per-rank output (recvcount x size x nranks).
# busbw = algbw x factor, the factor making it comparable with the hardware's link bandwidth
# whatever the rank count n:
#   all-reduce: 2(n-1)/n   (n-1 additions and n assignments per element: 2(n-1) transfers over n links)
#   all-gather: (n-1)/n    (the assignment half of an all-reduce)
#   reduce-scatter: (n-1)/n (the reduction half)
# Like nccl-tests, the all-reduce factor is (n-1)/(n+1) instead when NCCL_ALGO is exactly "NVLS"
# or "NVLSTREE" (in-switch reduction); NCCL choosing NVLS by itself does not change the factor.
# nccl-tests times back-to-back calls and averages over calls and ranks; here each call is timed
# between barriers and the median is reported, with min, max and mean beside it.
IN_NETWORK_ALGOS = ("NVLS", "NVLSTREE")


def busbw_factor(collective: str, world_size: int, nccl_algo: str | None = None) -> float:
    """nccl-tests' correction from algbw to busbw for `collective` on `world_size` ranks."""
    n = world_size
    if collective == "all_reduce":
        return (n - 1) / (n + 1) if nccl_algo in IN_NETWORK_ALGOS else 2 * (n - 1) / n
    if collective in ("all_gather", "reduce_scatter"):
        return (n - 1) / n
    raise ValueError(f"no bus bandwidth factor for {collective!r}")


def algbw(nbytes: int, seconds: float) -> float:
    """Algorithm bandwidth in GB/s: the operation's bytes S over its time."""
    return nbytes / seconds / GB


def busbw(collective: str, nbytes: int, seconds: float, world_size: int, nccl_algo: str | None = None) -> float:
    """Bus bandwidth in GB/s: algbw times the collective's factor for n ranks (nccl-tests)."""
    return algbw(nbytes, seconds) * busbw_factor(collective, world_size, nccl_algo)


def allreduce_sizes(gradient_bytes: int, up_to: int | None = None, start: int = MiB) -> list[int]:
    """Message sizes of the all-reduce sweep: `start` doubling while below `up_to` (default: the
    gradient size), plus the gradient size and `up_to` themselves."""
    top = max(up_to or gradient_bytes, gradient_bytes)
    sizes = {gradient_bytes, top}
    size = start
    while size < top:
        sizes.add(size)
        size *= 2
    return sorted(sizes)


def allgather_sizes(block_bytes: int, world_size: int, multiples: tuple[int, ...] = ALLGATHER_MULTIPLES) -> list[int]:
    """Total output sizes (nccl-tests' S) of the all-gather sweep: n x the per-rank block, for
    the block the loss gathers and a few larger ones."""
    return [block_bytes * m * world_size for m in multiples]


def over_nccl(ctx: Context) -> bool:
    """Whether the collectives run over NCCL: on GPUs, unless the ranks share one (gloo)."""
    return ctx.device.type == "cuda" and not ctx.shared_gpu


def iterations(nbytes: int, nccl: bool) -> tuple[int, int]:
    """(warm-up calls, timed calls) for a message of `nbytes`."""
    if nccl:
        return GPU_WARMUP, GPU_ITERS
    scaled = CPU_ITERS * CPU_FULL_ITERS_UP_TO // max(nbytes, 1)
    return CPU_WARMUP, max(CPU_MIN_ITERS, min(CPU_ITERS, scaled))


def call_times(per_rank: list[list[float]]) -> list[float]:
    """Each call's time: the slowest rank's (the collective is complete only when all are)."""
    return [max(call) for call in zip(*per_rank)]


def summarise(collective: str, nbytes: int, world_size: int, per_rank: list[list[float]], warmup: int,
              nccl_algo: str | None = None) -> dict:
    """One row of a sweep: sizes, the calls' times, and bandwidths from the median time."""
    times = call_times(per_rank)
    median = statistics.median(times)
    per_rank_bytes = nbytes // world_size if collective in ("all_gather", "reduce_scatter") else nbytes
    factor = busbw_factor(collective, world_size, nccl_algo)
    return {
        "bytes": nbytes,
        "bytes_per_rank": per_rank_bytes,
        "elements_per_rank": per_rank_bytes // ELEMENT_BYTES,
        "warmup": warmup,
        "iters": len(times),
        "time_s": {"median": median, "min": min(times), "max": max(times), "mean": statistics.fmean(times)},
        "times_s": times,
        "algbw_gbps": algbw(nbytes, median),
        "busbw_factor": factor,
        "busbw_gbps": algbw(nbytes, median) * factor,
    }


# -- measuring --------------------------------------------------------------------------------

def measure(collective: str, nbytes: int, ctx: Context) -> dict:
    """Time one collective at one size on every rank; the row (on every rank)."""
    n = ctx.world_size
    if collective == "all_reduce":
        buf = torch.zeros(nbytes // ELEMENT_BYTES, dtype=torch.float32, device=ctx.device)

        def call():
            dist.all_reduce(buf)
    elif collective == "all_gather":
        # the loss's call: dist.all_gather into a list of per-rank tensors
        block = torch.zeros(nbytes // n // ELEMENT_BYTES, dtype=torch.float32, device=ctx.device)
        parts = [torch.empty_like(block) for _ in range(n)]

        def call():
            dist.all_gather(parts, block)
    elif collective == "reduce_scatter":
        # FSDP2's gradient call: each rank's whole gradient in, its reduced 1/n shard out
        whole = torch.zeros(nbytes // ELEMENT_BYTES // n * n, dtype=torch.float32, device=ctx.device)
        shard = torch.empty(whole.numel() // n, dtype=torch.float32, device=ctx.device)

        scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor  # renamed in torch 2.13

        def call():
            scatter(shard, whole)
    else:
        raise ValueError(f"unknown collective {collective!r}")
    warmup, iters = iterations(nbytes, over_nccl(ctx))
    mine = clock.time_calls(call, ctx.device, warmup, iters)
    algo = os.environ.get("NCCL_ALGO") if over_nccl(ctx) else None
    return summarise(collective, nbytes, n, distributed.all_gather_objects(mine), warmup, algo)


def matmul_probe(ctx: Context, dtype: torch.dtype) -> dict:
    """Achieved dense matmul FLOP/s on every rank at once (each with its own share of the cores
    on a CPU; one rank at a time on a GPU the ranks share), beside the datasheet peak of the card
    and precision."""
    cuda = ctx.device.type == "cuda"
    size, repeats = (8192, 10) if cuda else (1024, 5)
    in_turn = cuda and not over_nccl(ctx)
    achieved = None
    for turn in range(ctx.world_size if in_turn else 1):
        distributed.barrier()
        if not in_turn or turn == ctx.rank:
            achieved = flops.measured_matmul_peak(ctx.device, dtype, size=size, repeats=repeats)
    per_rank = distributed.all_gather_objects(achieved)
    name = devices.device_name(ctx.device)
    peak, source = flops.peak_flops(name, devices.dtype_name(dtype)) if cuda else (None, None)
    median = statistics.median(per_rank)
    return {
        "dtype": devices.dtype_name(dtype), "size": size, "repeats": repeats, "threads_per_rank": ctx.threads,
        "ranks_in_turn": in_turn,
        "achieved_tflops_per_rank": [f / 1e12 for f in per_rank], "achieved_tflops_median": median / 1e12,
        "peak_tflops": peak / 1e12 if peak else None,
        "peak_source": source or ("not in the datasheet table" if cuda else "n/a (no datasheet peak for a CPU)"),
        "fraction_of_peak": median / peak if peak else None,
    }


def benchmark(ctx: Context, gradient_bytes: int, block_bytes: int, dtype: torch.dtype,
              up_to: int | None = None, matmul: bool = True) -> dict:
    """Both sweeps (and the matmul probe) on the ranks of `ctx`; the same dict on every rank but
    `work_s`, this rank's seconds of measuring (rank 0's is the one written)."""
    started = clock.now()
    if up_to is None:
        up_to = max(GPU_SWEEP_TO, gradient_bytes) if over_nccl(ctx) else gradient_bytes
    reduce_sizes = allreduce_sizes(gradient_bytes, up_to)
    gather_sizes = allgather_sizes(block_bytes, ctx.world_size)

    def sweep(collective: str, sizes: list[int], role: str, role_size: int) -> list[dict]:
        rows = []
        for size in sizes:
            row = measure(collective, size, ctx)
            row["role"] = role if size == role_size else None
            rows.append(row)
            if ctx.is_main:
                log.info("%s %11d B: median %.3g s, algbw %.3g GB/s, busbw %.3g GB/s", collective, size,
                         row["time_s"]["median"], row["algbw_gbps"], row["busbw_gbps"])
        return rows

    with clock.window(ctx.device) as window:
        reduce_rows = sweep("all_reduce", reduce_sizes, "gradient", gradient_bytes)
        gather_rows = sweep("all_gather", gather_sizes, "loss embeddings", block_bytes * ctx.world_size)
        # FSDP2's collectives at the model's size: parameters all-gathered (forward and backward),
        # gradients reduce-scattered (tier1.report.prediction.fsdp_seconds)
        gather_rows += sweep("all_gather", [gradient_bytes], "parameters", gradient_bytes)
        scatter_rows = sweep("reduce_scatter", [gradient_bytes], "gradient", gradient_bytes)
        probe = matmul_probe(ctx, dtype) if matmul else None
    windows = distributed.all_gather_objects(window.disturbance)
    disturbed_by, marks = disturbance.judge(windows, available_cores())
    gradient_row = next(r for r in reduce_rows if r["role"] == "gradient")
    loss_row = next(r for r in gather_rows if r["role"] == "loss embeddings")  # first: the loss's size
    work_s = clock.now() - started
    return {
        "world_size": ctx.world_size,
        "work_s": work_s,  # the report's pipeline overhead counts the rest of the job
        "backend": dist.get_backend(),
        "device_type": ctx.device.type,
        "device_names": distributed.all_gather_objects(devices.device_name(ctx.device)),
        "threads_per_rank": ctx.threads,
        "dtype": "float32",
        "definitions": {
            "source": "nccl-tests doc/PERFORMANCE.md; src/all_reduce.cu and src/all_gather.cu (AllReduceGetBw, AllGatherGetBw)",
            "units": "GB/s of 1e9 bytes",
            "algbw": "S / t",
            "busbw_all_reduce": "algbw x 2(n-1)/n, S = the reduced buffer ((n-1)/(n+1) when NCCL_ALGO is NVLS or NVLSTREE)",
            "busbw_all_gather": "algbw x (n-1)/n, S = the gathered output (n x the per-rank block)",
            "busbw_reduce_scatter": "algbw x (n-1)/n, S = the reduced input (n x the per-rank output)",
            "time": "per call, the slowest rank's time between a barrier and the call's end "
                    "(CUDA events on GPU, the host clock on CPU); bandwidths from the median call",
        },
        "gradient_bytes": gradient_bytes,
        "embedding_block_bytes": block_bytes,
        "all_reduce": reduce_rows,
        "all_gather": gather_rows,
        "reduce_scatter": scatter_rows,
        "summary": {
            "gradient_all_reduce": {k: gradient_row[k] for k in ("bytes", "time_s", "algbw_gbps", "busbw_gbps")},
            "loss_all_gather": {k: loss_row[k] for k in ("bytes", "bytes_per_rank", "time_s", "algbw_gbps", "busbw_gbps")},
            "all_reduce_busbw_max_gbps": max(r["busbw_gbps"] for r in reduce_rows),
            "parameter_all_gather": _summary(next(r for r in gather_rows if r["role"] == "parameters")),
            "gradient_reduce_scatter": _summary(scatter_rows[0]),
        },
        "matmul": probe,
        "disturbance": disturbed_by,
        "marks": marks,
        "rank_windows": windows,
    }


def _summary(row: dict) -> dict:
    return {k: row[k] for k in ("bytes", "time_s", "algbw_gbps", "busbw_gbps")}


def model_sizes(spec: str, trust_remote_code: bool = False) -> tuple[int, int, int]:
    """(trainable parameters, gradient bytes, embedding width) of the model training uses."""
    from tier1.encoder import model

    encoder, _ = model.load(spec, trust_remote_code=trust_remote_code)
    params = sum(p.numel() for p in encoder.parameters() if p.requires_grad)
    return params, params * ELEMENT_BYTES, int(encoder.transformer.config.hidden_size)


def commbench(cfg: CommbenchConfig, ctx: Context, out: Path, max_bytes: int | None) -> None:
    """Measure on every rank; rank 0 writes the record to `out`."""
    started_at = provenance.utc_now()
    if ctx.world_size < 2:
        raise SystemExit("commbench measures collectives between ranks: run it on 2 or more ranks")
    # one rank loads the model; all need its sizes
    sizes = distributed.broadcast_object(model_sizes(cfg.model, cfg.trust_remote_code) if ctx.is_main else None)
    params, gradient_bytes, hidden = sizes
    per_device = cfg.per_device_batch(ctx.world_size)
    dtype = devices.autocast_dtype(cfg.precision, ctx.device) or torch.float32
    result = benchmark(ctx, gradient_bytes, per_device * hidden * ELEMENT_BYTES, dtype, max_bytes)
    if ctx.is_main:
        settings = dataclasses.asdict(cfg)
        CollectivesRecord(stage="commbench", started_at=started_at, **result,
                          model={"spec": cfg.model, "trainable_parameters": params, "embedding_width": hidden,
                                 "per_device_batch": per_device},
                          config=settings, **provenance.stamp(config_hash(settings)),
                          finished_at=provenance.utc_now()).write(out)
        s = result["summary"]["gradient_all_reduce"]
        log.info("x%d %s: gradient all-reduce (%d B) %.3g s, busbw %.3g GB/s; %s", ctx.world_size,
                 result["backend"], gradient_bytes, s["time_s"]["median"], s["busbw_gbps"],
                 "; ".join(result["marks"]) or "clean")


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-bytes", type=int, default=None,
                        help="largest all-reduce size (default: the gradient size on CPU, 1 GiB or the gradient on GPU)")
    args = parser.parse_args(argv)
    with cli.stage(args, "commbench") as run:
        commbench(run.cfg, run.ctx, args.out, args.max_bytes)


if __name__ == "__main__":
    run_main(main)
