"""A fixed list of length-sorted batches, dealt to ranks by token count.

The batches depend only on the texts and the batch size, never on the world size, so each text
is encoded in the same batch (with the same padding) at any world size, and exactly once: no
sampler pads the last shard with repeated documents.
"""

from __future__ import annotations


def plan_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by (length, index), cut into consecutive batches: little padding."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


def batch_cost(batch: list[int], lengths: list[int]) -> int:
    """Tokens the batch really computes on: its size times its longest (padded) length."""
    return len(batch) * max(lengths[i] for i in batch)


def deal(batches: list[list[int]], lengths: list[int], world_size: int) -> list[list[int]]:
    """Batch numbers per rank: largest first, each to the least-loaded rank (ties: lower rank)."""
    load = [0] * world_size
    shares: list[list[int]] = [[] for _ in range(world_size)]
    for b in sorted(range(len(batches)), key=lambda b: (-batch_cost(batches[b], lengths), b)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        shares[r].append(b)
        load[r] += batch_cost(batches[b], lengths)
    return [sorted(s) for s in shares]
