"""The host-overhead recipe's arithmetic floor (tier1.bench.floor): the step's own work on ready
batches, so that a step's host cost is its time less this floor. No speed is asserted."""

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

    def embed(side):
        seen.append(side)
        return torch.nn.functional.normalize(layer(side), dim=-1)

    before = layer.weight.detach().clone()
    batches = [(torch.randn(5, 4), torch.randn(5, 4)) for _ in range(3)]
    seconds = floor.floor_seconds(embed, layer.parameters(), batches, 20.0, 1e-2, 0.01, torch.device("cpu"))
    assert seconds > 0
    assert made == [{"lr": 1e-2, "weight_decay": 0.01, "fused": True}]
    assert [id(s) for s in seen] == [id(s) for pair in batches for s in pair]  # both sides of every batch, in order
    assert not torch.equal(before, layer.weight)  # stepped
    assert layer.weight.grad is None  # nothing left behind


def test_host_cost_is_the_window_less_the_floor_per_timed_step():
    assert floor.host_ms_per_step(0.5, 0.3, 10) == 20.0
