"""The training step asks the device for nothing: no scalar read, no copy back, no wait.

On a GPU each such read stalls the host until the device has caught up, so the next step's
kernels start late. On a CPU nothing stalls, but the same code runs: counting the reads here
proves the step makes none. tests/test_gpu.py runs steps under CUDA's sync debug mode.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from tier1.config import Tier1Config, TrainConfig
from tier1.encoder import model
from tier1.encoder.token_cache import pair_tokens
from tier1.runtime import distributed
from tier1.training import trainer as trainer_module
from tier1.training.builder import build_trainer
from tier1.training.plan import BatchPlan

# every Tensor method that hands a value to the host (on a GPU: a synchronising copy)
READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def counted_reads(allowed: list[bool]):
    """Yields the list of reads made while `allowed[0]` is False."""
    seen: list[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def counting(name):
        original = originals[name]

        def read(self, *args, **kwargs):
            if not allowed[0]:
                seen.append(name)
            return original(self, *args, **kwargs)

        return read

    try:
        for name in READS:
            setattr(torch.Tensor, name, counting(name))
        yield seen
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


def built(tiny_model, pairs, **kw):
    cfg = Tier1Config(model=str(tiny_model), batch_size=16, max_seq_length=32, gpu_counts=(1,), learning_rate=1e-3,
                      checkpoint_every=0, length_buckets=2, **kw).view(TrainConfig)
    encoder, tokenizer = model.load(str(tiny_model))
    return build_trainer(cfg, distributed.setup(), encoder, pair_tokens(tokenizer, pairs[:96], 32))


@pytest.mark.parametrize("accum", [1, 2])
def test_steps_read_nothing_from_the_device(tiny_model, pairs, monkeypatch, accum):
    monkeypatch.setattr(trainer_module, "READ_EVERY", 4)
    trainer = built(tiny_model, pairs, grad_accum_steps=accum)
    allowed = [False]
    reads_at: list[int] = []
    original_read = trainer.read

    def read():  # the one place values come back: every READ_EVERY steps and at the end
        reads_at.append(trainer.step)
        allowed[0] = True
        try:
            original_read()
        finally:
            allowed[0] = False

    monkeypatch.setattr(trainer, "read", read)
    original_schedule = BatchPlan.schedule

    def schedule(plan):  # the run's batch order, drawn once before the first step on a host generator
        allowed[0] = True
        try:
            return original_schedule(plan)
        finally:
            allowed[0] = False

    monkeypatch.setattr(BatchPlan, "schedule", schedule)
    with counted_reads(allowed) as seen:
        trainer.fit()
    assert trainer.step == 6
    assert seen == []  # six steps, and not one read outside `read`
    assert reads_at == [4, 6, 6]
    assert all(isinstance(r["loss"], float) for r in trainer.loss_rows)
    assert len(trainer.times.step) == len(trainer.times.compute) == 6


def test_the_counter_does_see_reads(tiny_model, pairs):
    """The check above can fail: a step that reads its loss is caught."""
    trainer = built(tiny_model, pairs)
    batch = trainer.plan.schedule()[0][1]
    with counted_reads([False]) as seen:
        trainer.train_step(batch).item()
    assert seen == ["item"]


def test_losses_read_later_equal_losses_read_each_step(tiny_model, pairs, monkeypatch):
    a = built(tiny_model, pairs)
    a.fit()
    b = built(tiny_model, pairs)
    monkeypatch.setattr(trainer_module, "READ_EVERY", 1)
    b.fit()
    assert [r["loss"] for r in a.loss_rows] == [r["loss"] for r in b.loss_rows]
