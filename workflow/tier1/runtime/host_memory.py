"""Keep the memory a process frees, so that every training step reuses the pages the first one
touched, as a GPU's caching allocator does.

PyTorch's CPU tensors come from the C library's malloc. glibc serves a large request (the word
embeddings' 47 MB gradient, attention activations) with a fresh mapping and unmaps it on free, and
gives back the top of its heap when enough of it is free: each step then faults its memory in
again. On this CPU a 2 s MiniLM step took up to 100,000 minor page faults, and the first one
239,000; with mappings off, the heap kept and the warm-up step, the first took 1 and the next
seven at most 17,685 (docs/reproduce/step_memory.py faults, docs/performance.md).
"""

from __future__ import annotations

import ctypes
import functools
import sys

# mallopt's parameters (glibc's malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
KEEP_UP_TO = 2**31 - 1  # bytes free at the heap's top before glibc gives any back (mallopt takes an int)


@functools.cache
def keep_freed_memory() -> bool:
    """Tell glibc's malloc to serve every request from its heap and to keep what is freed (once
    per process: every stage's set-up asks). Whether it applied: False off Linux or with another
    C library, where nothing changes."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: the C library it runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_UP_TO))
