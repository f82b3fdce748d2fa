"""The arithmetic floor of a training step: what no harness can take away from it.

The host-overhead recipe (tier1.bench.tiny) was meant to make a step's arithmetic negligible, so
that a step's time is the host's. On a 2-core CPU it is not: at batch 32 x 64 tokens the tiny
BERT's forward, backward and AdamW step took 37 ms of tier1's 48 ms step (one thread, CPU time,
docs/performance.md). So each side also runs its own model's forward, in-batch-negatives loss,
backward and fused AdamW step on the very batches its step met, already tokenised, padded and in
memory, in a bare loop; a step's host cost is its time less this floor. Both sides run the same
function, with the same clock points as their timed windows (the first step untimed, the device
waited for at the end of step 1 and of the last step only).

A difference of two ~35 ms figures is as noisy as both: on a quiet run the windows' totals gave
tier1 hosts of 13.7, 2.0 and 6.5 ms in three processes, so a CPU takes medians over the steps
(`host_cost`).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch

from tier1.measure import clock
from tier1.training.loss import in_batch_negatives_loss

# both sides of a batch, as the step feeds them -> their normalised embeddings
Embed = Callable[[Any, Any], tuple[torch.Tensor, torch.Tensor]]


def floor_steps(embed: Embed, parameters: Sequence[torch.nn.Parameter],
                batches: Sequence[tuple[Any, Any]],
                loss_scale: float, learning_rate: float, weight_decay: float, device: torch.device) -> list[float]:
    """Seconds of each of batches 2..N of forward, loss, backward and optimizer step (the first
    one untimed, as in the windows), with a fresh fused AdamW over `parameters`. The parameters
    are trained on: run it after the measured training."""
    parameters = list(parameters)
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, fused=True)
    ends = []
    for i, (anchors, positives) in enumerate(batches):
        optimizer.zero_grad(set_to_none=True)
        loss = in_batch_negatives_loss(*embed(anchors, positives), loss_scale, gather=False)
        loss.backward()
        optimizer.step()
        ends.append(clock.synced(device) if i in (0, len(batches) - 1) else clock.now())
    optimizer.zero_grad(set_to_none=True)
    return steps(ends)


def steps(ends: Sequence[float]) -> list[float]:
    """Each step's seconds from the clock read at the end of every step, the first one included."""
    return [b - a for a, b in zip(ends, ends[1:])]


def host_cost(step_s: Sequence[float], floor_s: Sequence[float], tokenize_s: float, per_step: bool) -> dict:
    """A step's host cost, the step less its arithmetic floor, in ms, with the two it is taken from.

    `per_step` (a CPU, whose clock reads each step's end as it happens): medians over the timed
    steps, so that a spell of other work on a shared machine, which falls on a few steps of one of
    the two loops, drops out. Otherwise (a GPU, not waited for step by step) the windows' means.
    Tokenisation timed apart (tier1's, once per run) is spread over the steps."""
    pick = statistics.median if per_step else statistics.fmean
    step = pick(step_s) + tokenize_s / len(step_s)
    floor = pick(floor_s)
    return {"step_ms": 1000 * step, "floor_ms": 1000 * floor, "host_ms_per_step": 1000 * (step - floor)}


def host_fields(ends: Sequence[float], floor_s: Sequence[float], tokenize_s: float, device: torch.device) -> dict:
    """A side's host-overhead result: its steps (from the clock read at each step's end), its floor
    steps, and the host cost taken from them (per step on a CPU, the windows' means elsewhere)."""
    step_s = steps(ends)
    return {"floor_s": sum(floor_s), "step_s": step_s, "floor_step_s": list(floor_s),
            **host_cost(step_s, floor_s, tokenize_s, per_step=device.type == "cpu")}
