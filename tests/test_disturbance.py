"""Disturbance marks from hand-made window records: quiet runs stay clean, busy ones are flagged."""

from __future__ import annotations

import pytest

from tier1.measure import disturbance
from tier1.measure.gpu_activity import NOT_A_GPU


def window(pid, wall=10.0, own=9.5, busy=19.2, steal=0.0, total=20.0, gpu=None):
    return {"pid": pid, "wall_s": wall, "own_cpu_s": own, "machine_busy_s": busy, "steal_s": steal,
            "machine_total_s": total, "gpu": gpu or {"sampled": False, "not_applicable": NOT_A_GPU}}


def test_a_quiet_machine_is_clean_and_sibling_ranks_do_not_count():
    # two ranks, each busy 9.5 of 10 s on a 2-core machine; 0.2 s of other work (Snakemake polling)
    summary, marks = disturbance.judge([window(1), window(2)], cores=2)
    assert marks == []
    assert abs(summary["other_processes_cores"] - 0.02) < 1e-9


def test_a_cpu_hog_beside_the_run_is_flagged():
    # one rank using 1 core for 10 s while the machine's 2 cores were busy throughout
    summary, marks = disturbance.judge([window(1, own=10.0, busy=20.0)], cores=2)
    assert summary["other_processes_cores"] == 1.0
    assert marks == ["disturbed: other processes used 1.00 of 2 cores during the timed window"]


def test_steal_and_gpu_neighbours_and_throttling_are_flagged():
    gpu = {"sampled": True, "other_process_ids": [2, 4242], "throttle_reasons": ["hardware thermal slowdown"]}
    _, marks = disturbance.judge([window(1, steal=2.0, gpu=gpu), window(2)], cores=2)
    assert "disturbed: the hypervisor took 10% of the CPU time (steal)" in marks
    assert "disturbed: rank 0's GPU also ran process(es) [4242]" in marks  # pid 2 is rank 1, not a stranger
    assert "disturbed: rank 0's GPU throttled (hardware thermal slowdown)" in marks


def test_repeats_add_up():
    combined = disturbance.combine([window(1, wall=5, own=4, busy=5), window(1, wall=5, own=4, busy=9)])
    assert combined["wall_s"] == 10 and combined["own_cpu_s"] == 8 and combined["machine_busy_s"] == 14


def test_the_watch_measures_its_own_process():
    import torch

    with disturbance.Watch(torch.device("cpu")) as watch:
        sum(i * i for i in range(300_000))
    r = watch.record
    assert r["wall_s"] > 0 and r["own_cpu_s"] > 0 and r["gpu"] == {"sampled": False, "not_applicable": NOT_A_GPU}
    assert "cpu_unobserved" not in r  # /proc/stat was read


class FakeNvml:
    """pynvml as far as the sampler calls it; `fail_at` (1-based) makes that sample raise, as the
    H200's first sample did."""

    NVML_CLOCK_SM = 1

    def __init__(self, fail_at: int | None = None, init_error: Exception | None = None):
        self.calls, self.fail_at, self.init_error = 0, fail_at, init_error

    def nvmlInit(self):
        if self.init_error:
            raise self.init_error

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return uuid

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        self.calls += 1
        if self.fail_at is not None and self.calls >= self.fail_at:
            raise RuntimeError("NVML_ERROR_UNKNOWN")
        return []

    nvmlDeviceGetGraphicsRunningProcesses = staticmethod(lambda h: [])
    nvmlDeviceGetCurrentClocksEventReasons = staticmethod(lambda h: 0)
    nvmlDeviceGetClockInfo = staticmethod(lambda h, kind: 1980)

    @staticmethod
    def nvmlDeviceGetUtilizationRates(h):
        class Rates:
            gpu = 97
        return Rates()


def gpu_window(monkeypatch, nvml: FakeNvml) -> dict:
    """A Watch record of a short window on a (pretended) CUDA device sampled through `nvml`."""
    import sys
    import time

    import torch

    from tier1.measure import gpu_activity

    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    monkeypatch.setattr(gpu_activity, "device_uuid", lambda device: "GPU-fake")
    watch = disturbance.Watch(torch.device("cuda", 0))
    watch.gpu.interval = 0.01
    with watch:
        time.sleep(0.2)
    return watch.record


def test_a_watched_gpu_window_is_sampled(monkeypatch):
    gpu = gpu_window(monkeypatch, FakeNvml())["gpu"]
    assert gpu["sampled"] and gpu["samples"] >= 1 and "unobserved" not in gpu and gpu["sm_clock_mhz_min"] == 1980
    _, marks = disturbance.judge([window(1, busy=9.7, gpu=gpu)], cores=2)
    assert marks == []


