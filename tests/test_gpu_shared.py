"""The shared-GPU rehearsal: 2 ranks on the one GPU over gloo with CUDA tensors train the same
model as 1 rank (dropout off, fp32), per step, to float noise. It runs the multi-rank CUDA path
(DDP on CUDA, the comm hook, the gathered negatives) on a machine with one GPU.

Marked `gpu`: skipped without CUDA; scripts/gpu_session.sh runs it."""

from __future__ import annotations

import pytest
import torch

import ddp_runs
import helpers

pytestmark = pytest.mark.gpu

VARIANTS = [("sgd", {"optimizer": "sgd"}), ("adamw", {"optimizer": "adamw"})]


@pytest.fixture(scope="module")
def runs(tiny_model, pairs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("shared_gpu")
    out = {}
    for world in (1, 2):
        path = folder / f"ws{world}.pt"
        helpers.spawn(ddp_runs.train_variants, world, str(tiny_model), pairs[:40], VARIANTS, str(path),
                      share_gpu=True)
        out[world] = torch.load(path)
    return out


@pytest.mark.parametrize("variant", ["sgd", "adamw"])
def test_two_ranks_on_one_gpu_equal_one_rank_at_every_step(runs, variant):
    ref, got = runs[1][variant]["losses"], runs[2][variant]["losses"]
    assert len(got) == len(ref) == 5
    for step, (a, b) in enumerate(zip(got, ref)):
        assert abs(a - b) / abs(b) <= 1e-5, f"step {step}: {a} vs {b}"
    g1, g2 = runs[1][variant]["grads"], runs[2][variant]["grads"]
    assert float((g2 - g1).norm() / g1.norm()) <= 1e-5
    assert runs[2][variant]["device"].startswith("cuda")
