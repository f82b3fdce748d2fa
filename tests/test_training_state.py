"""Checkpoint and resume, atomic outputs, and the per-rank accounting of a training run."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from tier1.config import Tier1Config, TrainConfig
from tier1.runtime import distributed
from tier1.stages.train import Interrupted, Outputs, train
from tier1.training import checkpoint


@pytest.fixture()
def data(tmp_path, pairs):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs[:48]))
    return path


def config(tiny_model, **kw) -> TrainConfig:
    return Tier1Config(model=str(tiny_model), batch_size=8, num_epochs=2, max_seq_length=32,
                       learning_rate=1e-3, checkpoint_every=2, gpu_counts=(1,), **kw).view(TrainConfig)


def folder(path):
    return Outputs.in_folder(path)


def test_resume_ends_with_the_uninterrupted_model(tmp_path, tiny_model, data):
    ctx = distributed.setup()
    full = train(config(tiny_model), ctx, data, folder(tmp_path / "full"))
    with pytest.raises(Interrupted):
        train(config(tiny_model), ctx, data, folder(tmp_path / "cut"), stop_after=5)
    assert (tmp_path / "cut" / "checkpoints" / "last.json").exists()
    assert not (tmp_path / "cut" / "train_metrics.json").exists()  # nothing looks finished
    resumed = train(config(tiny_model), ctx, data, folder(tmp_path / "cut"))
    assert resumed.resumed_from_step == 4
    a = load_file(tmp_path / "full" / "model" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r.split(",")[3] for r in (tmp_path / "full" / "loss.csv").read_text().splitlines()] == \
           [r.split(",")[3] for r in (tmp_path / "cut" / "loss.csv").read_text().splitlines()]
    assert full.final_loss == resumed.final_loss
    assert list((tmp_path / "cut" / "checkpoints").iterdir()) == []  # cleared once complete


def test_checkpoint_of_another_config_is_ignored(tmp_path, tiny_model, data):
    ctx = distributed.setup()
    with pytest.raises(Interrupted):
        train(config(tiny_model), ctx, data, folder(tmp_path / "run"), stop_after=3)
    other = train(config(tiny_model, loss_scale=10.0), ctx, data, folder(tmp_path / "run"))
    assert other.resumed_from_step == 0


def test_metrics_record_what_the_loss_saw_and_each_rank(tmp_path, tiny_model, data):
    ctx = distributed.setup()
    m = train(config(tiny_model, repeats=2), ctx, data, folder(tmp_path / "r"))
    assert m.objective["global_batch"] == 8 and m.objective["negatives_per_anchor"] == 7
    assert m.samples_total == m.expected_samples == 48 * 2
    assert len(m.wall_times_s) == 2 and m.started_at < m.finished_at
    assert m.ranks[0]["samples"] == 96 and m.checksums_equal
    assert max(m.ranks[0]["peak_memory"].values()) > 0
    assert m.throughput["model_flops_per_step"] > 0 and m.throughput["tokens_per_s"] > 0
    # not resumed; a stall is timing (a loaded machine makes one), named only with the steps that were one
    assert all(x.startswith(("disturbed", "stalled")) for x in m.marks), m.marks
    assert any(x.startswith("stalled") for x in m.marks) == bool(m.stalls)
    assert m.config_hash and m.hardware and m.libraries
    # the record names the encoder that ran: the tiny BERT folder runs tier1's own
    assert m.encoder["implementation"] == "tier1-bert" and m.encoder["version"] and m.encoder["attention"]
    steps = (tmp_path / "r" / "loss.csv").read_text().splitlines()
    assert steps[0] == "step,epoch,samples_seen,loss,lr" and len(steps) == 1 + 12


def test_resume_inside_a_later_repeat_keeps_the_earlier_repeats(tmp_path, tiny_model, data):
    ctx = distributed.setup()
    with pytest.raises(Interrupted):
        # 12 steps per repeat: stop in the second repeat, after its checkpoint at step 4
        train(config(tiny_model, repeats=2), ctx, data, folder(tmp_path / "r"), stop_after=12 + 5)
    ckpt = tmp_path / "r" / "checkpoints"
    fingerprint = json.loads((ckpt / "last.json").read_text())["fingerprint"]
    state = checkpoint.load(ckpt, fingerprint, torch.device("cpu"))
    assert state["repeat"] == 1 and state["step"] == 4 and len(state["walls"]) == 1
    m = train(config(tiny_model, repeats=2), ctx, data, folder(tmp_path / "r"))
    assert len(m.wall_times_s) == 2 and m.wall_times_s[0] == state["walls"][0]
    assert m.resumed_from_step == 4
    full = train(config(tiny_model), ctx, data, folder(tmp_path / "once"))
    assert m.final_loss == full.final_loss


def test_token_cache_gives_the_same_training(tmp_path, tiny_model, data, pairs):
    from tier1.encoder import model, token_cache

    ids = token_cache.token_ids
    _, tokenizer = model.load(str(tiny_model))
    cache = {"train_ids": [p["id"] for p in pairs[:48]],
             "anchor": ids(tokenizer, [p["anchor"] for p in pairs[:48]], 32),
             "positive": ids(tokenizer, [p["positive"] for p in pairs[:48]], 32), "max_seq_length": 32}
    token_cache.save(cache, tmp_path / "tokens.safetensors")
    ctx = distributed.setup()
    plain = train(config(tiny_model), ctx, data, folder(tmp_path / "plain"))
    cached = train(config(tiny_model), ctx, data, folder(tmp_path / "cached"), tokens=tmp_path / "tokens.safetensors")
    assert cached.final_loss == plain.final_loss
    cache["train_ids"] = cache["train_ids"][::-1]
    token_cache.save(cache, tmp_path / "tokens.safetensors")
    with pytest.raises(ValueError, match="other training pairs"):
        train(config(tiny_model), ctx, data, folder(tmp_path / "bad"), tokens=tmp_path / "tokens.safetensors")


def test_learning_rate_warms_up_then_decays_to_zero():
    from tier1.training.lr_schedule import linear_warmup_decay

    factors = [linear_warmup_decay(s, warmup=4, total=20) for s in range(21)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == 1.0 and factors[12] == 0.5 and factors[20] == 0.0
    assert all(a >= b for a, b in zip(factors[4:], factors[5:]))
    assert linear_warmup_decay(0, warmup=0, total=10) == 1.0  # no warm-up: full rate at once


def built(tiny_model_path, pairs, **kw):
    from tier1.encoder import model
    from tier1.encoder.token_cache import pair_tokens
    from tier1.training.builder import build_trainer

    cfg = config(tiny_model_path, **kw)
    torch.manual_seed(0)
    encoder, tokenizer = model.load(str(tiny_model_path), cfg.gradient_checkpointing)
    return build_trainer(cfg, distributed.setup(), encoder, pair_tokens(tokenizer, pairs[:48], cfg.max_seq_length))


@pytest.fixture(scope="module")
def dropout_model(tmp_path_factory):
    import helpers

    return helpers.make_tiny_model(tmp_path_factory.mktemp("dropout") / "model", dropout=0.1)


def layer_calls(trainer) -> int:
    """Forward calls inside the first transformer layer during one step's forward and backward
    (a submodule: the checkpoint wraps the layer's forward, so the layer's own hooks run once)."""
    calls = []
    layer = trainer.encoder.transformer.encoder.layer[0].intermediate
    handle = layer.register_forward_hook(lambda *_: calls.append(1))
    trainer.compute_gradients(trainer.plan.schedule()[0][1])
    handle.remove()
    return len(calls)


def test_training_runs_in_train_mode_with_dropout(dropout_model, pairs):
    trainer = built(dropout_model, pairs)
    assert trainer.encoder.training
    batch = {"input_ids": torch.tensor([[101, 2000, 2001, 102]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}
    a, b = trainer.encoder(**batch), trainer.encoder(**batch)
    assert not torch.equal(a, b)  # dropout draws new masks: it is really on


def test_gradient_checkpointing_recomputes_the_forward(dropout_model, pairs):
    plain, checkpointed = built(dropout_model, pairs), built(dropout_model, pairs, gradient_checkpointing=True)
    assert layer_calls(plain) == 2  # anchors and positives, once each
    assert layer_calls(checkpointed) == 4  # and again in backward
    # the recompute replays the same dropout masks, so the gradients are those without it
    g1 = torch.cat([p.grad.flatten() for p in plain.encoder.parameters() if p.grad is not None])
    g2 = torch.cat([p.grad.flatten() for p in checkpointed.encoder.parameters() if p.grad is not None])
    assert torch.allclose(g1, g2, rtol=1e-5, atol=1e-7)


def optimizer_values(trainer) -> list[torch.Tensor]:
    return [v for state in trainer.optimizer.state.values() for v in state.values()]


def test_warm_up_leaves_no_trace(dropout_model, pairs):
    """The warm-up step runs the optimizer too (its state and first update are set-up costs), then
    puts the parameters and the optimizer back: the state it allocated stays, zeroed, which AdamW
    updates exactly as an empty state, so the run is bit for bit the one without it."""
    a, b = built(dropout_model, pairs), built(dropout_model, pairs)
    before = [p.detach().clone() for p in b.encoder.parameters()]
    steps = []
    b.optimizer.register_step_post_hook(lambda *args: steps.append(1))
    b.warm_up()
    assert steps == [1]
    assert b.step == 0 and b.samples_seen == 0 and b.tokens_seen == {"real": 0, "padded": 0}
    assert all(p.grad is None for p in b.encoder.parameters())
    assert all(torch.equal(x, p) for x, p in zip(before, b.encoder.parameters()))
    # AdamW's state is there before the window, as a fresh one: step 0, zero moments
    assert [set(b.optimizer.state[p]) for p in b.encoder.parameters()] == \
           [{"step", "exp_avg", "exp_avg_sq"}] * len(before)
    assert all(not v.any() for v in optimizer_values(b))
    allocated = [v.data_ptr() for v in optimizer_values(b)]
    a.fit()
    b.fit()
    assert [r["loss"] for r in a.loss_rows] == [r["loss"] for r in b.loss_rows]
    assert all(torch.equal(x, y) for x, y in zip(a.encoder.parameters(), b.encoder.parameters()))
    assert all(torch.equal(x, y) for x, y in zip(optimizer_values(a), optimizer_values(b)))
    assert [v.data_ptr() for v in optimizer_values(b)] == allocated  # updated in place: none made in the window


def test_warm_up_after_a_resume_puts_the_optimizer_state_back_in_place(dropout_model, pairs):
    trainer = built(dropout_model, pairs)
    for _, batch in trainer.plan.schedule()[:2]:
        trainer.train_step(batch)
    state = [v.clone() for v in optimizer_values(trainer)]
    where = [v.data_ptr() for v in optimizer_values(trainer)]
    trainer.warm_up()
    assert all(torch.equal(x, y) for x, y in zip(state, optimizer_values(trainer)))
    assert [v.data_ptr() for v in optimizer_values(trainer)] == where


def test_warm_up_drops_state_an_optimizer_does_not_start_from_zero(dropout_model, pairs, monkeypatch):
    """SGD with momentum starts its buffer from the first gradient, not from zeros: such state is
    dropped, as before, rather than zeroed."""
    trainer = built(dropout_model, pairs)
    trainer.optimizer = torch.optim.SGD(trainer.encoder.parameters(), lr=1e-3, momentum=0.9)
    trainer.warm_up()
    assert not trainer.optimizer.state


def test_ddp_warm_up_rebuilds_the_buckets_before_the_window(dropout_model, pairs, tmp_path):
    """DDP regroups its gradient buckets in the forward after the first backward; the warm-up
    (the first step's gradient, then the warm-up step) makes that happen before the window, and
    the run's losses and model stay those of a run without it (2 CPU ranks over gloo)."""
    import ddp_runs
    import helpers

    out = tmp_path / "warm.pt"
    helpers.spawn(ddp_runs.warm_up_run, 2, str(dropout_model), pairs[:48], str(out))
    got = torch.load(out)
    # not before the warm-up step: the first step's gradient alone would leave it to the first timed step
    assert got["rebuilt_before_pass"] == [False, False]
    assert got["rebuilt_before_window"]
    assert got["state_keys"] == {"step", "exp_avg", "exp_avg_sq"}
    assert got["losses"][0] == got["losses"][1] and got["same_parameters"]


def test_another_dropout_stream_changes_only_the_masks(dropout_model, pairs):
    from tier1.encoder import model
    from tier1.encoder.token_cache import pair_tokens
    from tier1.training.builder import build_trainer

    cfg = config(dropout_model)
    encoder, tokenizer = model.load(str(dropout_model))
    other = build_trainer(cfg, distributed.setup(), encoder, pair_tokens(tokenizer, pairs[:48], 32), dropout_stream=1)
    first = built(dropout_model, pairs)
    first.fit()
    other.fit()
    assert [r["loss"] for r in first.loss_rows] != [r["loss"] for r in other.loss_rows]
    assert [r["samples_seen"] for r in first.loss_rows] == [r["samples_seen"] for r in other.loss_rows]


def test_model_flops_count_each_padded_batch(dropout_model, pairs):
    from tier1.encoder.token_cache import collate
    from tier1.measure import flops

    trainer = built(dropout_model, pairs)
    batch = trainer.plan.schedule()[0][1]
    trainer.train_step(batch)
    n, (layers, hidden) = flops.non_embedding_parameters(trainer.encoder), flops.layers_and_hidden(trainer.encoder)
    expected = 0
    for ids in (trainer.tokens.anchor, trainer.tokens.positive):
        rows, width = collate(ids, batch, trainer.tokens.pad_id)["attention_mask"].shape
        expected += flops.train_flops(n, layers, hidden, width, rows)
    assert trainer.flops == expected


def test_the_warm_up_step_takes_the_batch_with_the_most_padded_positions(dropout_model, pairs):
    """Its memory is the most a step of the run uses: on a CPU the later steps reuse it."""
    # three pairs in four cut to three words: batches of different padded widths
    short = [{k: " ".join(v.split()[:3]) if i % 4 else v for k, v in p.items()} for i, p in enumerate(pairs[:48])]
    trainer = built(dropout_model, short)
    batches = [b for _, b in trainer.plan.schedule()]
    positions = [trainer.positions_of(b) for b in batches]
    assert positions == [trainer.prepare(b).padded for b in batches]  # from the lengths alone, as prepared
    assert len(set(positions)) > 1
    taken = []
    real = trainer.compute_gradients
    trainer.compute_gradients = lambda indices, **kw: taken.append(indices) or real(indices, **kw)
    trainer.warm_up()
    # the first step's batch for its gradient's norm, then the warm-up step's
    assert taken == [batches[0], batches[positions.index(max(positions))]]


def test_the_warm_up_keeps_the_first_steps_gradient_norm(dropout_model, pairs):
    """The norm the warm-up records is that of the gradient the first training step computes
    (same batch, same dropout masks), as torch's own total-norm gives it."""
    trainer = built(dropout_model, pairs)
    trainer.warm_up()
    other = built(dropout_model, pairs)
    other.compute_gradients(other.plan.schedule()[0][1])
    expected = torch.nn.utils.get_total_norm([p.grad for p in other.encoder.parameters() if p.grad is not None])
    assert trainer.first_gradient_norm == pytest.approx(float(expected), rel=1e-6)
    assert trainer.first_gradient_norm > 0


def test_every_rank_warms_up_on_the_same_batch(dropout_model, pairs):
    """The warm-up batch is chosen from every rank's slice, so that the ranks' collectives match."""
    import copy
    import dataclasses

    trainer = built(dropout_model, pairs)
    two = dataclasses.replace(trainer.plan, world_size=2)
    batches = [b for _, b in two.schedule()]
    picks = []
    for rank in (0, 1):
        view = copy.copy(trainer)  # the same trainer, as rank `rank` of two would plan
        view.plan, view.ctx = two, dataclasses.replace(trainer.ctx, rank=rank)
        picks.append(max(batches, key=view.positions_of))
        # the count covers both ranks' halves
        assert view.positions_of(batches[0]) == trainer.positions_of(batches[0])
    assert picks[0] == picks[1]


def test_progress_shows_the_latest_loss_read(tmp_path, tiny_model, data, monkeypatch):
    """The progress bar shows the last loss read from the device (Trainer.last_loss), kept as
    the reads come, not found by scanning every loss row after every step."""
    from tier1.stages import train as stage

    shown = []

    class Bar:
        def update(self, n):
            pass

        def set_postfix(self, loss, refresh):
            shown.append(float(loss))

        def close(self):
            pass

    monkeypatch.setattr(stage, "progress", lambda *a, **k: Bar())
    train(config(tiny_model), distributed.setup(), data, folder(tmp_path / "run"))
    losses = [float(r.split(",")[3]) for r in (tmp_path / "run" / "loss.csv").read_text().splitlines()[1:]]
    # read every 2 steps (the checkpoints) of 12: shown after each step from the first read on
    expected = [losses[step - 1 - step % 2] for step in range(2, 13)]
    assert len(shown) == len(expected) and all(abs(a - b) < 6e-5 for a, b in zip(shown, expected)), (shown, expected)
