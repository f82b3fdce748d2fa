"""Freed host memory is kept (tier1.runtime.host_memory): the pages a step touched stay with the
process for the next step, where glibc's defaults unmap a large block on free and fault it in
again when it is next used. Resident pages are counted, nothing is timed."""

import subprocess
import sys

import pytest

from tier1.runtime import host_memory

# resident pages given back by freeing a touched 64 MiB tensor
GIVEN_BACK = """
import sys, torch
from tier1.runtime import host_memory
if sys.argv[1] == "keep":
    assert host_memory.keep_freed_memory()
def resident():
    return int(open("/proc/self/statm").read().split()[1])
tensor = torch.ones(16 * 2**20)
held = resident()
del tensor
print(held - resident())
"""


def given_back(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", GIVEN_BACK, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_stays_with_the_process():
    pages = 64 * 2**20 // 4096
    assert given_back("default") > pages // 2  # unmapped: the next step faults it in again
    assert given_back("keep") == 0


def test_off_glibc_nothing_changes(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert host_memory.keep_freed_memory.__wrapped__() is False  # uncached: this process asked before
