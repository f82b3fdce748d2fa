"""What could have disturbed a timed window, recorded beside the time, so that a number measured on
a busy, shared or throttled machine is marked instead of shown as clean.

CPU: the machine's busy time (/proc/stat) minus the ranks' own CPU time is what other processes
took; steal is what the hypervisor gave to other guests. GPU: other processes on the ranks' GPUs
and clock-throttle reasons beyond the ordinary power cap (NVML, sampled in a thread).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

OTHERS_CORES_LIMIT = 0.25  # other processes' average use of the machine, in cores, before a mark
OTHERS_SHARE_LIMIT = 0.10  # ... or this share of its cores, whichever is larger
STEAL_LIMIT = 0.05  # share of the machine's CPU time taken by the hypervisor

# NVML clock-event reasons that slow a GPU down for reasons other than the work itself
# (thermal and hardware slowdowns, power brake); the software power cap is ordinary under load.
THROTTLE_REASONS = {0x8: "hardware slowdown", 0x20: "software thermal slowdown", 0x40: "hardware thermal slowdown",
                    0x80: "hardware power brake"}


@dataclass(frozen=True)
class CpuCounters:
    wall: float
    busy_s: float  # every CPU's non-idle time, steal excluded
    steal_s: float
    total_s: float
    own_s: float  # this process's CPU time, all threads


def cpu_counters() -> CpuCounters:
    busy = steal = total = 0.0
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
        ticks = [int(x) for x in fields] + [0] * 8
        hz = os.sysconf("SC_CLK_TCK")
        user, nice, system, idle, iowait, irq, softirq, st = ticks[:8]
        busy = (user + nice + system + irq + softirq) / hz
        steal = st / hz
        total = (user + nice + system + idle + iowait + irq + softirq + st) / hz
    except (OSError, ValueError):
        pass  # not Linux: only the process's own time is known
    return CpuCounters(time.perf_counter(), busy, steal, total, time.process_time())


class GpuWatch:
    """Other processes on this rank's GPU and throttle reasons, sampled every `interval` s."""

    def __init__(self, device, interval: float = 0.5):
        self.interval, self._nvml, self._stop = interval, None, threading.Event()
        self.other_pids: set[int] = set()
        self.throttle: set[str] = set()
        self.sm_clock_mhz: list[int] = []
        if getattr(device, "type", None) != "cuda":
            return
        try:
            import pynvml
            import torch

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByUUID(f"GPU-{torch.cuda.get_device_properties(device).uuid}")
            self._nvml = pynvml
        except Exception:  # no NVML: nothing to record, and nothing claimed
            self._nvml = None

    def _sample(self) -> None:
        nvml, h = self._nvml, self._handle
        own = {os.getpid(), os.getppid()}
        for p in nvml.nvmlDeviceGetComputeProcesses(h) + nvml.nvmlDeviceGetGraphicsProcesses(h):
            if p.pid not in own:
                self.other_pids.add(p.pid)
        reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons",
                          getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None))
        if reasons is not None:
            bits = reasons(h)
            self.throttle |= {name for bit, name in THROTTLE_REASONS.items() if bits & bit}
        self.sm_clock_mhz.append(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._sample()
            except Exception:
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuWatch:
        if self._nvml is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._nvml is not None:
            self._thread.join()

    def summary(self) -> dict:
        if self._nvml is None:
            return {"sampled": False}
        clocks = self.sm_clock_mhz
        return {"sampled": True, "other_process_ids": sorted(self.other_pids), "throttle_reasons": sorted(self.throttle),
                "sm_clock_mhz_min": min(clocks, default=None), "sm_clock_mhz_max": max(clocks, default=None)}


class Watch:
    """Around a timed window on one rank: CPU counters at both ends, GPU samples in between."""

    def __init__(self, device):
        self.gpu = GpuWatch(device)

    def __enter__(self) -> Watch:
        self._start = cpu_counters()
        self.gpu.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.gpu.__exit__(*exc)
        end = cpu_counters()
        s = self._start
        self.record = {"pid": os.getpid(), "wall_s": end.wall - s.wall, "own_cpu_s": end.own_s - s.own_s,
                       "machine_busy_s": end.busy_s - s.busy_s, "steal_s": end.steal_s - s.steal_s,
                       "machine_total_s": end.total_s - s.total_s, "gpu": self.gpu.summary()}


def combine(records: list[dict]) -> dict:
    """One rank's records of several timed windows (repeats) as one: times add up."""
    out = dict(records[0])
    for key in ("wall_s", "own_cpu_s", "machine_busy_s", "steal_s", "machine_total_s"):
        out[key] = sum(r[key] for r in records)
    gpus = [r["gpu"] for r in records if r["gpu"].get("sampled")]
    if gpus:
        out["gpu"] = {"sampled": True,
                      "other_process_ids": sorted({p for g in gpus for p in g["other_process_ids"]}),
                      "throttle_reasons": sorted({t for g in gpus for t in g["throttle_reasons"]}),
                      "sm_clock_mhz_min": min((g["sm_clock_mhz_min"] for g in gpus if g["sm_clock_mhz_min"]), default=None),
                      "sm_clock_mhz_max": max((g["sm_clock_mhz_max"] for g in gpus if g["sm_clock_mhz_max"]), default=None)}
    return out


def judge(ranks: list[dict], cores: int) -> tuple[dict, list[str]]:
    """From each rank's window record (ranks of one machine): what other work took, and marks.

    The machine's counters are rank 0's; the ranks' own CPU time is summed, so sibling ranks
    are never counted as disturbance."""
    first = ranks[0]
    wall = first["wall_s"] or 1e-9
    others_cores = max(0.0, first["machine_busy_s"] - sum(r["own_cpu_s"] for r in ranks)) / wall
    steal_share = first["steal_s"] / first["machine_total_s"] if first["machine_total_s"] else 0.0
    summary = {"other_processes_cores": others_cores, "steal_share": steal_share, "cores": cores,
               "own_cpu_per_wall_per_rank": [r["own_cpu_s"] / wall for r in ranks]}
    marks = []
    if others_cores > max(OTHERS_CORES_LIMIT, OTHERS_SHARE_LIMIT * cores):
        marks.append(f"disturbed: other processes used {others_cores:.2f} of {cores} cores during the timed window")
    if steal_share > STEAL_LIMIT:
        marks.append(f"disturbed: the hypervisor took {steal_share:.0%} of the CPU time (steal)")
    ours = {r.get("pid") for r in ranks}
    for rank, r in enumerate(ranks):
        gpu = r.get("gpu", {})
        others = [p for p in gpu.get("other_process_ids", []) if p not in ours]
        if others:
            marks.append(f"disturbed: rank {rank}'s GPU also ran process(es) {others}")
        if gpu.get("throttle_reasons"):
            marks.append(f"disturbed: rank {rank}'s GPU throttled ({', '.join(gpu['throttle_reasons'])})")
    return summary, marks