def test_a_query_that_fails_on_the_first_sample_makes_the_window_unobserved_not_clean(monkeypatch):
    record = gpu_window(monkeypatch, FakeNvml(fail_at=1))
    gpu = record["gpu"]
    why = "other processes: NVML sample 1 failed (RuntimeError: NVML_ERROR_UNKNOWN)"
    assert gpu["sampled"] is False and gpu["unobserved"] == why
    assert gpu["samples"] >= 2 and gpu["sm_clock_mhz_min"] == 1980  # the other quantities went on
    # repeats combined keep it, and the judgement draws no clean verdict from it
    clean = {**gpu, "sampled": True}
    del clean["unobserved"]
    combined = disturbance.combine([window(1, busy=9.7, gpu=gpu), window(1, busy=9.7, gpu=clean)])
    assert combined["gpu"]["sampled"] is False and combined["gpu"]["unobserved"] == why
    _, marks = disturbance.judge([combined], cores=2)
    assert marks == [f"unobserved: rank 0's GPU watch ({why}); other processes and throttling are unknown"]


def test_a_query_that_fails_later_keeps_its_sample_number(monkeypatch):
    gpu = gpu_window(monkeypatch, FakeNvml(fail_at=3))["gpu"]
    assert gpu["sampled"] is False and gpu["unobserved"].startswith("other processes: NVML sample 3 failed")


def test_when_every_query_fails_the_sampler_stops_and_names_them_all(monkeypatch):
    nvml = FakeNvml()
    for name in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetCurrentClocksEventReasons",
                 "nvmlDeviceGetClockInfo", "nvmlDeviceGetUtilizationRates"):
        monkeypatch.setattr(nvml, name, lambda *a: (_ for _ in ()).throw(RuntimeError("GPU is lost")), raising=False)
    gpu = gpu_window(monkeypatch, nvml)["gpu"]
    assert gpu["samples"] == 1 and gpu["sampled"] is False and gpu["sm_clock_mhz_min"] is None
    assert gpu["unobserved"].count("NVML sample 1 failed (RuntimeError: GPU is lost)") == 4
    assert gpu["gpu_util_mean_pct"] is None


class RealNamesNvml(FakeNvml):
    """FakeNvml that answers only to the names nvidia-ml-py's pynvml (`real`) has: a sampler asking
    for a function NVML's bindings lack gets the AttributeError the GPU would give it."""

    def __init__(self, real):
        super().__init__()
        self.real = real

    def __getattribute__(self, name):
        if name.startswith(("nvml", "NVML_")) and not hasattr(object.__getattribute__(self, "real"), name):
            raise AttributeError(f"module 'pynvml' has no attribute '{name}'")
        return super().__getattribute__(name)


def test_the_sampler_calls_only_functions_pynvml_has(monkeypatch):
    # nvmlDeviceGetComputeProcesses (no such function) made every GPU window unobserved at sample 1
    real = pytest.importorskip("pynvml")
    gpu = gpu_window(monkeypatch, RealNamesNvml(real))["gpu"]
    assert gpu["sampled"] and "unobserved" not in gpu, gpu.get("unobserved")


def test_the_fake_nvml_offers_only_functions_pynvml_has():
    real = pytest.importorskip("pynvml")
    offered = [n for n in dir(FakeNvml) if n.startswith(("nvml", "NVML_"))]
    assert offered and [n for n in offered if not hasattr(real, n)] == []


def test_no_nvml_on_a_gpu_run_is_unobserved(monkeypatch):
    gpu = gpu_window(monkeypatch, FakeNvml(init_error=OSError("libnvidia-ml.so.1: cannot open")))["gpu"]
    assert gpu["sampled"] is False and gpu["unobserved"] == "NVML unavailable (OSError: libnvidia-ml.so.1: cannot open)"
    _, marks = disturbance.judge([window(1, busy=9.7, gpu=gpu)], cores=2)
    assert len(marks) == 1 and marks[0].startswith("unobserved: rank 0's GPU watch (NVML unavailable")


def test_unreadable_cpu_counters_are_unobserved(monkeypatch):
    import builtins

    import torch

    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **k: (_ for _ in ()).throw(PermissionError("denied"))
                        if path == "/proc/stat" else real_open(path, *a, **k))
    with disturbance.Watch(torch.device("cpu")) as watch:
        pass
    record = watch.record
    assert record["cpu_unobserved"] == "the machine's CPU counters (/proc/stat: PermissionError: denied)"
    summary, marks = disturbance.judge([record], cores=2)
    assert summary["other_processes_cores"] is None
    assert marks == ["unobserved: the machine's CPU counters (/proc/stat: PermissionError: denied); "
                     "other processes and steal are unknown"]
    # a CPU run needs no GPU watch: not applicable, which draws no mark
    assert record["gpu"] == {"sampled": False, "not_applicable": NOT_A_GPU}


def test_repeats_combined_keep_that_nvml_listed_another_namespaces_pids(monkeypatch):
    gpu = gpu_window(monkeypatch, FakeNvml())["gpu"]
    foreign = {**gpu, "other_process_ids_foreign": True}
    combined = disturbance.combine([window(1, busy=9.7, gpu=gpu), window(1, busy=9.7, gpu=foreign)])
    assert combined["gpu"]["other_process_ids_foreign"] is True
    assert disturbance.combine([window(1, busy=9.7, gpu=gpu)] * 2)["gpu"]["other_process_ids_foreign"] is False
