"""How much of a step the GPU spends running kernels: torch.profiler over a few untimed steps.

The kernels' time is the union of their intervals on the device (overlapping kernels on several
streams count once). Divided by a steady step measured without the profiler, it gives the GPU-busy
share of that step; far under 1, the step is bound by the host (Python, launches, syncs) or by
set-up, and N GPUs each pay that fixed cost. CUDA only: a CPU has no separate device to idle.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from tier1.measure import clock


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by (start, end) intervals, overlaps counted once (same unit in and out)."""
    total, end = 0.0, None
    for start, stop in sorted(intervals):
        if end is None or start > end:
            total += stop - start
            end = stop
        elif stop > end:
            total += stop - end
            end = stop
    return total


def kernel_intervals(prof) -> list[tuple[float, float]]:
    """(start, end) in microseconds of every device-side event the profiler recorded, but the
    GPU spans of annotated ranges (a record_function such as DDP's forward), which cover the idle
    gaps between their kernels too (torch's own device-time totals leave them out likewise)."""
    cuda = torch.autograd.DeviceType.CUDA
    return [(e.time_range.start, e.time_range.end) for e in prof.events()
            if e.device_type == cuda and not getattr(e, "is_user_annotation", False)]


def profile(run: Callable[[], object], steps: int) -> dict:
    """Run `run` (which does `steps` steps) once under the profiler: kernel seconds per step and
    the profiled wall per step (the profiler slows the host, so the report divides the kernel time
    by a step measured without it)."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = clock.now()
        run()
        torch.cuda.synchronize()
        wall = clock.now() - t0
    kernel_s = union_seconds(kernel_intervals(prof)) / 1e6
    return {"steps": steps, "kernel_s_per_step": kernel_s / steps, "profiled_wall_s_per_step": wall / steps,
            "method": "torch.profiler, CUDA kernels' union of intervals over untimed forward+backward steps"}


def busy_share(kernel_s_per_step: float | None, step_s: float | None) -> float | None:
    """The share of a steady step (measured without the profiler) the GPU spends in kernels."""
    if not kernel_s_per_step or not step_s:
        return None
    return min(1.0, kernel_s_per_step / step_s)
