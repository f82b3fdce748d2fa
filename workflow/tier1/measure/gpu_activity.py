"""One NVML sampler for a rank's GPU, in a background thread: other processes on the device,
clock-throttle reasons, the SM clock and GPU-Util. The disturbance watch (tier1.measure.disturbance) and
check_gpus' activity table both read it.

An instrument that could not observe says so: `summary()` carries `unobserved: <reason>` (NVML
missing on a GPU run, a device NVML does not know, a query that failed, which is named with the
sample it failed at and no longer asked while the others go on, no sample in the window) and
`sampled: false`, so no clean verdict is drawn from it. A run that
is not on a GPU needs no GPU watch: `not_applicable`, which is no fault.

Other processes on the device: NVML names processes by pid. Where those pids are this pid
namespace's (this process among them), a pid that is neither this process nor its parent is a
neighbour (the disturbance judgement also leaves out the sibling ranks). In a sandbox (gVisor) or a
container without the host's pid namespace, NVML reports the host's pids: no pid it lists is ours,
this process included, so every one would look like a neighbour (the H200 ran under gVisor).
There the job's own processes on the device are known by number: this rank, or every
local rank under share_gpu. Processes beyond that number are neighbours; which pids are named comes
from the memory NVML reports per process against what this rank's allocator holds (its own figure
counts the allocator's reserve plus its CUDA context, so a process holding less cannot be it).
"""

from __future__ import annotations

import os
import threading

# NVML clock-event reasons that slow a GPU down for reasons other than the work itself
# (thermal and hardware slowdowns, power brake); the software power cap is ordinary under load.
THROTTLE_REASONS = {0x8: "hardware slowdown", 0x20: "software thermal slowdown", 0x40: "hardware thermal slowdown",
                    0x80: "hardware power brake"}
NOT_A_GPU = "not applicable: the run is not on a GPU"


def device_uuid(device) -> str:
    """NVML's name for a CUDA device: by UUID, since NVML counts the machine's GPUs and CUDA only
    those CUDA_VISIBLE_DEVICES shows."""
    import torch

    return f"GPU-{torch.cuda.get_device_properties(device).uuid}"


def own_processes_on_device() -> int:
    """This job's processes on this rank's GPU: the rank itself, or all local ranks when they share
    the GPU (share_gpu, tier1.runtime.gpus)."""
    from tier1.runtime.gpus import SHARE_GPU_ENV

    if os.environ.get(SHARE_GPU_ENV) == "1":
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return 1


def own_reserved_bytes(device) -> int | None:
    """What this rank's CUDA allocator holds on `device` (None when it cannot be read)."""
    try:
        import torch

        return int(torch.cuda.memory_reserved(device))
    except Exception:
        return None


def neighbours(listed: dict[int, int | None], own_pids: set[int], own_count: int,
               own_bytes: int | None) -> tuple[set[int], bool]:
    """(pids of other jobs' processes, whether NVML's pids were another namespace's) from the
    processes NVML lists on the device (pid -> used bytes, None where NVML does not say).

    NVML's pids are this namespace's when this process is among them (it holds a context on the
    device, so NVML lists it); then a neighbour is any pid not ours. Otherwise the count decides:
    the job has `own_count` processes on the device, the rest are neighbours. The ones taken as
    ours are those most like this rank by memory: holding at least `own_bytes`, the nearest first;
    unknown memory next; below it (cannot be this rank) last; then by pid, for a stable answer."""
    if not listed or own_pids & listed.keys():
        return set(listed) - own_pids, False

    def unlike_ours(pid: int) -> tuple:
        used = listed[pid]
        if used is None or own_bytes is None:
            return (1, 0, pid)
        return (0, used - own_bytes, pid) if used >= own_bytes else (2, own_bytes - used, pid)

    return set(sorted(listed, key=unlike_ours)[own_count:]), True


def _why(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else 'no message'}"


