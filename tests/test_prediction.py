"""The predicted ceiling on hand-made inputs: interpolating the sweep, overlap with backward, CPU
ranks sharing cores, the below-80% flag and the gap's largest term, projections."""

from __future__ import annotations

import dataclasses

import pytest

from tier1.records import CollectivesRecord, PreflightRecord, TrainRecord
from tier1.report import analysis, prediction
from tier1.report.collect import Results
from tier1.training.decomposition import decompose, rank_parts

from helpers import record as record_of

MB = 1e6
GRAD = 90 * MB


def sweep(busbw_gbps: float, n: int, sizes=(2**20, 2**24, GRAD, 2**28), latency=0.0) -> list[dict]:
    """An all-reduce sweep at a flat bus bandwidth."""
    return [{"bytes": b, "busbw_gbps": busbw_gbps,
             "time_s": {"median": latency + b * 2 * (n - 1) / n / (busbw_gbps * 1e9)}} for b in sizes]


def comm(n: int, busbw: float, gather_s: float = 0.0) -> CollectivesRecord:
    return record_of(CollectivesRecord, world_size=n, all_reduce=sweep(busbw, n),
                     summary={"loss_all_gather": {"time_s": {"median": gather_s}}})


def preflight(cores: int, gpus: int | None = None) -> PreflightRecord:
    return record_of(PreflightRecord, cpu={"cores_available": cores}, gpu={"count": gpus} if gpus else None)


def decomposition(step, compute, data=0.0, optimizer=0.0, stragglers=0.0, exposed=0.0, n=1) -> dict:
    """A measured decomposition block as the train stage writes it (ranks' compute equal but one)."""
    per_rank = [compute] * (n - 1) + [compute + stragglers]
    parts = [rank_parts({"synced_s": [compute + stragglers + exposed], "unsynced_s": [c]}, [data], [optimizer], step)
             for c in per_rank]
    return decompose(parts)


