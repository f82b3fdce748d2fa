"""The report's derived numbers on hand-made inputs: verdicts, projection, loss differences."""

from __future__ import annotations

import dataclasses

import pytest

from tier1.records import EvaluationRecord, TrainRecord
from tier1.report import analysis
from tier1.report.collect import Results

from helpers import record


def train_record(n: int, wall: float, gpus: int, *, samples=None, checksums_equal=True, global_batch=32,
                 negatives=31, step_s=None, allreduce_s=None, cores=16) -> TrainRecord:
    per_rank = samples if samples is not None else [512 // n] * n
    return record(
        TrainRecord, world_size=n, wall_time_s=wall, wall_times_s=[wall], samples_per_s=512 / wall,
        steps=16, expected_samples=512, checksums_equal=checksums_equal,
        objective={"global_batch": global_batch, "negatives_per_anchor": negatives},
        hardware={"gpus": ["NVIDIA A40"] * gpus, "cores": cores},
        ranks=[{"rank": r, "samples": s, "threads": 4, "peak_memory": {"max_memory_allocated": 1e9},
                "device_capacity_bytes": 46e9 if gpus else None} for r, s in enumerate(per_rank)],
        time_split_median_s={"step": step_s if step_s is not None else wall / 16},
        allreduce_gradients_s=allreduce_s, gradient_bytes=90_000_000,
        encoder={"implementation": "tier1-bert", "version": "0.1.0", "attention": "math"},
    )


def eval_record(n: int, wall: float, ndcg: float) -> EvaluationRecord:
    return record(EvaluationRecord, world_size=n, wall_time_s=wall, wall_times_s=[wall], documents_per_s=300 / wall,
                  metrics={"ndcg@10": ndcg, "mrr@10": ndcg})


def results(train_walls: dict[int, float], gpus: int, ndcg: dict[int, float] | None = None, **kw) -> Results:
    r = Results()
    for n, wall in train_walls.items():
        r.train[n] = train_record(n, wall, gpus, **kw)
        r.eval_base[n] = eval_record(n, 10.0 / n, 0.80)
        r.eval_trained[n] = eval_record(n, 10.0 / n, (ndcg or {}).get(n, 0.83))
        r.loss[n] = losses(0.001 if n > 1 else 0.0)
    # the 1-rank run with other dropout masks: as far from the 1-rank run as the others are
    r.reference_loss = losses(-0.001)
    return r


def losses(off: float, steps: int = analysis.DROPOUT_MIN_STEPS) -> list[dict]:
    """A falling loss curve, `off` away from the 1-rank run's at every second step."""
    return [{"step": float(i), "loss": 2.0 - 0.05 * i + (off if i % 2 == 0 else 0.0)} for i in range(1, steps + 1)]


def verdict(r: Results, name: str) -> tuple[bool | None, str]:
    for v_name, ok, text in analysis.verdicts(r):
        if v_name == name:
            return ok, text
    raise KeyError(name)


def test_scaling_passes_at_the_card_efficiency_and_fails_below_it():
    ok, text = verdict(results({1: 600.0, 4: 200.0}, gpus=4), "scaling")
    assert ok is True and "3.00x" in text
    ok, _ = verdict(results({1: 600.0, 4: 300.0}, gpus=4), "scaling")
    assert ok is False  # 2x on 4 GPUs is 50%, below the card's 75%


def test_scaling_is_not_judged_when_ranks_share_a_device_or_cores():
    ok, text = verdict(results({1: 60.0, 4: 20.0}, gpus=0), "scaling")
    assert ok is None and "not judged" in text
    ok, _ = verdict(results({1: 60.0, 4: 20.0}, gpus=1), "scaling")
    assert ok is None
    notes = analysis.oversubscription(results({1: 60.0, 4: 20.0}, gpus=1))
    assert any("4 ranks ran on 1 GPU(s)" in n for n in notes)


def test_same_model_fails_on_a_different_objective_or_a_quality_gap():
    ok, text = verdict(results({1: 60.0, 2: 30.0}, gpus=2), "same model")
    assert ok is True and "7.07e-04" in text and "2.12e-03 = 3x" in text
    ok, _ = verdict(results({1: 60.0, 2: 30.0}, gpus=2, ndcg={2: 0.80}), "same model")
    assert ok is False  # |ΔnDCG@10| 0.03 > 0.01
    r = results({1: 60.0, 2: 30.0}, gpus=2)
    r.train[2].objective["negatives_per_anchor"] = 15  # no gathered negatives: another loss
    ok, text = verdict(r, "same model")
    assert ok is False and "NO" in text


def per_query(r: Results, n: int, scores: list[float]) -> None:
    """World size n's trained model scoring `scores` on queries q0, q1, ... (its mean with them)."""
    r.eval_trained[n] = dataclasses.replace(r.eval_trained[n], metrics={"ndcg@10": sum(scores) / len(scores)},
                                            ndcg10_per_query={f"q{i}": s for i, s in enumerate(scores)},
                                            queries_judged=len(scores))


def test_an_ndcg_gap_the_test_set_cannot_resolve_is_not_judged_and_a_real_one_fails():
    # 100 queries on which the 2-rank model wins or loses 0.2 at random, by 0.011 on average:
    # noise of a test set that small (3 standard errors 0.06), as between two dropout draws
    r = results({1: 60.0, 2: 30.0}, gpus=2)
    one = [0.5] * 100
    per_query(r, 1, one)
    per_query(r, 2, [s + (0.2 if i % 2 else -0.2) + 0.011 for i, s in enumerate(one)])
    ok, text = verdict(r, "same model")
    assert ok is None and "|ΔnDCG@10| 0.0110 (within the test set's noise" in text and "100 queries judged" in text
    # the same mean gap on every query alike: the test set resolves it
    per_query(r, 2, [s + 0.011 for s in one])
    assert verdict(r, "same model")[0] is False
    # a gap within the tolerance passes whatever the spread
    per_query(r, 2, [s + (0.2 if i % 2 else -0.2) + 0.005 for i, s in enumerate(one)])
    assert verdict(r, "same model")[0] is True


def test_same_model_sets_the_first_step_gradient_norm_beside_one_ranks():
    r = results({1: 60.0, 2: 30.0, 4: 15.0}, gpus=4)
    for n, norm in ((1, 4.0), (2, 4.002), (4, 16.0)):  # 4 ranks: a gradient summed, not averaged
        for rank in r.train[n].ranks:
            rank["first_step_gradient_norm"] = norm
    _, text = verdict(r, "same model")
    assert "2 ranks: |ΔnDCG@10| 0.0000, per-step loss RMS difference 7.07e-04, first-step gradient norm 1.000x" in text
    assert "first-step gradient norm 4.000x 1 rank's" in text
    del r.train[1].ranks[0]["first_step_gradient_norm"]  # a record from before the norm was kept
    assert "gradient norm" not in verdict(r, "same model")[1]


def test_all_ranks_worked_needs_every_rank_counted_and_equal_checksums():
    assert verdict(results({1: 60.0, 2: 30.0}, gpus=2), "all ranks worked")[0] is True
    idle = results({1: 60.0, 2: 30.0}, gpus=2, samples=None)
    idle.train[2].ranks[1]["samples"] = 0
    assert verdict(idle, "all ranks worked")[0] is False
    diverged = results({1: 60.0, 2: 30.0}, gpus=2, checksums_equal=False)
    assert verdict(diverged, "all ranks worked")[0] is False


def test_projection_uses_the_measured_bus_bandwidth_and_needs_own_gpus():
    # 1-rank step 1 s; 90 MB of gradients all-reduced in 0.1 s at 4 ranks: busbw = 1.5 * 0.9 GB/s.
    r = results({1: 16.0, 4: 5.0}, gpus=4, step_s=1.0, allreduce_s=0.1)
    proj = {p["world_size"]: p for p in analysis.projection(r)}
    bus = 2 * 3 / 4 * 90e6 / 0.1
    assert proj[8]["bus_bandwidth_GBps"] == pytest.approx(bus / 1e9)
    comm8 = 2 * 7 / 8 * 90e6 / bus
    # without a split of the 1-rank step, all of it is compute; backward (2/3 of it) hides the
    # all-reduce but for the last 25 MiB bucket, which starts when backward ends
    backward8, last8 = 2 / 3 * (1.0 / 8), 2 * 7 / 8 * 25 * 2**20 / bus
    assert proj[8]["speedup"] == pytest.approx(1.0 / (1.0 / 8 + max(comm8 - backward8, last8)))
    assert proj[8]["speedup"] < proj[16]["speedup"] < 32
    assert analysis.projection(results({1: 16.0, 4: 5.0}, gpus=0, step_s=1.0, allreduce_s=0.1)) == []


def test_loss_beyond_dropout_noise_is_flagged():
    r = results({1: 60.0, 2: 30.0}, gpus=2)
    r.loss[2][1]["loss"] += 0.05  # 0.05 off at step 2: far more than two dropout draws differ
    ok, text = verdict(r, "same model")
    assert ok is False
    assert analysis.loss_agreement(r)["rms"][2] == pytest.approx(((0.051 ** 2 + 4 * 0.001 ** 2) / 10) ** 0.5)


def test_too_few_steps_leave_the_losses_unjudged_against_dropout_noise():
    """3 steps (the quick check): two runs with the same dropout noise differ 3x in RMS about 5% of
    the time, so a loss difference there is no failure; a gap in nDCG@10 still is."""
    r = results({1: 60.0, 2: 30.0}, gpus=2)
    r.loss = {1: losses(0.0, 3), 2: losses(0.05, 3)}
    r.reference_loss = losses(-0.001, 3)
    ok, text = verdict(r, "same model")
    assert ok is None and "per-step losses not judged: 3 steps are too few" in text
    r.eval_trained[2] = eval_record(2, 5.0, 0.80)
    assert verdict(r, "same model")[0] is False
    # without dropout (no reference run, or one that equals the 1-rank run) the float-noise
    # tolerance holds at any number of steps
    for reference in ([], losses(0.0, 3)):
        r.reference_loss = reference
        assert analysis.loss_agreement(r)["judged"]


def test_without_a_dropout_reference_only_float_noise_is_allowed():
    r = results({1: 60.0, 2: 30.0}, gpus=2)
    r.reference_loss = []
    assert verdict(r, "same model")[0] is False  # 7e-4 is no float noise
    r.loss[2] = [dict(row, loss=row["loss"] * (1 + 2e-7)) for row in r.loss[1]]
    ok, text = verdict(r, "same model")
    assert ok is True and "float noise" in text


def test_speedup_and_efficiency_rows():
    rows = {x["world_size"]: x for x in analysis.scaling_rows(results({1: 60.0, 2: 40.0}, gpus=2))}
    assert rows[2]["train_speedup"] == pytest.approx(1.5) and rows[2]["train_efficiency"] == pytest.approx(0.75)
    assert rows[2]["memory_capacity_bytes"] == 92e9


def test_a_marked_time_gets_no_speedup_and_no_verdict():
    r = results({1: 600.0, 4: 150.0}, gpus=4)
    r.train[4] = dataclasses.replace(r.train[4], marks=["resumed at step 6 of 16: the wall time covers only the steps after it"])
    rows = {x["world_size"]: x for x in analysis.scaling_rows(r)}
    assert rows[4]["train_speedup"] is None and rows[4]["train_marks"]
    ok, text = verdict(r, "scaling")
    assert ok is None and "resumed at step 6" in text


def test_stalls_and_resumes_are_marked():
    from tier1.training import record

    steps = [1.0] * 30 + [40.0] + [1.0] * 9
    found = record.stalls(steps)
    assert [s["step_index"] for s in found] == [30]
    marks = record.marks(start_step=6, total_steps=40, step_stalls=found)
    assert any(m.startswith("resumed at step 6 of 40") for m in marks) and any("stalled: 1 step" in m for m in marks)
    assert record.marks(0, 40, record.stalls([1.0] * 40)) == []
