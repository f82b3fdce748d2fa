"""Other processes on a rank's GPU, with a fake NVML: this job's own process is recognised whether
NVML reports this pid namespace's pids or another's (a gVisor sandbox reports the host's), and a
real neighbour is still found in both."""

from __future__ import annotations

import os
from types import SimpleNamespace

import pytest

from test_disturbance import FakeNvml, gpu_window, window
from tier1.measure import disturbance, gpu_activity

GB = 2**30
HOST_PID = 3_141_592  # this rank as the host reports it: no pid of this namespace


class Processes(FakeNvml):
    """NVML listing `listed` (pid -> used bytes, None: not available) as compute processes."""

    def __init__(self, listed: dict[int, int | None]):
        super().__init__()
        self.listed = listed

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        return [SimpleNamespace(pid=pid, usedGpuMemory=used) for pid, used in self.listed.items()]


def watched(monkeypatch, listed, reserved=1 * GB) -> dict:
    monkeypatch.setattr(gpu_activity, "own_reserved_bytes", lambda device: reserved)
    return gpu_window(monkeypatch, Processes(listed))


def marks(record) -> list[str]:
    return disturbance.judge([window(os.getpid(), busy=9.7, gpu=record["gpu"])], cores=2)[1]


def test_this_namespace_our_pid_is_ours_and_another_is_a_neighbour(monkeypatch):
    alone = watched(monkeypatch, {os.getpid(): 2 * GB})
    assert alone["gpu"]["other_process_ids"] == [] and not alone["gpu"]["other_process_ids_foreign"]
    assert marks(alone) == []
    shared = watched(monkeypatch, {os.getpid(): 2 * GB, 4242: 5 * GB})
    assert shared["gpu"]["other_process_ids"] == [4242]
    assert marks(shared) == ["disturbed: rank 0's GPU also ran process(es) [4242]"]


def test_host_pids_our_own_process_is_not_a_neighbour(monkeypatch):
    # before: every pid NVML listed that was not this process's was a neighbour, so this one was
    record = watched(monkeypatch, {HOST_PID: int(1.4 * GB)})
    assert record["gpu"]["other_process_ids"] == [] and record["gpu"]["other_process_ids_foreign"]
    assert marks(record) == []


@pytest.mark.parametrize("neighbour_bytes", [300 * 2**20, 20 * GB, None])
def test_host_pids_a_neighbour_is_still_found(monkeypatch, neighbour_bytes):
    """One process more than the job has on the device is a neighbour, small or large; the one
    named is the one least like this rank by memory (NVML's figure for this rank is at least what
    its allocator reserved)."""
    record = watched(monkeypatch, {HOST_PID: int(1.4 * GB), HOST_PID + 7: neighbour_bytes})
    assert record["gpu"]["other_process_ids"] == [HOST_PID + 7]
    assert marks(record) == [f"disturbed: rank 0's GPU also ran process(es) [{HOST_PID + 7}]"]


def test_host_pids_a_process_below_our_reserve_is_not_taken_for_us(monkeypatch):
    # listed first by pid, but holding less than this rank's allocator alone: it cannot be this rank
    record = watched(monkeypatch, {HOST_PID - 1: 200 * 2**20, HOST_PID: int(1.4 * GB)})
    assert record["gpu"]["other_process_ids"] == [HOST_PID - 1]


def test_host_pids_ranks_sharing_the_gpu_are_the_jobs_own(monkeypatch):
    monkeypatch.setenv("TIER1_SHARE_GPU", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    siblings = {HOST_PID: int(1.4 * GB), HOST_PID + 1: int(1.3 * GB)}  # the other rank reserved a little less
    assert watched(monkeypatch, siblings)["gpu"]["other_process_ids"] == []
    third = watched(monkeypatch, {**siblings, HOST_PID + 2: 8 * GB})
    assert third["gpu"]["other_process_ids"] == [HOST_PID + 2]


def test_host_pids_without_memory_figures_count_still_decides(monkeypatch):
    assert watched(monkeypatch, {HOST_PID: None}, reserved=None)["gpu"]["other_process_ids"] == []
    assert len(watched(monkeypatch, {HOST_PID: None, HOST_PID + 1: None}, reserved=None)["gpu"]["other_process_ids"]) == 1
