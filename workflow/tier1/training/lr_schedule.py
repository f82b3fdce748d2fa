"""The learning-rate schedule: linear warm-up, then linear decay to zero."""

from __future__ import annotations

import torch


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then linear decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def warmup_then_decay(optimizer: torch.optim.Optimizer, warmup_ratio: float, total_steps: int):
    warmup = int(warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: linear_warmup_decay(s, warmup, total_steps))