def record(n: int, d: dict, gpus: int, *, cores=16, threads=None, global_batch=64, marks=()) -> TrainRecord:
    return record_of(TrainRecord, world_size=n, steps=10, marks=list(marks), decomposition=d, steady_step_s=d["step_s"],
                     gradient_bytes=GRAD, objective={"global_batch": global_batch, "gathered_embeddings": True},
                     hardware={"gpus": ["NVIDIA H100"] * gpus, "cores": cores},
                     wall_time_s=10 * d["step_s"], wall_times_s=[10 * d["step_s"]],
                     ranks=[{"rank": r, "threads": threads or max(1, cores // n),
                             "peak_memory": {"max_memory_allocated": 1e9}} for r in range(n)],
                     encoder={"implementation": "tier1-bert", "version": "0.1.0", "attention": "sdpa"})


def gpu_results(measured4: dict, busbw=10.0, marks=()) -> Results:
    r = Results()
    r.train[1] = record(1, decomposition(1.0, 0.9, data=0.02, optimizer=0.05), gpus=4)
    r.train[4] = record(4, measured4, gpus=4, marks=marks)
    r.comm[4] = comm(4, busbw)
    r.preflight = preflight(16, 4)
    return r


def test_the_sweep_is_interpolated_log_log_and_clamped_at_its_ends():
    rows = [{"bytes": 1e6, "time_s": {"median": 1e-3}}, {"bytes": 4e6, "time_s": {"median": 4e-3}},
            {"bytes": 16e6, "time_s": {"median": 8e-3}}]
    assert prediction.allreduce_seconds(rows, 4e6) == pytest.approx(4e-3)
    assert prediction.allreduce_seconds(rows, 2e6) == pytest.approx(2e-3)  # halfway in log-log
    assert prediction.allreduce_seconds(rows, 8e6) == pytest.approx(8e-3 / 2**0.5)
    assert prediction.allreduce_seconds(rows, 1e3) == pytest.approx(1e-3)  # latency floor
    assert prediction.allreduce_seconds(rows, 32e6) == pytest.approx(16e-3)  # the largest's bandwidth
    assert prediction.allreduce_seconds([], 1e6) is None


def test_backward_hides_the_all_reduce_down_to_the_last_bucket():
    # 4 GPUs, strong scaling: per-rank compute 0.9/4 = 0.225 s, backward 0.15 s
    r = gpu_results(decomposition(0.30, 0.225, data=0.005, optimizer=0.05, n=4), busbw=10.0)
    row = next(x for x in prediction.world_size_rows(r) if x["world_size"] == 4)
    allreduce = GRAD * 1.5 / 10e9  # 13.5 ms: well inside the backward
    last_bucket = 25 * 2**20 * 1.5 / 10e9
    p = row["predicted"]["seconds"]
    assert row["comm"].allreduce_s == pytest.approx(allreduce)
    assert p["exposed_comm"] == pytest.approx(last_bucket)
    assert p["compute"] == pytest.approx(0.225) and p["data"] == pytest.approx(0.005)
    assert p["optimizer"] == pytest.approx(0.05) and p["other"] == pytest.approx(0.03)
    step = 0.225 + last_bucket + 0.005 + 0.05 + 0.03
    assert row["predicted_speedup"] == pytest.approx(1.0 / step)
    assert row["measured_step_speedup"] == pytest.approx(1.0 / 0.30)
    assert row["flagged"] is False and row["largest_gap_term"] is None  # 1/0.30 is ~96% of it


def test_a_slow_all_reduce_below_80_percent_is_flagged_and_named():
    # measured at 4 ranks: 0.25 s of exposed all-reduce in a 0.60 s step
    measured = decomposition(0.60, 0.23, data=0.005, optimizer=0.05, exposed=0.25, stragglers=0.01, n=4)
    r = gpu_results(measured, busbw=9.0)
    row = next(x for x in prediction.world_size_rows(r) if x["world_size"] == 4)
    assert row["ratio"] < prediction.FLAG_BELOW and row["flagged"] is True
    assert row["largest_gap_term"] == "exposed_comm"
    assert row["why"].startswith("exposed communication: 42% of the 4-rank step")
    assert "bus bandwidth 9.00 GB/s at the 90 MB gradient" in row["why"]
    name, ok, text = analysis.prediction_verdict(r)
    assert name == "vs prediction" and ok is False and "BELOW" in text and "exposed communication" in text


def test_a_marked_run_is_shown_but_not_flagged():
    measured = decomposition(0.60, 0.23, exposed=0.30, n=4)
    row = prediction.world_size_rows(gpu_results(measured, marks=["disturbed: steal 20%"]))[1]
    assert row["ratio"] < prediction.FLAG_BELOW and row["flagged"] is None
    _, ok, text = analysis.prediction_verdict(gpu_results(measured, marks=["x"]))
    assert ok is None and "not judged" in text


def test_cpu_ranks_sharing_cores_get_no_compute_speedup():
    # 2 cores: 1 rank with 2 threads; 2 ranks with 1 each; 4 ranks time-slice the 2 cores
    r = Results()
    r.preflight = preflight(2)
    r.train[1] = record(1, decomposition(1.0, 0.8, data=0.02, optimizer=0.1), gpus=0, cores=2, threads=2)
    for n in (2, 4):
        r.train[n] = record(n, decomposition(1.6, 0.8, data=0.02, optimizer=0.1 * n, exposed=0.3, n=n),
                            gpus=0, cores=2, threads=1)
        r.comm[n] = comm(n, 0.5)
    rows = {x["world_size"]: x for x in prediction.world_size_rows(r)}
    for n in (2, 4):
        p = rows[n]["predicted"]["seconds"]
        assert rows[n]["slowdown"] == pytest.approx(n) and rows[n]["work"] == pytest.approx(1 / n)
        assert p["compute"] == pytest.approx(0.8)  # 1/n of the batch on 1/n of the cores
        assert p["optimizer"] == pytest.approx(0.1 * n)  # every rank updates all parameters, on less
        assert rows[n]["predicted_speedup"] < 1
    # the whole all-reduce at 0.5 GB/s (0.27 s at 2 ranks) minus what backward (0.53 s) hides
    assert rows[2]["predicted"]["seconds"]["exposed_comm"] == pytest.approx(25 * 2**20 / 0.5e9)
    assert analysis.projection(r) == []  # cores do not grow: no projection from a CPU


def test_cpu_gap_in_compute_names_the_shared_cores():
    r = Results()
    r.preflight = preflight(2)
    r.train[1] = record(1, decomposition(1.0, 0.8, optimizer=0.1), gpus=0, cores=2, threads=2)
    r.train[2] = record(2, decomposition(2.0, 1.7, optimizer=0.2, n=2), gpus=0, cores=2, threads=1)
    r.comm[2] = comm(2, 50.0)
    row = prediction.world_size_rows(r)[1]
    assert row["flagged"] is True and row["largest_gap_term"] == "compute"
    assert "2 ranks share 2 CPU cores (1 thread(s) each)" in row["why"]


def test_projection_uses_the_stated_internode_bandwidth_beyond_the_machine():
    r = gpu_results(decomposition(0.30, 0.225, data=0.005, optimizer=0.05, n=4), busbw=100.0)
    r.preflight.gpu["count"] = 8
    within = {p["world_size"]: p for p in analysis.projection(r)}
    assert within[8]["beyond_machine"] is False and within[16]["beyond_machine"] is True
    assert within[16]["bus_bandwidth_GBps"] == pytest.approx(100.0)
    assert "set internode_busbw_gbps" in within[16]["source"]
    r.internode_busbw_gbps = 5.0
    stated = {p["world_size"]: p for p in analysis.projection(r)}
    assert stated[8]["bus_bandwidth_GBps"] == pytest.approx(100.0)  # inside the machine: measured
    assert stated[16]["bus_bandwidth_GBps"] == 5.0 and "config" in stated[16]["source"]
    assert stated[32]["speedup"] < within[32]["speedup"]
    # strong scaling: 1/32 of the compute, the whole gradient at 5 GB/s barely hidden
    comm32 = GRAD * 2 * 31 / 32 / 5e9
    backward = 2 / 3 * 0.9 / 32
    step = 0.9 / 32 + max(comm32 - backward, 25 * 2**20 * 2 * 31 / 32 / 5e9) + 0.02 / 32 + 0.05 + 0.03
    assert stated[32]["speedup"] == pytest.approx(1.0 / step)


def test_the_report_sections_show_the_flag_and_the_cpu_note(tmp_path):
    from tier1.report import plots, table

    measured = decomposition(0.60, 0.23, data=0.005, optimizer=0.05, exposed=0.25, stragglers=0.01, n=4)
    r = gpu_results(measured, busbw=9.0)
    r.comm[4] = dataclasses.replace(r.comm[4], backend="nccl", gradient_bytes=GRAD, all_gather=[])
    text = "\n".join(table.why_sections(r))
    for heading in ("## Machine", "## Collectives", "## Step decomposition", "## Predicted vs measured"):
        assert heading in text
    assert "**BELOW**" in text and "largest term of the gap**: exposed communication" in text
    assert "CPU: ranks share" not in text
    for name in ("decomposition", "collectives"):
        plots.ALL[name](r, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 0


def test_fsdp_moves_one_and_a_half_times_ddps_bytes_timed_at_its_collectives_busbw():
    from tier1.report.prediction import ddp_bytes, fsdp_bytes, fsdp_seconds

    g = 440e6  # BERT-base's fp32 gradients
    assert ddp_bytes(g, 4) == pytest.approx(2 * g * 3 / 4)
    assert fsdp_bytes(g, g, 4) == pytest.approx(3 * g * 3 / 4)  # gathered twice, reduce-scattered once
    assert fsdp_bytes(g, g, 4) / ddp_bytes(g, 4) == pytest.approx(1.5)
    assert fsdp_bytes(g / 2, g, 4) / ddp_bytes(g, 4) == pytest.approx(1.0)  # bf16 gathers, fp32 reduction
    # nccl-tests: all-gather and reduce-scatter busbw = algbw x (n-1)/n, so t = S (n-1)/n / busbw
    assert fsdp_seconds(g, g, 4, 10.0, 5.0) == pytest.approx(2 * g * 0.75 / 10e9 + g * 0.75 / 5e9)
    assert fsdp_seconds(g, g, 1, 10.0, 5.0) == 0.0


def test_busbw_factors_follow_nccl_tests():
    from tier1.stages.commbench import busbw_factor

    assert busbw_factor("all_reduce", 4) == pytest.approx(1.5)
    assert busbw_factor("all_gather", 4) == busbw_factor("reduce_scatter", 4) == pytest.approx(0.75)
