"""compile: on compiles every graph before the timed window: the warm-up makes each encoder call
the window will make, through the step's own path, and dynamo's recompile limit is raised to the
number of graphs, so none is compiled inside the window and none runs eager past the limit.

Counted with dynamo's own counters and a counting backend in place of inductor (the guards, and
so the graphs, are the backend's choice-free part of torch.compile), on the tiny BERT."""

from __future__ import annotations

import pytest
import torch

from tier1.config import Tier1Config, TrainConfig
from tier1.encoder import model
from tier1.encoder.model import CPU_WARM_LAYERS
from tier1.encoder.token_cache import pair_tokens
from tier1.runtime import distributed
from tier1.training.builder import build_trainer


@pytest.fixture()
def graphs(monkeypatch):
    """Every torch.compile in the test compiles through a counting backend; dynamo starts with a
    recompile limit of 2, below the graphs these runs need, and empty counters."""
    import torch._dynamo
    from torch._dynamo.testing import CompileCounter
    from torch._dynamo.utils import counters

    counter = CompileCounter()
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *a, **k: real(*a, **{**k, "backend": counter}))
    torch._dynamo.reset()
    counters.clear()
    with torch._dynamo.config.patch(recompile_limit=2, accumulated_recompile_limit=2):
        yield counter
    torch._dynamo.reset()


@pytest.mark.parametrize("accum", [1, 2])
def test_no_graph_is_compiled_inside_the_timed_window(tiny_model, pairs, graphs, accum):
    from torch._dynamo.utils import counters

    # max_seq_length 64 on a CPU: four rungs (16 to 64); two length parts; some parts unpadded
    cfg = Tier1Config.from_dict({"model": str(tiny_model), "batch_size": 16, "gpu_counts": [1], "max_seq_length": 64,
                                 "length_buckets": 2, "grad_accum_steps": accum, "compile": "on",
                                 "num_epochs": 1}).view(TrainConfig)
    encoder, tokenizer = model.load(str(tiny_model))
    trainer = build_trainer(cfg, distributed.setup(), encoder, pair_tokens(tokenizer, pairs[:96], 64))
    signatures = trainer.planned_signatures([b for _, b in trainer.plan.schedule()])
    assert len(signatures) >= 4 and any(not masked for _, _, masked in signatures)
    trainer.warm_up()
    trainer.warm_shapes(layers=CPU_WARM_LAYERS)  # as the train stage calls it on a CPU
    before = dict(counters["frames"])
    trainer.fit()
    assert dict(counters["frames"]) == before  # nothing compiled, or tried to, inside the window
    # one graph per call signature (and, with accumulation, per grad mode); every attempt compiled,
    # none hit the recompile limit and ran eager
    assert graphs.frame_count == len(signatures) * (2 if accum > 1 else 1) == before["ok"] == before["total"]
    assert not [k for k in counters["unimplemented"] if "recompile limit" in k]
    assert torch._dynamo.config.recompile_limit >= graphs.frame_count
    # the record's shape note says the whole model was warmed, not the first layer
    from tier1.training.record import rank_record

    note = rank_record(trainer, trainer.ctx, 0, [])["shapes"]["note"]
    assert "first layer" not in note and "one untimed call each" in note
