"""The one clock every timed figure of tier1 is read from.

- `mark`/`between` (and `Marks`, bound to one device): points in the device's own timeline. On a GPU they are CUDA events (the kernels' own
  time, not the host's launch time), read only when asked for, so marking never waits for the
  device; on a CPU the host clock, where the host is the device.
- `Stopwatch`: the work queued inside a `with` block, timed with two marks; it waits for the
  device at the block's end.
- `window`: a timed window as every stage measures one: a barrier so all ranks start together,
  the disturbance watch (tier1.measure.disturbance), the host clock, and a barrier so the window
  ends when the slowest rank is done.
- `time_calls`: a collective's calls, each between a barrier and the stopwatch's end;
  `time_allreduce`, the median all-reduce of a gradient's size that way.
- `now`/`synced`: the host clock, for spans the host itself decides (start-up, loading, a span
  closed by `synced` after the device has caught up).

torch is imported only inside what needs it (the window and the host clock do not).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass


def now() -> float:
    """The host clock, in seconds (monotonic; only differences mean anything)."""
    return time.perf_counter()


def synced(device) -> float:
    """The host clock once the device has run all it was given, so a span closed here covers that work."""
    from tier1.runtime import device as devices

    devices.synchronize(device)
    return now()


def mark(cuda: bool):
    """A mark in the device's timeline: a recorded CUDA event on a GPU (no wait), the host clock on a CPU."""
    if not cuda:
        return now()
    import torch

    event = torch.cuda.Event(enable_timing=True)
    event.record()
    return event


def between(start, end) -> float:
    """Seconds from mark `start` to mark `end`; on a GPU this waits for `end` to be reached."""
    if isinstance(start, float):
        return end - start
    end.synchronize()
    return start.elapsed_time(end) / 1000.0


class Marks:
    """Marks in one device's timeline: CUDA events on a GPU, the host clock on a CPU."""

    def __init__(self, device_type: str):
        self.cuda = device_type == "cuda"

    def mark(self):
        return mark(self.cuda)

    seconds = staticmethod(between)


class Stopwatch:
    """Times the work queued inside a `with` block: CUDA events on a GPU, the host clock on a
    CPU. `seconds` is read after the block (on a GPU the block's end waits for the device)."""

    def __init__(self, device):
        self.marks = Marks(device.type)
        self.seconds: float | None = None

    def __enter__(self) -> Stopwatch:
        self._start = self.marks.mark()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = self.marks.seconds(self._start, self.marks.mark())


@dataclass
class Window:
    """What a timed window measured: `seconds` on the host clock between its barriers (None until
    it ends), and `disturbance`, the watch's record of what else ran (disturbance.Watch.record)."""

    seconds: float | None = None
    disturbance: dict | None = None


@contextlib.contextmanager
def window(device, barriers: bool = True) -> Iterator[Window]:
    """A timed window: barrier, disturbance watch, clock ... barrier, clock, watch. The closing
    barrier makes the window end when the slowest rank's work is done (with one process, or
    `barriers=False`, there is none and the block must wait for its own device work)."""
    from tier1.measure import disturbance
    from tier1.runtime import distributed

    if barriers:
        distributed.barrier()
    result = Window()
    with disturbance.Watch(device) as watch:
        started = now()
        yield result
        if barriers:
            distributed.barrier()
        result.seconds = now() - started
    result.disturbance = watch.record


def time_calls(call: Callable[[], object], device, warmup: int, iters: int) -> list[float]:
    """This rank's seconds for each of `iters` calls of a collective, after `warmup` untimed
    ones; a barrier before each timed call, so that all ranks enter it together, and the
    stopwatch's end after it (nccl-tests' way)."""
    from tier1.runtime import device as devices
    from tier1.runtime import distributed

    for _ in range(warmup):
        call()
    devices.synchronize(device)
    times = []
    for _ in range(iters):
        distributed.barrier()
        with Stopwatch(device) as watch:
            call()
        times.append(watch.seconds)
    return times


def time_allreduce(numel: int, device, repeats: int = 5) -> float | None:
    """Median seconds to all-reduce `numel` fp32 values (the gradient exchange of one step) over
    `repeats` timed calls after one untimed call (time_calls); None without a group."""
    import torch
    import torch.distributed as dist

    from tier1.runtime import distributed

    if not distributed.active():
        return None
    buf = torch.ones(numel, dtype=torch.float32, device=device)
    return statistics.median(time_calls(lambda: dist.all_reduce(buf), device, 1, repeats))
