"""The collectives benchmark: nccl-tests' bandwidth definitions by hand, the sweep plan, and a
real 2-rank gloo sweep on small messages."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

from tier1.config import CommbenchConfig, Tier1Config, parse_stage_json, stage_json
from tier1.runtime.distributed import Context
from tier1.stages import commbench
from tier1.stages.commbench import MiB

from helpers import REPO, spawn

# -- the definitions, against numbers worked out by hand ----------------------------------------

def test_algbw_is_bytes_over_seconds_in_gb_per_s():
    assert commbench.algbw(100_000_000, 0.5) == pytest.approx(0.2)
    assert commbench.algbw(1_000_000_000, 1.0) == pytest.approx(1.0)  # GB = 1e9 bytes, not 2**30


@pytest.mark.parametrize("n, busbw", [
    (2, 0.2),    # 2(n-1)/n = 1: with two ranks bus and algorithm bandwidth agree
    (4, 0.3),    # 2*3/4 = 1.5
    (8, 0.35),   # 2*7/8 = 1.75
])
def test_all_reduce_busbw_factor_is_2_n_minus_1_over_n(n, busbw):
    # 100 MB reduced in 0.5 s: algbw 0.2 GB/s whatever n is
    assert commbench.busbw("all_reduce", 100_000_000, 0.5, n) == pytest.approx(busbw)


@pytest.mark.parametrize("n, busbw", [
    (2, 0.2),    # (n-1)/n = 1/2
    (4, 0.3),    # 3/4
    (8, 0.35),   # 7/8
])
def test_all_gather_busbw_counts_the_gathered_output(n, busbw):
    # S is the whole output: n blocks of 100/n MB gathered in 0.25 s is algbw 0.4 GB/s
    total = 100_000_000
    assert commbench.algbw(total, 0.25) == pytest.approx(0.4)
    assert commbench.busbw("all_gather", total, 0.25, n) == pytest.approx(busbw)


def test_in_switch_all_reduce_factor_only_when_nccl_algo_says_so():
    # nccl-tests: (n-1)/(n+1) with NCCL_ALGO=NVLS or NVLSTREE, 2(n-1)/n otherwise
    assert commbench.busbw_factor("all_reduce", 8, "NVLS") == pytest.approx(7 / 9)
    assert commbench.busbw_factor("all_reduce", 8, "NVLSTREE") == pytest.approx(7 / 9)
    assert commbench.busbw_factor("all_reduce", 8, "Ring") == pytest.approx(1.75)
    assert commbench.busbw_factor("all_gather", 8, "NVLS") == pytest.approx(7 / 8)
    with pytest.raises(ValueError):
        commbench.busbw_factor("broadcast", 8)


def test_a_row_takes_the_slowest_rank_per_call_and_the_median_call():
    # rank 0 and rank 1 timed three calls each; a call is done when both are
    per_rank = [[1.0, 2.0, 3.0], [2.0, 1.0, 1.0]]
    assert commbench.call_times(per_rank) == [2.0, 2.0, 3.0]
    row = commbench.summarise("all_reduce", 8_000_000_000, 2, per_rank, warmup=1)
    assert row["time_s"] == {"median": 2.0, "min": 2.0, "max": 3.0, "mean": pytest.approx(7 / 3)}
    assert row["algbw_gbps"] == pytest.approx(4.0) and row["busbw_gbps"] == pytest.approx(4.0)
    assert row["busbw_factor"] == 1.0
    assert row["bytes_per_rank"] == 8_000_000_000 and row["elements_per_rank"] == 2_000_000_000
    gather = commbench.summarise("all_gather", 8_000_000_000, 4, [[2.0], [1.0], [1.5], [0.5]], warmup=1)
    assert gather["bytes_per_rank"] == 2_000_000_000
    assert gather["algbw_gbps"] == pytest.approx(4.0) and gather["busbw_gbps"] == pytest.approx(3.0)


# -- the sweep plan ----------------------------------------------------------------------------

def test_all_reduce_sizes_double_from_1_mib_and_end_at_the_gradient():
    grad = 90_261_504  # all-MiniLM-L6-v2 without its pooler: 22,565,376 fp32 parameters
    sizes = commbench.allreduce_sizes(grad)
    assert sizes == [MiB * 2**k for k in range(7)] + [grad]
    assert commbench.allreduce_sizes(3 * MiB) == [MiB, 2 * MiB, 3 * MiB]
    assert commbench.allreduce_sizes(4 * MiB) == [MiB, 2 * MiB, 4 * MiB]
    assert commbench.allreduce_sizes(1000) == [1000]  # a model smaller than the first size
    on_gpu = commbench.allreduce_sizes(grad, up_to=2**30)
    assert grad in on_gpu and on_gpu[-1] == 2**30 and on_gpu[:7] == sizes[:7]


def test_all_gather_sizes_are_whole_outputs_of_the_loss_block_and_larger():
    block = 16 * 384 * 4  # 16 embeddings of width 384 per rank, float32
    assert commbench.allgather_sizes(block, 2) == [2 * block, 8 * block, 32 * block, 128 * block]


def test_iterations_follow_nccl_tests_over_nccl_and_shrink_with_size_over_gloo():
    assert commbench.iterations(2**30, nccl=True) == (5, 20)
    assert commbench.iterations(MiB, nccl=False) == (1, 10)
    assert commbench.iterations(8 * MiB, nccl=False) == (1, 10)
    assert commbench.iterations(16 * MiB, nccl=False) == (1, 5)
    assert commbench.iterations(90_261_504, nccl=False) == (1, 5)


@pytest.mark.parametrize("device, shared, nccl", [("cpu", False, False), ("cuda", True, False),
                                                  ("cuda", False, True)])
def test_only_nccl_gets_the_gpu_sweep(device, shared, nccl):
    # ranks sharing one GPU run over gloo: each call goes through host memory, so the 1 GiB sweep
    # and nccl-tests' 25 calls a size would spend minutes of a GPU check on figures nobody reads
    assert commbench.over_nccl(Context(0, 2, 0, 2, torch.device(device), 1, shared)) is nccl


def test_ranks_sharing_a_gpu_take_the_matmul_probe_one_at_a_time(monkeypatch):
    # together, each would read about half the GPU's rate and report it as its own
    events = []
    monkeypatch.setattr(commbench, "over_nccl", lambda ctx: False)
    monkeypatch.setattr(commbench.distributed, "barrier", lambda: events.append("barrier"))
    monkeypatch.setattr(commbench.distributed, "all_gather_objects", lambda mine: [7e14, mine])
    monkeypatch.setattr(commbench.devices, "device_name", lambda device: "NVIDIA H100 80GB HBM3")
    monkeypatch.setattr(commbench.flops, "measured_matmul_peak",
                        lambda device, dtype, size, repeats: events.append("matmul") or 6e14)
    probe = commbench.matmul_probe(Context(1, 2, 1, 2, torch.device("cuda", 0), 8), torch.bfloat16)
    assert events == ["barrier", "barrier", "matmul"]  # rank 1 measures in the second turn, alone
    assert probe["ranks_in_turn"] and probe["achieved_tflops_per_rank"] == [700.0, 600.0]


def test_the_stage_view_and_the_gathered_block():
    strong = Tier1Config(batch_size=32, gpu_counts=[1, 2, 4]).view(CommbenchConfig)
    assert strong.per_device_batch(2) == 16 and strong.per_device_batch(4) == 8
    weak = Tier1Config(batch_size=32, scaling="weak", gpu_counts=[1, 2, 4]).view(CommbenchConfig)
    assert weak.per_device_batch(4) == 32
    cfg = Tier1Config(gpu_counts=[1, 2])
    assert parse_stage_json(stage_json(cfg, "commbench"), "commbench") == cfg.view(CommbenchConfig)
    # a change the messages do not depend on leaves the measurement cached
    assert stage_json(cfg, "commbench") == stage_json(Tier1Config(gpu_counts=[1, 2], learning_rate=1.0), "commbench")


def test_gradient_size_counts_the_trainable_parameters(tiny_model):
    from tier1.encoder import model

    params, nbytes, width = commbench.model_sizes(str(tiny_model))
    encoder, _ = model.load(str(tiny_model))
    assert params == sum(p.numel() for p in encoder.parameters()) and nbytes == 4 * params
    assert width == 32


# -- a real sweep on two gloo ranks --------------------------------------------------------------

GRADIENT = 2 * MiB + 4096  # sizes 1 MiB, 2 MiB and this one: fast on any CPU
BLOCK = 8 * 32 * 4


def _sweep_rank(rank: int, world_size: int, out: str) -> None:
    import torch

    from tier1.runtime import distributed

    ctx = distributed.setup(timeout_s=60)
    try:
        result = commbench.benchmark(ctx, GRADIENT, BLOCK, torch.float32)
        if rank == 0:
            with open(out, "w") as f:
                json.dump(result, f)
    finally:
        distributed.teardown()


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("comm") / "ws2.json"
    spawn(_sweep_rank, 2, str(out))
    return json.loads(out.read_text())


def test_two_rank_gloo_sweep_measures_every_size(sweep):
    assert sweep["backend"] == "gloo" and sweep["world_size"] == 2 and sweep["device_type"] == "cpu"
    assert [r["bytes"] for r in sweep["all_reduce"]] == [MiB, 2 * MiB, GRADIENT]
    assert [r["role"] for r in sweep["all_reduce"]] == [None, None, "gradient"]
    # the loss's gathers, then FSDP2's: parameters gathered and gradients reduce-scattered at the gradient's size
    assert [r["bytes"] for r in sweep["all_gather"]] == [2 * BLOCK * m for m in (1, 4, 16, 64)] + [GRADIENT]
    assert sweep["all_gather"][0]["role"] == "loss embeddings" and sweep["all_gather"][0]["bytes_per_rank"] == BLOCK
    assert sweep["all_gather"][-1]["role"] == "parameters"
    assert [(r["bytes"], r["role"], r["bytes_per_rank"]) for r in sweep["reduce_scatter"]] == [
        (GRADIENT, "gradient", GRADIENT // 2)]
    assert sweep["summary"]["gradient_reduce_scatter"]["busbw_gbps"] > 0
    for name, factor in (("all_reduce", 1.0), ("all_gather", 0.5), ("reduce_scatter", 0.5)):  # 2(n-1)/n, (n-1)/n
        for row in sweep[name]:
            t = row["time_s"]
            assert len(row["times_s"]) == row["iters"] == commbench.iterations(row["bytes"], nccl=False)[1]
            assert 0 < t["min"] <= t["median"] <= t["max"]
            assert row["algbw_gbps"] == pytest.approx(row["bytes"] / t["median"] / 1e9)
            assert row["busbw_factor"] == factor and row["busbw_gbps"] == pytest.approx(factor * row["algbw_gbps"])


def test_two_rank_sweep_summary_and_matmul_probe(sweep):
    summary = sweep["summary"]
    assert summary["gradient_all_reduce"]["bytes"] == GRADIENT == sweep["gradient_bytes"]
    assert summary["loss_all_gather"]["bytes_per_rank"] == BLOCK == sweep["embedding_block_bytes"]
    assert summary["all_reduce_busbw_max_gbps"] == max(r["busbw_gbps"] for r in sweep["all_reduce"])
    probe = sweep["matmul"]
    assert probe["dtype"] == "float32" and len(probe["achieved_tflops_per_rank"]) == 2
    assert probe["achieved_tflops_median"] > 0
    assert probe["peak_tflops"] is None and probe["fraction_of_peak"] is None  # no datasheet peak for a CPU
    assert len(sweep["rank_windows"]) == 2 and isinstance(sweep["marks"], list)
    assert 0 < sweep["work_s"] < 300  # rank 0's seconds of measuring, for the report's pipeline overhead


def test_one_rank_is_refused(tmp_path):
    cfg = stage_json(Tier1Config(gpu_counts=[1]), "commbench")
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow"), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([sys.executable, "-m", "tier1.stages.commbench", "--config", cfg, "--out", str(tmp_path / "x.json")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "2 or more ranks" in proc.stderr
    assert not (tmp_path / "x.json").exists()


@pytest.mark.gpu
def test_nccl_sweep_on_two_gpus(tmp_path, tiny_model):
    import torch

    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    cfg = stage_json(Tier1Config(gpu_counts=[1, 2], model=str(tiny_model), batch_size=8), "commbench")
    out = tmp_path / "ws2.json"
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow")}
    subprocess.run([sys.executable, "-m", "tier1.runtime.launch", "--ranks", "2", "--gpus", "tier1.stages.commbench", "--config", cfg,
                    "--out", str(out), "--max-bytes", str(64 * MiB)], check=True, env=env, timeout=300)
    record = json.loads(out.read_text())
    assert record["backend"] == "nccl" and record["device_type"] == "cuda"
    assert record["all_reduce"][-1]["bytes"] == 64 * MiB
    assert all(r["iters"] == 20 and r["busbw_gbps"] > 0 for r in record["all_reduce"])
    assert record["matmul"]["dtype"] == "bfloat16" and record["matmul"]["achieved_tflops_median"] > 1


def test_the_report_collects_preflight_and_comm_by_world_size(tmp_path):
    from tier1.records import CollectivesRecord, ManifestRecord, PreflightRecord, TrainRecord
    from tier1.report.collect import Inputs, collect

    from helpers import record

    def put(name, kind, **fields):
        path = tmp_path / name
        record(kind, **fields).write(path)
        return str(path)

    (tmp_path / "l1.csv").write_text("step,loss\n1,0.5\n")
    inputs = Inputs({"manifest": put("manifest.json", ManifestRecord), "train": {"1": put("t1.json", TrainRecord, world_size=1)},
                     "loss": {"1": str(tmp_path / "l1.csv")},
                     "preflight": put("preflight.json", PreflightRecord, stage="preflight", cpu={"cores_available": 2}),
                     "comm": {"4": put("ws4.json", CollectivesRecord, world_size=4, backend="gloo"),
                              "2": put("ws2.json", CollectivesRecord, world_size=2, backend="gloo")}})
    r = collect(inputs)
    assert r.preflight.cpu["cores_available"] == 2
    assert sorted(r.comm) == [2, 4] and r.comm[4].world_size == 4
    assert r.source("comm", 2).endswith("ws2.json") and r.source("preflight", 0).endswith("preflight.json")
    # a record given as another world size than its own is refused, naming the file
    inputs = dataclasses.replace(inputs, records={**inputs.records, "comm": {"2": str(tmp_path / "ws4.json")}})
    with pytest.raises(ValueError, match="ws4.json: a record of world size 4, given as world size 2"):
        collect(inputs)


def test_the_report_says_when_the_matmul_ranks_took_turns():
    from types import SimpleNamespace

    from tier1.report.table import collectives_section

    matmul = {"dtype": "bfloat16", "achieved_tflops_median": 650.0, "fraction_of_peak": 0.66, "ranks_in_turn": True}
    comm = SimpleNamespace(summary={}, matmul=matmul, backend="gloo", marks=[])
    row = collectives_section(SimpleNamespace(comm={2: comm}))[-2]
    assert "TFLOP/s bfloat16 (66% of peak), one rank at a time on the shared GPU |" in row
