"""What bounds the step at each world size, in words: the GPU-busy share of the steady step and
the share of a rank's compute that does not shrink with its batch.

- GPU-busy share: kernel seconds per step at the rank's batch (tier1.stages.rank_compute, profiled
  outside every timed window) over the n-rank run's steady step. Under HOST_BOUND_BELOW the GPU
  idles most of the step: the host (Python, launches, syncs) or set-up bounds it.
- Fixed share: one rank's compute at its share w of the batch, relative to the whole batch's
  (r, measured side by side), read as r = f + (1 - f) w: f is the part of the step's compute that
  every rank pays whatever its batch. Above FIXED_ABOVE, N GPUs each pay most of the 1-GPU cost,
  and strong scaling cannot pay off at this batch.
On a CPU neither applies: ranks share the cores and there is no separate device to idle.
"""

from __future__ import annotations

from typing import Any

from tier1.measure import gpu_busy
from tier1.report import prediction

HOST_BOUND_BELOW = 0.5
FIXED_ABOVE = 0.5


def fixed_share(relative: float | None, work: float) -> float | None:
    """f in r = f + (1 - f) w, clamped to [0, 1]; None at w = 1 (weak scaling: the batch does not shrink)."""
    if relative is None or work >= 1:
        return None
    return min(1.0, max(0.0, (relative - work) / (1 - work)))


def busy_share(r, n: int) -> float | None:
    x = (r.rank_compute.world_sizes.get(str(n)) if r.rank_compute else None) or {}
    kernel = (x.get("gpu_busy") or {}).get("kernel_s_per_step")
    return gpu_busy.busy_share(kernel, r.train[n].steady_step_s if n in r.train else None)


def per_world_size(r) -> list[dict[str, Any]]:
    """Per world size: busy share, fixed share, whether host-bound, and the cause in words."""
    out = []
    for x in prediction.world_size_rows(r):
        n, rank = x["world_size"], x["rank_compute"]
        busy = busy_share(r, n) if x["on_gpu"] else None
        fixed = fixed_share(rank["relative"], x["work"]) if rank and x["on_gpu"] else None
        host = (busy is not None and busy < HOST_BOUND_BELOW) or (fixed is not None and fixed > FIXED_ABOVE)
        out.append({"world_size": n, "on_gpu": x["on_gpu"], "busy_share": busy, "fixed_share": fixed,
                    "host_bound": host if x["on_gpu"] else None, "rank_compute": rank, "work": x["work"],
                    "text": describe(n, busy, fixed, rank, x["work"]) if host else None})
    return out


def describe(n: int, busy: float | None, fixed: float | None, rank: dict | None, work: float) -> str:
    parts = []
    if busy is not None:
        parts.append(f"the GPU is busy {100 * busy:.0f}% of the {n}-GPU step")
    if rank is not None and fixed is not None:
        parts.append(f"compute at {_share(work)} of the batch is {rank['relative']:.2f} of the full batch's "
                     f"(ideal {work:.2f}): {100 * fixed:.0f}% of it is a fixed per-step cost")
    return ("host-bound: " + "; ".join(parts) + f"; {n} GPUs each pay the same fixed per-step cost; a larger "
            "per-GPU batch (or `compile`) raises this")


def sentence(r) -> str | None:
    """One sentence for the verdicts: the world sizes whose step is host-bound, or that none is;
    on a CPU, that it does not apply."""
    rows = [x for x in per_world_size(r) if x["world_size"] > 1]
    if not rows:
        return None
    if not rows[0]["on_gpu"]:
        return ("GPU-busy share: not applicable on a CPU rehearsal (ranks share the cores; there is no separate "
                "device to idle)")
    host = [x for x in rows if x["host_bound"]]
    if host:
        return "; ".join(f"{x['world_size']} GPUs: {x['text']}" for x in host)
    known = [x for x in rows if x["busy_share"] is not None or x["fixed_share"] is not None]
    if not known:
        return None
    return "compute-bound (the GPU busy most of the step, compute shrinking with the batch): " + "; ".join(
        f"{x['world_size']} GPUs: busy {_pct(x['busy_share'])}, fixed per-step share of compute {_pct(x['fixed_share'])}"
        for x in known)


def _share(work: float) -> str:
    inverse = round(1 / work) if work else None
    return f"1/{inverse}" if inverse and abs(1 / inverse - work) < 1e-9 else f"{work:.2f}"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"
