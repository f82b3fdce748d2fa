"""The decomposition on warm shapes: it uses only steps whose shapes every rank had met, so a
first-shape set-up is never booked as communication."""

from __future__ import annotations

import pytest

from tier1.encoder.packed_ids import PackedIds
from tier1.training import warm_steps
from tier1.training.buckets import bucket
from tier1.training.decomposition import decompose, rank_parts
from tier1.training.plan import BatchPlan

A, B, C, D = (frozenset({(0, 8, w)}) for w in (32, 48, 64, 80))


def test_steps_that_meet_a_shape_first_are_never_picked():
    shapes = [A, B, A, B, A, C, B]  # step 5 meets C first; steps 0 and 1 meet A and B first
    chosen, cold = warm_steps.pick(shapes, first_timed=0, end=7, k=3)
    assert chosen == [3, 4, 6] and cold == 3
    # the untimed warm-up met step 0's shapes: step 0 is warm too
    assert warm_steps.pick(shapes, 0, 3, k=3, warmed=A) == ([0, 2], 1)
    # a resumed run met nothing before its window: shapes of earlier steps do not count
    assert warm_steps.pick(shapes, 4, 7, k=3) == ([], 3)


def synced_and_unsynced(shapes, compute=0.20, comm=0.03, setup=0.50):
    """Each step's synced forward+backward (compute, exposed comm, and a step's first-shape set-up)
    and its unsynced re-run, which replays a batch met before: no set-up."""
    seen, synced = set(), []
    for s in shapes:
        synced.append(compute + comm + (setup if not s <= seen else 0.0))
        seen |= s
    return synced, [compute] * len(shapes)


@pytest.mark.parametrize("world", [2, 4])
def test_the_decomposition_books_no_first_shape_set_up_as_communication(world):
    shapes = [A, B, A, B, A, B, A, B, C, D]  # the window's last two steps meet C and D first
    synced, unsynced = synced_and_unsynced(shapes)
    chosen, cold = warm_steps.pick(shapes, 0, len(shapes), k=3)
    assert chosen == [5, 6, 7] and cold == 4

    def parts(indices):
        return [rank_parts({"step_indices": indices, "synced_s": [synced[i] for i in indices],
                            "unsynced_s": [unsynced[i] for i in indices]}, [0.01], [0.02], 0.30)
                for _ in range(world)]

    warm = decompose(parts(chosen))
    assert warm["seconds"]["exposed_comm"] == pytest.approx(0.03)  # the communication, nothing else
    assert warm["step_indices"] == [5, 6, 7]
    # the old rule, the last 3 steps whatever their shapes: steps 8 and 9's set-up booked as communication
    old = decompose(parts([7, 8, 9]))
    assert old["seconds"]["exposed_comm"] > 0.03 + 0.1


def test_step_shapes_are_the_buckets_each_rank_meets():
    ids = [[1] * n for n in (3, 5, 9, 12, 4, 6, 7, 8) * 4]  # 32 texts of known lengths
    plan = BatchPlan(n_pairs=32, global_batch=16, world_size=2, grad_accum_steps=1, num_epochs=1, seed=0)
    schedule = plan.schedule()
    rungs = tuple(range(1, 13))  # a rung at every width: each part padded to its own longest text

    def shapes_of(global_indices, rank):  # what Trainer.shapes_of gives: the buckets of the rank's slice
        return {shape for micro in plan.micro_batches(plan.local_slice(global_indices, rank))
                for shape in bucket(PackedIds.from_rows(ids), micro, 0, 1, rungs).shapes}

    shapes = warm_steps.step_shapes(plan.world_size, schedule, shapes_of)
    assert len(shapes) == 2
    for (_, batch), s in zip(schedule, shapes):
        for rank in (0, 1):
            local = plan.local_slice(batch, rank)
            width = max(len(ids[i]) for i in local)
            assert (rank, 8, width) in s


