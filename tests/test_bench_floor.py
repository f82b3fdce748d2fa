"""The host-overhead recipe's arithmetic floor (tier1.bench.floor): the step's own work on ready
batches, so that a step's host cost is its time less this floor. No speed is asserted."""

import pytest
import torch

from tier1.bench import floor


def test_the_floor_trains_on_every_batch_with_a_fused_adamw(monkeypatch):
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    seen, made = [], []
    real_adamw = torch.optim.AdamW

    def adamw(*args, **kwargs):
        made.append(kwargs)
        return real_adamw(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", adamw)

    def embed(anchors, positives):
        seen.extend((anchors, positives))
        return tuple(torch.nn.functional.normalize(layer(side), dim=-1) for side in (anchors, positives))

    before = layer.weight.detach().clone()
    batches = [(torch.randn(5, 4), torch.randn(5, 4)) for _ in range(3)]
    seconds = floor.floor_steps(embed, layer.parameters(), batches, 20.0, 1e-2, 0.01, torch.device("cpu"))
    assert len(seconds) == 2 and min(seconds) > 0  # batches 2 and 3: the first is not timed
    assert made == [{"lr": 1e-2, "weight_decay": 0.01, "fused": True}]
    assert [id(s) for s in seen] == [id(s) for pair in batches for s in pair]  # both sides of every batch, in order
    assert not torch.equal(before, layer.weight)  # stepped
    assert layer.weight.grad is None  # nothing left behind


def test_on_a_cpu_host_cost_is_the_median_step_less_the_median_floor_step():
    """One disturbed step on either side moves a mean, not a median; tokenisation timed apart is
    spread over the steps."""
    steps, floors = [0.040, 0.041, 0.300, 0.039], [0.030, 0.031, 0.029, 0.250]
    cost = floor.host_cost(steps, floors, 0.020, per_step=True)
    assert cost["step_ms"] == pytest.approx(1000 * (0.0405 + 0.020 / 4))
    assert cost["floor_ms"] == pytest.approx(30.5)
    assert cost["host_ms_per_step"] == pytest.approx(cost["step_ms"] - cost["floor_ms"])


def test_on_a_gpu_host_cost_is_the_windows_mean():
    """Steps not waited for one by one: only the window's total is the device's time."""
    cost = floor.host_cost([0.001, 0.001, 0.058], [0.010, 0.010, 0.010], 0.0, per_step=False)
    assert cost["host_ms_per_step"] == pytest.approx(20.0 - 10.0)


def test_steps_are_the_differences_of_the_step_ends():
    assert floor.steps([1.0, 1.5, 2.25]) == [0.5, 0.75]
