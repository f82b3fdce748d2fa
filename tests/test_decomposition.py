"""The step decomposition: its arithmetic on hand-made ranks, and the unsynced re-run leaving the
trained run untouched at 2 ranks."""

from __future__ import annotations

import pytest
import torch

from tier1.training.decomposition import decompose, rank_parts

import ddp_runs
import helpers


def part(synced, unsynced, data=0.01, optimizer=0.05, step=1.0):
    return rank_parts({"step_indices": [7, 8, 9], "synced_s": synced, "unsynced_s": unsynced},
                      [data] * 3, [optimizer] * 3, step)


def test_one_rank_has_no_sync_cost_by_definition():
    d = decompose([part([0.8, 0.9, 0.85], [0.8, 0.9, 0.85])])
    s = d["seconds"]
    assert s["compute"] == pytest.approx(0.85) and s["exposed_comm"] == 0.0 and s["stragglers"] == 0.0
    assert s["other"] == pytest.approx(1.0 - 0.85 - 0.01 - 0.05)
    assert d["steps_rerun"] == 0 and "by definition" in d["method"]


def test_exposed_comm_and_stragglers_add_up_to_the_synced_step():
    # ranks' own compute 0.50, 0.52, 0.50, 0.60: the slowest is 0.10 s behind the median (0.51);
    # every rank's synced forward+backward is the slowest compute plus 0.20 s of exposed comm
    ranks = [part([0.80] * 3, [c] * 3, step=1.0) for c in (0.50, 0.52, 0.50, 0.60)]
    d = decompose(ranks)
    s = d["seconds"]
    assert s["compute"] == pytest.approx(0.51)
    assert s["stragglers"] == pytest.approx(0.09)
    assert s["exposed_comm"] == pytest.approx(0.20)
    assert s["compute"] + s["stragglers"] + s["exposed_comm"] == pytest.approx(d["synced_forward_backward_s"])
    assert sum(s.values()) == pytest.approx(1.0)  # other closes the step
    assert d["fraction_of_step"]["exposed_comm"] == pytest.approx(0.20)
    assert d["per_rank"]["compute_s"] == [0.50, 0.52, 0.50, 0.60]


def test_noise_never_makes_communication_negative():
    d = decompose([part([0.50] * 3, [0.55] * 3), part([0.50] * 3, [0.55] * 3)])
    assert d["seconds"]["exposed_comm"] == 0.0 and d["seconds"]["stragglers"] == 0.0


def test_no_parts_no_decomposition():
    assert decompose([]) is None
    assert decompose([None, None]) is None  # an older rank record without step parts


@pytest.fixture(scope="module")
def rerun(tiny_model, pairs, tmp_path_factory):
    path = tmp_path_factory.mktemp("unsynced") / "ws2.pt"
    helpers.spawn(ddp_runs.unsynced_rerun, 2, str(tiny_model), pairs[:40], str(path))
    return torch.load(path, weights_only=False)


@pytest.mark.parametrize("accum", [1, 2])
def test_unsynced_rerun_at_two_ranks_leaves_the_run_untouched(rerun, accum):
    r = rerun[accum]
    assert r["unchanged"] and r["grads_dropped"]
    assert r["buckets_reduced"] == 0  # no_sync really skipped the gradient all-reduce
    assert r["buckets_reduced_synced"] > 0
    assert r["unsynced"]["step_indices"] == [2, 3, 4] and len(r["unsynced"]["unsynced_s"]) == 3
    assert all(t > 0 for t in r["unsynced"]["unsynced_s"])
    d = r["decomposition"]
    assert d["world_size"] == 2 and d["steps_rerun"] == 3 and d["seconds"]["compute"] > 0
