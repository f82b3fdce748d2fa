"""What could have disturbed a timed window, recorded beside the time, so that a number measured on
a busy, shared or throttled machine is marked instead of shown as clean.

CPU: the machine's busy time (/proc/stat) minus the ranks' own CPU time is what other processes
took; steal is what the hypervisor gave to other guests. GPU: other processes on the ranks' GPUs
and clock-throttle reasons beyond the ordinary power cap (tier1.measure.gpu_activity's NVML sampler).

An instrument that could not observe (no /proc/stat, NVML missing on a GPU run, a failed sample)
marks the window "unobserved: <reason>": its absence of marks would otherwise read as clean.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from tier1.measure import clock
from tier1.measure.gpu_activity import GpuSampler

OTHERS_CORES_LIMIT = 0.25  # other processes' average use of the machine, in cores, before a mark
OTHERS_SHARE_LIMIT = 0.10  # ... or this share of its cores, whichever is larger
STEAL_LIMIT = 0.05  # share of the machine's CPU time taken by the hypervisor

@dataclass(frozen=True)
class CpuCounters:
    wall: float
    busy_s: float  # every CPU's non-idle time, steal excluded
    steal_s: float
    total_s: float
    own_s: float  # this process's CPU time, all threads
    unobserved: str | None = None  # why the machine's counters could not be read


def cpu_counters() -> CpuCounters:
    busy = steal = total = 0.0
    unobserved = None
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()[1:]
        ticks = [int(x) for x in fields] + [0] * 8
        hz = os.sysconf("SC_CLK_TCK")
        user, nice, system, idle, iowait, irq, softirq, st = ticks[:8]
        busy = (user + nice + system + irq + softirq) / hz
        steal = st / hz
        total = (user + nice + system + idle + iowait + irq + softirq + st) / hz
    except (OSError, ValueError) as err:  # not Linux: only the process's own time is known
        unobserved = f"the machine's CPU counters (/proc/stat: {type(err).__name__}: {err})"
    return CpuCounters(clock.now(), busy, steal, total, time.process_time(), unobserved)


class Watch:
    """Around a timed window on one rank: CPU counters at both ends, GPU samples in between."""

    def __init__(self, device):
        self.gpu = GpuSampler(device)

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
        if s.unobserved or end.unobserved:
            self.record["cpu_unobserved"] = s.unobserved or end.unobserved


def combine(records: list[dict]) -> dict:
    """One rank's records of several timed windows (repeats) as one: times add up."""
    out = dict(records[0])
    for key in ("wall_s", "own_cpu_s", "machine_busy_s", "steal_s", "machine_total_s"):
        out[key] = sum(r[key] for r in records)
    cpu = [r["cpu_unobserved"] for r in records if r.get("cpu_unobserved")]
    if cpu:
        out["cpu_unobserved"] = cpu[0]
    gpus = [r["gpu"] for r in records]
    if not any(g.get("not_applicable") for g in gpus):
        unobserved = [g["unobserved"] for g in gpus if g.get("unobserved")]
        out["gpu"] = {"sampled": not unobserved, "samples": sum(g.get("samples", 0) for g in gpus),
                      "other_process_ids": sorted({p for g in gpus for p in g.get("other_process_ids", [])}),
                      # NVML listed another pid namespace's pids (a sandbox): the ids name no process here
                      "other_process_ids_foreign": any(g.get("other_process_ids_foreign") for g in gpus),
                      "throttle_reasons": sorted({t for g in gpus for t in g.get("throttle_reasons", [])}),
                      "sm_clock_mhz_min": min((g["sm_clock_mhz_min"] for g in gpus if g.get("sm_clock_mhz_min")),
                                              default=None),
                      "sm_clock_mhz_max": max((g["sm_clock_mhz_max"] for g in gpus if g.get("sm_clock_mhz_max")),
                                              default=None)}
        if unobserved:
            out["gpu"]["unobserved"] = unobserved[0]
    return out


def mark_kind(mark: str) -> str:
    """A mark's kind, its first word ("disturbed", "unobserved", "resumed", "stalled"): every mark a
    record carries starts with it, so a plot label or a table cell can name the kind alone."""
    return mark.split(":")[0].split()[0]


def mark_kinds(marks: list[str]) -> str:
    return ", ".join(dict.fromkeys(mark_kind(m) for m in marks if m.strip()))


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
    if first.get("cpu_unobserved"):
        marks.append(f"unobserved: {first['cpu_unobserved']}; other processes and steal are unknown")
        summary["other_processes_cores"] = summary["steal_share"] = None
    elif others_cores > max(OTHERS_CORES_LIMIT, OTHERS_SHARE_LIMIT * cores):
        marks.append(f"disturbed: other processes used {others_cores:.2f} of {cores} cores during the timed window")
    if steal_share > STEAL_LIMIT:
        marks.append(f"disturbed: the hypervisor took {steal_share:.0%} of the CPU time (steal)")
    ours = {r.get("pid") for r in ranks}
    for rank, r in enumerate(ranks):
        gpu = r.get("gpu", {})
        if gpu.get("unobserved") or not (gpu.get("sampled") or gpu.get("not_applicable")):
            why = gpu.get("unobserved") or "no GPU record"
            marks.append(f"unobserved: rank {rank}'s GPU watch ({why}); other processes and throttling are unknown")
        others = [p for p in gpu.get("other_process_ids", []) if p not in ours]
        if others:
            marks.append(f"disturbed: rank {rank}'s GPU also ran process(es) {others}")
        if gpu.get("throttle_reasons"):
            marks.append(f"disturbed: rank {rank}'s GPU throttled ({', '.join(gpu['throttle_reasons'])})")
    return summary, marks
