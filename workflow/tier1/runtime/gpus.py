"""The GPUs a job may use, found without initialising CUDA, and the world sizes that follow.

NVML lists the machine's GPUs; CUDA_VISIBLE_DEVICES (indices or UUIDs, as a scheduler sets it)
narrows them. Jobs run with CUDA_DEVICE_ORDER=PCI_BUS_ID so that CUDA's order is NVML's.
TIER1_GPUS=N declares N GPUs instead (a cluster's submit host has none of its own; tests fake
machines with it).
"""

from __future__ import annotations

import os

GPUS_ENV = "TIER1_GPUS"
SHARE_GPU_ENV = "TIER1_SHARE_GPU"  # "1": all ranks on one GPU over gloo (config share_gpu; a rehearsal)
HIDDEN = {"", "-1", "none", "NoDevFiles"}


def _nvml_gpus() -> list[str]:
    """UUIDs of the machine's GPUs in PCI bus order; [] without NVML or without an NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no library, no driver: a CPU machine
        return []
    try:
        found = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            bus = pynvml.nvmlDeviceGetPciInfo(handle).busId
            found.append((bus.decode() if isinstance(bus, bytes) else bus, _text(pynvml.nvmlDeviceGetUUID(handle))))
        return [uuid for _, uuid in sorted(found)]
    finally:
        pynvml.nvmlShutdown()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def visible_gpus(env: dict[str, str] | None = None) -> list[str]:
    """Identifiers (UUIDs, or "gpuN" when declared by TIER1_GPUS) of the GPUs a job may use."""
    env = os.environ if env is None else env
    declared = env.get(GPUS_ENV)
    if declared is not None:
        return [f"gpu{i}" for i in range(int(declared))]
    machine = _nvml_gpus()
    mask = env.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return machine
    if mask.strip() in HIDDEN:
        return []
    chosen = []
    for entry in (e.strip() for e in mask.split(",")):
        if entry.isdigit():
            if int(entry) >= len(machine):
                break  # CUDA stops at the first invalid entry too
            chosen.append(machine[int(entry)])
        else:
            match = [u for u in machine if u.startswith(entry)]
            if len(match) != 1:
                break
            chosen.append(match[0])
    return chosen


def auto_world_sizes(n_gpus: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to the GPU count, plus the count itself; [1, 2, 4] CPU ranks without GPUs."""
    if n_gpus == 0:
        return (1, 2, 4)
    sizes = {n_gpus}
    n = 1
    while n < n_gpus:
        sizes.add(n)
        n *= 2
    return tuple(sorted(sizes))
