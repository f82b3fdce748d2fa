"""The device a rank computes on: its precision, autocast, synchronisation, memory and name.

One code path for CPU and GPU: every CUDA-only call is made here, behind a device check.
"""

from __future__ import annotations

import contextlib
import resource

import torch

from tier1.measure import host_allocated


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a `precision` setting, or None for plain fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def dtype_name(dtype: torch.dtype | None) -> str:
    return str(dtype or torch.float32).replace("torch.", "")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision in `dtype`, or nothing when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def first_calls_cost(device: torch.device) -> bool:
    """Whether a device's first calls cost seconds per shape (CUDA context, cuBLAS handles, kernel
    selection), so that warming every shape through the whole model pays for itself. A CPU's do
    not: there each shape is warmed through the first layer (docs/reproduce/first_meeting_cost.py)."""
    return device.type == "cuda"


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a host clock read after it covers that work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`. On a GPU copied from pinned memory without blocking the host, so
    the copy is queued behind the running work while the host goes on; on a CPU the tensor itself."""
    if device.type == "cpu":
        return tensor
    return (tensor.pin_memory() if device.type == "cuda" else tensor).to(device, non_blocking=True)


def used_memory(device: torch.device) -> int | None:
    """Bytes in use on the whole device (CUDA context, NCCL buffers and other processes included,
    which the caching allocator's counters leave out); None on CPU."""
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    return total - free


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from tier1.runtime.provenance import cpu_model

    return f"cpu ({cpu_model()})"


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        host_allocated.reset()


def peak_memory(device: torch.device) -> dict[str, int]:
    """Bytes: allocated and reserved on a GPU; on a CPU the peak of malloc's bytes in use at the
    step's points since the last reset_peak (tier1.measure.host_allocated; absent where the C
    library cannot tell) and the process's peak resident set."""
    if device.type == "cuda":
        return {
            "max_memory_allocated": torch.cuda.max_memory_allocated(device),
            "max_memory_reserved": torch.cuda.max_memory_reserved(device),
        }
    allocated = host_allocated.peak()
    return {**({"peak_allocated": allocated} if allocated is not None else {}),
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


def capacity(device: torch.device) -> int | None:
    """Total device memory in bytes; None on CPU (no device memory limit)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    return None


def free_cached(device: torch.device) -> None:
    """Return cached blocks to the device, so the next allocation sees what is really free."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def ieee_fp32_matmul():
    """float32 matrix products in full float32 (not TF32 or bf16) inside the block, whatever the global setting.

    Uses the `fp32_precision` flags only: PyTorch raises when these and the legacy `allow_tf32` are mixed.
    """
    backends = (torch.backends.cuda.matmul, torch.backends.mkldnn.matmul)
    saved = [b.fp32_precision for b in backends]
    try:
        for b in backends:
            b.fp32_precision = "ieee"
        yield
    finally:
        for b, value in zip(backends, saved):
            b.fp32_precision = value