class GpuSampler:
    """Samples this rank's GPU every `interval` s between __enter__ and __exit__."""

    def __init__(self, device, interval: float = 0.5):
        self.interval, self._stop, self._thread = interval, threading.Event(), None
        self._nvml = self._handle = None
        self.device = device
        self.other_pids: set[int] = set()
        self.foreign_pids = False  # NVML's pids were another pid namespace's (neighbours counted)
        self.throttle: set[str] = set()
        self.sm_clock_mhz: list[int] = []
        self.util_pct: list[int] = []
        self.samples = 0
        self.failed: dict[str, str] = {}  # quantity -> why it stopped being observed
        self.not_applicable: str | None = None
        self.unobserved: str | None = None
        if getattr(device, "type", None) != "cuda":
            self.not_applicable = NOT_A_GPU
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self._handle = pynvml.nvmlDeviceGetHandleByUUID(device_uuid(device))
            self._nvml = pynvml
        except Exception as err:  # no NVML library, no driver, or a device NVML does not know
            self.unobserved = f"NVML unavailable ({_why(err)})"

    @property
    def available(self) -> bool:
        return self._nvml is not None

    # -- one query per quantity: a query that fails stops only itself, and is named --------------
    def _processes(self, nvml, h) -> None:
        listed = {p.pid: getattr(p, "usedGpuMemory", None)
                  for p in nvml.nvmlDeviceGetComputeRunningProcesses(h) + nvml.nvmlDeviceGetGraphicsRunningProcesses(h)}
        own = {os.getpid(), os.getppid()}
        needs_memory = listed and not own & listed.keys()  # read only where it decides anything
        others, foreign = neighbours(listed, own, own_processes_on_device(),
                                     own_reserved_bytes(self.device) if needs_memory else None)
        self.other_pids |= others
        self.foreign_pids |= foreign

    def _throttle(self, nvml, h) -> None:
        reasons = getattr(nvml, "nvmlDeviceGetCurrentClocksEventReasons",
                          getattr(nvml, "nvmlDeviceGetCurrentClocksThrottleReasons", None))
        if reasons is None:
            raise RuntimeError("this NVML reports no clock-throttle reasons")
        bits = reasons(h)
        self.throttle |= {name for bit, name in THROTTLE_REASONS.items() if bits & bit}

    def _sm_clock(self, nvml, h) -> None:
        self.sm_clock_mhz.append(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM))

    def _util(self, nvml, h) -> None:
        self.util_pct.append(nvml.nvmlDeviceGetUtilizationRates(h).gpu)

    QUANTITIES = (("other processes", "_processes"), ("throttle reasons", "_throttle"),
                  ("SM clock", "_sm_clock"), ("GPU-Util", "_util"))

    def sample(self) -> None:
        """One sample of every quantity still observed; a failure is kept with the sample's number."""
        self.samples += 1
        for what, method in self.QUANTITIES:
            if what in self.failed:
                continue
            try:
                getattr(self, method)(self._nvml, self._handle)
            except Exception as err:
                self.failed[what] = f"{what}: NVML sample {self.samples} failed ({_why(err)})"

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.failed) < len(self.QUANTITIES):
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread = threading.Thread(target=self._run, daemon=True, name="tier1-gpu-sampler")
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            if self.failed:
                self.unobserved = "; ".join(self.failed.values())
            elif not self.samples:
                self.unobserved = "no NVML sample was taken in the window"

    def summary(self) -> dict:
        """What was observed; `sampled` is true only for a window watched from start to end."""
        if self.not_applicable:
            return {"sampled": False, "not_applicable": self.not_applicable}
        out = {"sampled": self.unobserved is None, "samples": self.samples,
               "other_process_ids": sorted(self.other_pids), "other_process_ids_foreign": self.foreign_pids,
               "throttle_reasons": sorted(self.throttle),
               "sm_clock_mhz_min": min(self.sm_clock_mhz, default=None),
               "sm_clock_mhz_max": max(self.sm_clock_mhz, default=None),
               "gpu_util_mean_pct": sum(self.util_pct) / len(self.util_pct) if self.util_pct else None,
               "gpu_util_max_pct": max(self.util_pct, default=None)}
        if self.unobserved:
            out["unobserved"] = self.unobserved
        return out
