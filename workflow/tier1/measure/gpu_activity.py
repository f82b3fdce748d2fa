"""One NVML sampler for a rank's GPU, in a background thread: other processes on the device,
clock-throttle reasons, the SM clock and GPU-Util. The disturbance watch (tier1.measure.disturbance) and
check_gpus' activity table both read it.

An instrument that could not observe says so: `summary()` carries `unobserved: <reason>` (NVML
missing on a GPU run, a device NVML does not know, a query that failed, which is named with the
sample it failed at and no longer asked while the others go on, no sample in the window) and
`sampled: false`, so no clean verdict is drawn from it. A run that
is not on a GPU needs no GPU watch: `not_applicable`, which is no fault.
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


def _why(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else 'no message'}"


class GpuSampler:
    """Samples this rank's GPU every `interval` s between __enter__ and __exit__."""

    def __init__(self, device, interval: float = 0.5):
        self.interval, self._stop, self._thread = interval, threading.Event(), None
        self._nvml = self._handle = None
        self.other_pids: set[int] = set()
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
        own = {os.getpid(), os.getppid()}
        for p in nvml.nvmlDeviceGetComputeProcesses(h) + nvml.nvmlDeviceGetGraphicsProcesses(h):
            if p.pid not in own:
                self.other_pids.add(p.pid)

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
               "other_process_ids": sorted(self.other_pids), "throttle_reasons": sorted(self.throttle),
               "sm_clock_mhz_min": min(self.sm_clock_mhz, default=None),
               "sm_clock_mhz_max": max(self.sm_clock_mhz, default=None),
               "gpu_util_mean_pct": sum(self.util_pct) / len(self.util_pct) if self.util_pct else None,
               "gpu_util_max_pct": max(self.util_pct, default=None)}
        if self.unobserved:
            out["unobserved"] = self.unobserved
        return out
