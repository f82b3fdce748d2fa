"""Builds a Trainer from a training config: the plan, the (DDP-wrapped) model, the optimizer and
the learning-rate schedule."""

from __future__ import annotations

import torch

from tier1.config import TrainConfig
from tier1.encoder.model import SentenceEncoder
from tier1.encoder.token_cache import PairTokens
from tier1.runtime import device as devices
from tier1.runtime.distributed import Context
from tier1.training import parallel
from tier1.training.comm_hook import AllreduceSpan
from tier1.training.lr_schedule import warmup_then_decay
from tier1.training.plan import BatchPlan
from tier1.training.step import PairEncoder
from tier1.training.trainer import Trainer


def make_optimizer(cfg: TrainConfig, params) -> torch.optim.Optimizer:
    params = list(params)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.learning_rate)
    # The fused kernel updates every parameter in one pass instead of a chain of per-op kernels
    # over the parameter list (same arithmetic); PyTorch has it for CPU and CUDA tensors.
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, fused=fused)


def wrap(encoder: SentenceEncoder, ctx: Context, allreduce: AllreduceSpan, strategy: str = parallel.DEFAULT,
         dtype: torch.dtype | None = None) -> torch.nn.Module:
    """The pair encoder, wrapped for the data-parallel strategy when there are several ranks: DDP
    (with the timed all-reduce hook) or FSDP2 (tier1.training.parallel)."""
    return parallel.wrap(PairEncoder(encoder), ctx, allreduce, strategy, dtype)


def build_trainer(cfg: TrainConfig, ctx: Context, encoder: SentenceEncoder, tokens: PairTokens,
                  dropout_stream: int = 0) -> Trainer:
    """`dropout_stream` picks another sequence of dropout masks (same data, same seed otherwise):
    a second 1-rank run with stream 1 measures how far dropout alone moves the loss."""
    plan = BatchPlan(n_pairs=len(tokens.anchor), global_batch=cfg.global_batch(ctx.world_size),
                     world_size=ctx.world_size, grad_accum_steps=cfg.grad_accum_steps,
                     num_epochs=cfg.num_epochs, seed=cfg.seed)
    # from_pretrained returns eval mode; training needs train mode for dropout and for gradient
    # checkpointing, which transformers applies only while training.
    encoder = encoder.to(ctx.device).train()
    if cfg.compiled(ctx.device.type):
        # in place, so parameter names, checkpoints and saved models are those of the plain module;
        # one graph per encoder call signature (allow_graphs), never recompiled for a new length
        encoder.transformer.compile(dynamic=False)
    allreduce = AllreduceSpan()
    dtype = devices.autocast_dtype(cfg.precision, ctx.device)
    model = wrap(encoder, ctx, allreduce, cfg.parallelism, dtype)
    # after the wrap: under FSDP2 the optimizer holds (and steps) each rank's shards
    optimizer = make_optimizer(cfg, encoder.parameters())
    scheduler = warmup_then_decay(optimizer, cfg.warmup_ratio, plan.total_steps)
    trainer = Trainer(cfg, ctx, encoder, model, optimizer, scheduler, plan, tokens, allreduce, dtype,
                      dropout_stream)
    if trainer.compiled:
        allow_graphs(trainer.compiled_graphs())
    return trainer


def allow_graphs(graphs: int) -> None:
    """Let torch.compile keep `graphs` graphs of the encoder's forward. Static shapes (the ladder's
    widths, dynamic=False) give one graph per encoder call signature (rows, width, masked) and grad
    mode; past dynamo's recompile limit (8 by default: 4 rungs x 2 signatures reach it) it would
    run the forward eager, silently. The set is small and known before the window (the warm-up
    compiles all of it), so the limit is raised to it rather than shapes marked dynamic, which
    would trade the per-shape kernels away."""
    import torch._dynamo.config as dynamo

    # recompile_limit was cache_size_limit in older releases
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(dynamo, name) and getattr(dynamo, name) < graphs:
            setattr(dynamo, name, graphs)
