"""World sizes follow the machine, and each job gets exactly its GPUs (GPUs faked: none here)."""

from __future__ import annotations

import pytest

from tier1.config import ConfigError, Tier1Config, normalise_gpu_counts
from tier1.runtime import gpus, launch

MACHINE = ["GPU-aaaa-0", "GPU-bbbb-1", "GPU-cccc-2", "GPU-dddd-3"]  # NVML's, in PCI bus order


@pytest.mark.parametrize("n, sizes", [(0, (1, 2, 4)), (1, (1,)), (2, (1, 2)), (3, (1, 2, 3)),
                                      (4, (1, 2, 4)), (8, (1, 2, 4, 8)), (6, (1, 2, 4, 6))])
def test_auto_world_sizes(n, sizes):
    assert gpus.auto_world_sizes(n) == sizes
    assert Tier1Config(batch_size=48).resolve([f"gpu{i}" for i in range(n)]).world_sizes == sizes


def test_auto_leaves_out_a_world_size_the_batch_does_not_split_over():
    assert Tier1Config(batch_size=32).resolve(["gpu0", "gpu1", "gpu2"]).world_sizes == (1, 2)


def test_a_world_size_above_the_gpus_is_refused_naming_the_fix():
    with pytest.raises(ConfigError, match=r"gpu_counts: world size 4 needs 4 GPUs, but jobs here see 2 .*auto"):
        Tier1Config(gpu_counts=(1, 2, 4)).resolve(["gpu0", "gpu1"])
    assert Tier1Config(gpu_counts=(1, 2, 4)).resolve([]).world_sizes == (1, 2, 4)  # CPU rehearsal


def test_use_multi_gpu_off_is_one_rank_everywhere():
    assert Tier1Config(use_multi_gpu=False).resolve(MACHINE).world_sizes == (1,)


@pytest.mark.parametrize("given, expected", [("auto", "auto"), (["1", "2"], [1, 2]), ("1,2", [1, 2]),
                                             ("[1, 2]", [1, 2]), (2, [2]), ([1, 4], [1, 4])])
def test_gpu_counts_from_the_command_line(given, expected):
    assert normalise_gpu_counts(given) == expected


def test_gpu_counts_nonsense_is_a_named_error():
    with pytest.raises(ConfigError, match="gpu_counts"):
        normalise_gpu_counts("many")


@pytest.fixture()
def machine(monkeypatch):
    monkeypatch.setattr(gpus, "_nvml_gpus", lambda: list(MACHINE))


def test_visible_gpus_follow_cuda_visible_devices(machine):
    assert gpus.visible_gpus({}) == MACHINE
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": "2,0"}) == [MACHINE[2], MACHINE[0]]
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": "GPU-bbbb"}) == [MACHINE[1]]
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": "1,7,2"}) == [MACHINE[1]]  # CUDA stops at a bad entry
    assert gpus.visible_gpus({"TIER1_GPUS": "3"}) == ["gpu0", "gpu1", "gpu2"]


def test_a_job_gets_exactly_its_gpus_by_uuid(machine):
    env = launch.job_environment(2, True, {"CUDA_VISIBLE_DEVICES": "3,1,0"})
    assert env["CUDA_VISIBLE_DEVICES"] == f"{MACHINE[3]},{MACHINE[1]}"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and env["TIER1_REQUIRE_GPU"] == "1"
    with pytest.raises(SystemExit, match="needs 4 GPU"):
        launch.job_environment(4, True, {"CUDA_VISIBLE_DEVICES": "0,1"})
    cpu = launch.job_environment(4, False, {"X": "1"})
    assert "CUDA_VISIBLE_DEVICES" not in cpu and cpu["X"] == "1"  # CPU ranks: nothing pinned


def test_launch_command_runs_one_rank_plainly_and_several_under_torchrun():
    assert launch.command(1, "tier1.stages.train", ["--x"])[1:] == ["-m", "tier1.stages.train", "--x"]
    several = launch.command(4, "tier1.stages.train", ["--x"])
    assert "torch.distributed.run" in several and "--nproc_per_node=4" in several and "--max-restarts=0" in several


def test_a_job_meant_for_gpus_refuses_the_cpu(monkeypatch):
    from tier1.runtime import distributed

    monkeypatch.setenv("TIER1_REQUIRE_GPU", "1")
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(RuntimeError, match="planned for GPUs"):
        distributed.setup()