def test_a_trained_run_re_uses_the_chosen_steps_own_times(tiny_model, pairs):
    from tier1.config import Tier1Config, TrainConfig
    from tier1.encoder import model
    from tier1.encoder.token_cache import pair_tokens
    from tier1.runtime import distributed
    from tier1.training.builder import build_trainer

    ctx = distributed.setup()
    cfg = Tier1Config.from_dict({"model": str(tiny_model), "batch_size": 8, "gpu_counts": [1], "max_seq_length": 32,
                                 "length_buckets": 1}).view(TrainConfig)
    encoder, tokenizer = model.load(str(tiny_model))
    trainer = build_trainer(cfg, ctx, encoder, pair_tokens(tokenizer, pairs[:48], 32))
    trainer.fit()
    warm = warm_steps.choose(trainer, 3)
    assert warm["window_steps"] == 6 and len(warm["indices"]) == 3
    assert set(warm["cold_used"]) <= set(warm["indices"]) and all(0 <= i < 6 for i in warm["indices"])
    got = trainer.measure_unsynced(indices=warm["indices"])
    assert got["step_indices"] == warm["indices"]
    assert got["synced_s"] == [trainer.times.compute[i] for i in warm["indices"]]


def test_a_cpu_training_stage_warms_every_shape_its_window_meets(tmp_path, tiny_model, pairs):
    """On a CPU each shape is warmed through the first layer before the window: none is first met
    inside it, and the warmed shapes are those the window met."""
    import json

    from tier1.config import Tier1Config, TrainConfig
    from tier1.runtime import distributed
    from tier1.stages.train import Outputs, train

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs[:64]))
    cfg = Tier1Config(model=str(tiny_model), batch_size=16, num_epochs=1, max_seq_length=32, length_buckets=2,
                      checkpoint_every=0, gpu_counts=(1,)).view(TrainConfig)
    m = train(cfg, distributed.setup(), data, Outputs.in_folder(tmp_path / "run"))
    record = m.shapes
    met = {(r, w) for r, w, _ in record["met"]}
    assert record["ladder"] == [16, 32] and len(met) >= 2  # the CPU ladder; parts of 8 texts at both widths
    assert met == {tuple(s) for s in record["warmed"]}
    assert record["first_met_in_window"] == 0
    assert "first layer" in record["note"]


@pytest.mark.parametrize("encoder_code", ["auto", "transformers"])
def test_warming_through_the_first_layer_runs_one_layer_and_leaves_no_trace(tiny_model, pairs, encoder_code):
    import torch

    from tier1.config import Tier1Config, TrainConfig
    from tier1.encoder import model
    from tier1.encoder.token_cache import pair_tokens
    from tier1.runtime import distributed
    from tier1.training.builder import build_trainer

    cfg = Tier1Config.from_dict({"model": str(tiny_model), "batch_size": 8, "gpu_counts": [1], "max_seq_length": 32,
                                 "length_buckets": 1}).view(TrainConfig)
    encoder, tokenizer = model.load(str(tiny_model), encoder=encoder_code)
    trainer = build_trainer(cfg, distributed.setup(), encoder, pair_tokens(tokenizer, pairs[:48], 32))
    layers = trainer.encoder.transformer.encoder.layer
    assert len(layers) >= 2
    calls = [0] * len(layers)
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    rng = torch.get_rng_state()
    trainer.warm_shapes(layers=1)
    steps = [b for _, b in trainer.plan.schedule()]
    planned = trainer.planned_shapes(steps)
    assert trainer.shape_log.warmed == planned and not trainer.shape_log.met
    # one pass per encoder call the steps make, through the first layer only: a (rows, width) shape
    # with and without padding is two calls on a CPU (a part without padding goes unmasked)
    signatures = trainer.planned_signatures(steps)
    assert {(rows, width) for rows, width, _ in signatures} == planned
    assert calls[0] == len(signatures) and sum(calls[1:]) == 0
    assert trainer.encoder.transformer.encoder.layer is layers  # the whole stack back
    assert all(p.grad is None for p in trainer.encoder.parameters())
    assert torch.equal(torch.get_rng_state(), rng)
