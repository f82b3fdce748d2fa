"""The CPU's peak allocated bytes (glibc's count of bytes in use) and the largest-model projection."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

from tier1.measure import host_allocated
from tier1.report import analysis

linux_glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or host_allocated.in_use() is None,
                                 reason="needs glibc's mallinfo2 (Linux, glibc 2.33 or later)")


@linux_glibc
def test_a_tensor_held_counts_and_a_freed_one_no_longer_does():
    before = host_allocated.in_use()
    held = torch.ones(64 * 2**20 // 4)  # 64 MiB of float32
    during = host_allocated.in_use()
    del held
    after = host_allocated.in_use()
    assert during - before >= 60 * 2**20
    assert during - after >= 60 * 2**20  # freed bytes leave the count even when the pages stay


@linux_glibc
def test_the_peak_is_the_largest_reading_since_the_reset():
    host_allocated.reset()
    assert host_allocated.peak() is None  # no reading, no peak
    held = torch.ones(32 * 2**20 // 4)
    host_allocated.note()
    high = host_allocated.peak()
    del held
    host_allocated.note()
    assert host_allocated.peak() == high
    host_allocated.reset()
    host_allocated.note()
    assert host_allocated.peak() < high


def record(states_total: int, peak: int, n_params: int, world: int, capacity: int | None, host: int | None,
           strategy: str = "ddp", precision: str = "float32"):
    ranks = [{"device_capacity_bytes": capacity, "peak_memory": {"peak_allocated": peak}}] * world
    return SimpleNamespace(ranks=ranks, gradient_bytes=4 * n_params, world_size=world, precision=precision,
                           config={"parallelism": strategy},
                           hardware={"gpus": ["GPU"] if capacity else [], "host_memory_bytes": host})


def test_largest_model_divides_the_memory_left_by_the_measured_bytes_per_parameter():
    # 100M parameters, 16 bytes each (DDP, fp32 AdamW), 2 GB more at the peak, an 80 GB GPU
    row = {"model_state_per_rank_bytes": {"total": 1.6e9}, "peak_memory_per_device_bytes": 3.6e9}
    got = analysis.largest_model(row, record(1.6e9, 3.6e9, 100_000_000, 1, 80e9, None))
    assert got["of"] == "GPU memory" and got["bytes_per_parameter"] == pytest.approx(16)
    assert got["parameters"] == pytest.approx((80e9 - 2e9) / 16, rel=1e-9)
    # FSDP2 on 4 ranks: a quarter of the states per rank, and the whole parameters gathered for the
    # step on top (bf16: 2 bytes each), which grow with the model as the states do
    row4 = {"model_state_per_rank_bytes": {"total": 0.4e9}, "peak_memory_per_device_bytes": 2.6e9}
    got4 = analysis.largest_model(row4, record(0.4e9, 2.6e9, 100_000_000, 4, 80e9, None, "fsdp", "bfloat16"))
    assert got4["bytes_per_parameter"] == pytest.approx(4 + 2)
    assert got4["parameters"] == pytest.approx((80e9 - 2e9) / 6, rel=1e-9)


def test_on_a_cpu_each_rank_gets_its_share_of_the_host_memory():
    row = {"model_state_per_rank_bytes": {"total": 0.8e9}, "peak_memory_per_device_bytes": 1.0e9}
    got = analysis.largest_model(row, record(0.8e9, 1.0e9, 100_000_000, 2, None, 24e9))
    assert got["of"] == "host memory / ranks" and got["capacity_bytes"] == 12e9
    assert got["parameters"] == pytest.approx((12e9 - 0.2e9) / 8, rel=1e-9)


def test_no_projection_without_the_measurements_it_needs():
    row = {"model_state_per_rank_bytes": None, "peak_memory_per_device_bytes": 1e9}
    assert analysis.largest_model(row, record(0, 1e9, 10, 1, 80e9, None)) is None
    row = {"model_state_per_rank_bytes": {"total": 1e9}, "peak_memory_per_device_bytes": 2e9}
    assert analysis.largest_model(row, record(1e9, 2e9, 10, 1, None, None)) is None  # CPU, size unknown
