"""The bytes a CPU process has allocated and not yet freed, at its peak: on a CPU, the nearest
thing to a GPU's `max_memory_allocated`.

PyTorch's CPU tensors come from the C library's malloc, and PyTorch keeps no count of them. The
resident set is a poor stand-in: tier1.runtime.host_memory tells glibc to keep every freed page,
and each of gloo's threads allocates from an arena of its own, so the resident set keeps every
page the process ever touched. Measured on the memory config at 4 ranks (a random BERT-base):
FSDP2's ranks had at most 1.5 GB in use while their resident sets reached 3.6 GB, DDP's 2.8 GB and
3.5 GB; the resident set hid half of FSDP2's saving.

glibc's `mallinfo2` counts the bytes in use over all arenas. Reading it walks the allocator's free
lists, so it is read at a few points of a step (after the loss, after backward, after the optimizer
step; tier1.training), never in a thread beside the timed window: the peak is the largest value
seen at those points, a lower bound of the true peak. Other C libraries, or a glibc before 2.33:
no reading (None), and the report falls back to the resident set, saying so.
"""

from __future__ import annotations

import ctypes
import functools
import sys


class _Mallinfo2(ctypes.Structure):
    # glibc's struct mallinfo2 (malloc.h), every field a size_t
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


@functools.cache
def _mallinfo2():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).mallinfo2  # the process's own C library
    except (OSError, AttributeError):
        return None
    fn.argtypes, fn.restype = [], _Mallinfo2
    return fn


def in_use() -> int | None:
    """Bytes malloc has handed out and not had back: heap chunks in use plus mmapped ones."""
    fn = _mallinfo2()
    if fn is None:
        return None
    info = fn()
    return info.uordblks + info.hblkhd


_peak: int | None = None


def note() -> None:
    """Take a reading into the peak."""
    global _peak
    now = in_use()
    if now is not None and (_peak is None or now > _peak):
        _peak = now


def reset() -> None:
    """Forget the peak: the next reading starts a new one."""
    global _peak
    _peak = None


def peak() -> int | None:
    """The largest reading since the last reset; None when none was taken (a stage that takes no
    readings reports no peak, rather than the bytes in use when it reset)."""
    return _peak
