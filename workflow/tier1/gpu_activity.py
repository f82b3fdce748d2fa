"""Samples NVML utilisation of this rank's GPU in a background thread while a job runs."""

from __future__ import annotations

import threading
import time


class ActivitySampler:
    """GPU-Util (share of time any kernel ran) for one device, sampled every `interval` s.

    GPU-Util says only that a kernel was running, not how much of the chip it used; it is the
    most that NVML offers on every NVIDIA GPU. Without NVML (or without a GPU) it records nothing.
    """

    def __init__(self, device, interval: float = 0.1):
        self.samples: list[int] = []
        self.interval = interval
        self._stop = threading.Event()
        self._thread = None
        self._nvml = None
        if getattr(device, "type", None) != "cuda":
            return
        try:
            import pynvml
            import torch

            pynvml.nvmlInit()
            # By UUID: NVML counts the machine's GPUs, CUDA only those CUDA_VISIBLE_DEVICES shows.
            uuid = f"GPU-{torch.cuda.get_device_properties(device).uuid}"
            self._handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
            self._nvml = pynvml
        except Exception:  # no NVML library or a device NVML does not know
            self._nvml = None

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu)
            time.sleep(self.interval)

    def __enter__(self):
        if self.available:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {"gpu_util_mean_pct": None, "gpu_util_max_pct": None, "samples": 0}
        return {"gpu_util_mean_pct": sum(self.samples) / len(self.samples),
                "gpu_util_max_pct": max(self.samples), "samples": len(self.samples)}
