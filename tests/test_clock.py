"""tier1.measure.clock: the host-clock path on a CPU, the timed window's recipe, and (on a GPU)
CUDA events that time the kernels, not their launch."""

from __future__ import annotations

import time

import pytest
import torch

from tier1.measure import clock

CPU = torch.device("cpu")


def test_cpu_marks_are_the_host_clock():
    marks = clock.Marks("cpu")
    start = marks.mark()
    time.sleep(0.02)
    end = marks.mark()
    assert isinstance(start, float) and isinstance(end, float)
    assert marks.seconds(start, end) == end - start
    assert clock.between(start, end) >= 0.02  # a sleep lasts at least as long as asked


def test_cpu_stopwatch_covers_the_block():
    with clock.Stopwatch(CPU) as watch:
        assert watch.seconds is None  # read after the block
        time.sleep(0.02)
    assert watch.seconds >= 0.02


def test_window_is_barrier_watch_clock_barrier(monkeypatch):
    """The recipe every stage times a window with: barrier, disturbance watch, clock ... barrier,
    clock, watch; the window's seconds span the work and the closing barrier."""
    from tier1.measure import disturbance
    from tier1.runtime import distributed

    order = []
    monkeypatch.setattr(distributed, "barrier", lambda: order.append("barrier"))

    class Watch(disturbance.Watch):
        def __enter__(self):
            order.append("watch on")
            return super().__enter__()

        def __exit__(self, *exc):
            order.append("watch off")
            return super().__exit__(*exc)

    monkeypatch.setattr(disturbance, "Watch", Watch)
    with clock.window(CPU) as window:
        order.append("work")
        time.sleep(0.02)
        assert window.seconds is None and window.disturbance is None
    assert order == ["barrier", "watch on", "work", "barrier", "watch off"]
    assert window.seconds >= 0.02
    assert window.disturbance["wall_s"] >= window.seconds  # the watch holds the clock inside it


def test_window_without_barriers(monkeypatch):
    from tier1.runtime import distributed

    monkeypatch.setattr(distributed, "barrier", lambda: pytest.fail("no barrier asked for"))
    with clock.window(CPU, barriers=False) as window:
        pass
    assert window.seconds >= 0 and "wall_s" in window.disturbance


def test_synced_is_the_host_clock_after_the_device():
    before = clock.now()
    assert clock.synced(CPU) >= before


def test_time_calls_warms_then_times_each_call_after_a_barrier(monkeypatch):
    from tier1.runtime import distributed

    order = []
    monkeypatch.setattr(distributed, "barrier", lambda: order.append("barrier"))
    times = clock.time_calls(lambda: order.append("call"), CPU, warmup=2, iters=3)
    assert order == ["call", "call"] + ["barrier", "call"] * 3
    assert len(times) == 3 and all(t >= 0 for t in times)


def test_time_allreduce_needs_a_group():
    assert clock.time_allreduce(16, CPU) is None


@pytest.mark.gpu
def test_stopwatch_times_the_kernels_not_the_launch():
    device = torch.device("cuda", 0)
    a = torch.randn(4096, 4096, device=device)
    torch.cuda.synchronize()
    with clock.Stopwatch(device) as watch:
        for _ in range(20):
            a = a @ a
            a = a / a.norm()
    # 20 dense 4096^3 products are 2.7 TFLOP: no card does them in under 0.1 ms
    assert watch.seconds > 1e-4


@pytest.mark.gpu
def test_cuda_marks_do_not_wait_for_the_device():
    """A mark is a recorded event: taking one leaves the queued work running; reading the span
    waits for it and gives the kernels' time."""
    device = torch.device("cuda", 0)
    marks = clock.Marks("cuda")
    a = torch.randn(4096, 4096, device=device)
    torch.cuda.synchronize()
    start = marks.mark()
    for _ in range(20):
        a = a @ a
        a = a / a.norm()
    end = marks.mark()
    assert isinstance(end, torch.cuda.Event)
    assert not end.query()  # 2.7 TFLOP are still queued when the host takes the mark
    assert marks.seconds(start, end) > 1e-4
    assert end.query()
