"""A rank's part of the equivalence tests: a few training steps, with everything recorded."""

from __future__ import annotations

from pathlib import Path

import torch


def flat_grads(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.grad.detach().flatten() for p in model.parameters() if p.grad is not None])


def flat_params(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def train_variants(rank: int, world_size: int, model_path: str, pairs: list, variants: list, out: str) -> None:
    """For each variant (a dict of config overrides), 5 steps: losses, first gradients, final params."""
    from tier1 import distributed, model
    from tier1.config import Tier1Config, TrainConfig
    from tier1.token_cache import pair_tokens
    from tier1.training.builder import build_trainer

    ctx = distributed.setup()
    results = {}
    for name, overrides in variants:
        cfg = Tier1Config.from_dict({"batch_size": 8, "gpu_counts": [1, 2, 4], "max_seq_length": 32,
                                     "learning_rate": 1e-3, "warmup_ratio": 0.0, "precision": "fp32",
                                     "seed": 3, **overrides}).view(TrainConfig)
        torch.manual_seed(0)
        encoder, tokenizer = model.load(model_path)
        trainer = build_trainer(cfg, ctx, encoder, pair_tokens(tokenizer, pairs, cfg.max_seq_length))
        schedule = trainer.plan.schedule()[:5]
        losses, first_grads = [], None
        for i, (_, batch) in enumerate(schedule):
            losses.append(trainer.compute_gradients(batch))
            if i == 0:
                first_grads = flat_grads(trainer.encoder).clone()
            trainer.apply_gradients()
        results[name] = {"losses": losses, "grads": first_grads, "params": flat_params(trainer.encoder)}
    if ctx.is_main:
        torch.save(results, Path(out))
    distributed.teardown()
