"""The shared-GPU rehearsal, as far as a CPU can show it: refused unless asked, the ranks' job
environment, and "not a speedup" wherever the report shows its numbers. The CUDA run itself is
tests/test_gpu_shared.py (GPU-marked)."""

from __future__ import annotations

import dataclasses

import pytest

from test_prediction import decomposition, record
from test_sweep import sweep_record
from tier1.config import ConfigError, Tier1Config
from tier1.report import analysis, sweep
from tier1.report.collect import Results
from tier1.runtime.launch import job_environment

ONE_GPU = ["GPU-0000"]


def test_more_ranks_than_gpus_is_refused_unless_share_gpu_is_asked():
    with pytest.raises(ConfigError, match=r"share_gpu: true runs them on one GPU as a rehearsal"):
        Tier1Config(gpu_counts=(1, 2)).resolve(ONE_GPU)
    assert Tier1Config(gpu_counts=(1, 2), share_gpu=True).resolve(ONE_GPU).gpu_counts == (1, 2)
    assert Tier1Config(share_gpu=True).resolve(ONE_GPU).gpu_counts == (1, 2)  # auto on one GPU
    with pytest.raises(ConfigError, match="share_gpu: true rehearses N ranks on one GPU, but jobs here see no GPU"):
        Tier1Config(share_gpu=True).resolve([])


def test_the_ranks_share_the_first_gpu_and_know_it():
    env = job_environment(2, True, {"TIER1_GPUS": "1"}, share_gpu=True)  # one GPU declared, two ranks
    assert env["TIER1_SHARE_GPU"] == "1"
    plain = job_environment(2, True, {"TIER1_GPUS": "2"})
    assert "TIER1_SHARE_GPU" not in plain
    with pytest.raises(SystemExit, match="needs 2 GPU"):
        job_environment(2, True, {"TIER1_GPUS": "1"})


def test_the_report_marks_it_not_a_speedup():
    r = Results()
    r.train[1] = record(1, decomposition(1.0, 0.8), gpus=1)
    r.train[2] = record(2, decomposition(0.9, 0.4, n=2), gpus=1)
    assert analysis.shared_gpu(r)
    assert analysis.oversubscription(r)[0].startswith("Shared-GPU rehearsal: not a speedup.")
    assert not analysis.on_gpus(r, 2)  # so the scaling verdict is not judged
    for b in (32, 128):
        r.sweep[(b, 1)] = sweep_record(b, 1, 0.2)
        r.sweep[(b, 2)] = dataclasses.replace(sweep_record(b, 2, 0.25), gpus=1)
    assert sweep.sentence(r).startswith("shared-GPU rehearsal: not a speedup")
