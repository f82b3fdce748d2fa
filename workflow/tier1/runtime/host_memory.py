"""Keep the memory a process frees, so that every training step reuses the pages the first one
touched, as a GPU's caching allocator does.

PyTorch's CPU tensors come from the C library's malloc. glibc serves a large request (the word
embeddings' 47 MB gradient, attention activations) with a fresh mapping and unmaps it on free, and
gives back the top of its heap when enough of it is free: each step then faults its memory in
again. On this CPU that was 20,000-57,000 page faults (up to 0.8 s of system time) in every step of
a 2 s MiniLM step, and 190,000-220,000 in the first one. With mappings off and the heap kept, a
step after the first faults in almost nothing (docs/performance.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
KEEP_UP_TO = 2**31 - 1  # bytes free at the heap's top before glibc gives any back (mallopt takes an int)


def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve every request from its heap and to keep what is freed. Whether
    it applied: False off Linux or with another C library, where nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_UP_TO))
