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
    from tier1.config import Tier1Config, TrainConfig
    from tier1.encoder import model
    from tier1.encoder.token_cache import pair_tokens
    from tier1.runtime import distributed
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
        losses = trainer.read_losses(losses)  # kept on the device by the steps, read once
        results[name] = {"losses": losses, "grads": first_grads.cpu(), "params": flat_params(trainer.encoder).cpu(),
                         "device": str(ctx.device)}
    if ctx.is_main:
        torch.save(results, Path(out))
    distributed.teardown()


def unsynced_rerun(rank: int, world_size: int, model_path: str, pairs: list, out: str) -> None:
    """Train a few steps, then re-run the last ones without gradient sync (the step
    decomposition): record whether anything the run produced changed."""
    from tier1.config import Tier1Config, TrainConfig
    from tier1.encoder import model
    from tier1.encoder.token_cache import pair_tokens
    from tier1.runtime import distributed
    from tier1.training import decomposition
    from tier1.training.builder import build_trainer

    ctx = distributed.setup()
    results = {}
    for accum in (1, 2):
        cfg = Tier1Config.from_dict({"batch_size": 8, "gpu_counts": [1, 2], "max_seq_length": 32,
                                     "learning_rate": 1e-3, "warmup_ratio": 0.0, "precision": "fp32",
                                     "seed": 3, "grad_accum_steps": accum}).view(TrainConfig)
        torch.manual_seed(0)
        encoder, tokenizer = model.load(model_path)
        trainer = build_trainer(cfg, ctx, encoder, pair_tokens(tokenizer, pairs, cfg.max_seq_length))
        trainer.fit()
        before = {"params": flat_params(trainer.encoder).clone(), "step": trainer.step,
                  "samples": trainer.samples_seen, "tokens": dict(trainer.tokens_seen), "flops": trainer.flops,
                  "compute_times": list(trainer.times.compute), "rng": torch.get_rng_state(),
                  "optimizer": [s["exp_avg"].clone() for s in trainer.optimizer.state.values()]}
        marks = []  # the all-reduce hook notes every bucket it reduces
        trainer.allreduce.mark = lambda cuda, _marks=marks: _marks.append(1) or 0.0
        unsynced = trainer.measure_unsynced(3)
        after = {"params": flat_params(trainer.encoder), "step": trainer.step,
                 "samples": trainer.samples_seen, "tokens": dict(trainer.tokens_seen), "flops": trainer.flops,
                 "compute_times": list(trainer.times.compute), "rng": torch.get_rng_state(),
                 "optimizer": [s["exp_avg"] for s in trainer.optimizer.state.values()]}
        reduced_unsynced, grads_dropped = len(marks), all(p.grad is None for p in trainer.encoder.parameters())
        trainer.compute_gradients(trainer.plan.schedule()[0][1])  # a synced one: the hook does count
        parts = distributed.all_gather_objects(decomposition.rank_parts(
            unsynced, trainer.times.data, trainer.times.optimizer, 0.1))
        results[accum] = {
            "unchanged": all(torch.equal(before[k], after[k]) for k in ("params", "rng"))
            and all(torch.equal(a, b) for a, b in zip(before["optimizer"], after["optimizer"]))
            and all(before[k] == after[k] for k in ("step", "samples", "tokens", "flops", "compute_times")),
            "grads_dropped": grads_dropped,
            "buckets_reduced": reduced_unsynced, "buckets_reduced_synced": len(marks) - reduced_unsynced,
            "unsynced": unsynced,
            "decomposition": decomposition.decompose(parts),
        }
    if ctx.is_main:
        torch.save(results, Path(out))
    distributed.teardown()


def warm_up_run(rank: int, world_size: int, model_path: str, pairs: list, out: str) -> None:
    """Two runs of the same plan, with and without Trainer.warm_up: whether DDP rebuilt its buckets
    before the window, the optimizer state the window starts from, the losses and parameters."""
    from tier1.config import Tier1Config, TrainConfig
    from tier1.encoder import model
    from tier1.encoder.token_cache import pair_tokens
    from tier1.runtime import distributed
    from tier1.training.builder import build_trainer

    ctx = distributed.setup()
    cfg = Tier1Config.from_dict({"model": model_path, "batch_size": 16, "gpu_counts": [2], "max_seq_length": 32,
                                 "num_epochs": 1, "learning_rate": 1e-3, "length_buckets": 1}).view(TrainConfig)
    results = {"losses": []}
    trainers = []
    for warm in (False, True):
        torch.manual_seed(0)
        encoder, tokenizer = model.load(model_path)
        trainer = build_trainer(cfg, ctx, encoder, pair_tokens(tokenizer, pairs, cfg.max_seq_length))
        if warm:
            passes, results["rebuilt_before_pass"] = trainer.compute_gradients, []

            def noted(batch, trainer=trainer, passes=passes):
                results["rebuilt_before_pass"].append(trainer.model._has_rebuilt_buckets)
                return passes(batch)

            trainer.compute_gradients = noted
            trainer.warm_up()
            trainer.compute_gradients = passes
            results["rebuilt_before_window"] = trainer.model._has_rebuilt_buckets
            results["state_keys"] = set().union(*(s.keys() for s in trainer.optimizer.state.values()))
        trainer.fit()
        results["losses"].append([r["loss"] for r in trainer.loss_rows])
        trainers.append(trainer)
    results["same_parameters"] = torch.equal(flat_params(trainers[0].encoder), flat_params(trainers[1].encoder))
    if ctx.is_main:
        torch.save(results, Path(out))
    distributed.teardown()
