"""Which pairs each step and each rank trains on: seeded global batches, each rank's slice."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def global_batches(n_pairs: int, global_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's global batches: the same for every world size (drop_last keeps them equal)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_pairs, generator=g).tolist()
    return [order[i: i + global_batch] for i in range(0, n_pairs - global_batch + 1, global_batch)]


@dataclass(frozen=True)
class BatchPlan:
    """The run's global batches and how they split over ranks and micro-batches.

    Every rank builds the same plan from the same seed and takes its own slice of each global
    batch, so the data a step sees does not depend on the world size.
    """

    n_pairs: int
    global_batch: int
    world_size: int
    grad_accum_steps: int
    num_epochs: int
    seed: int

    def __post_init__(self) -> None:
        if self.n_pairs < self.global_batch:
            raise ValueError(f"{self.n_pairs} training pairs are fewer than one global batch of {self.global_batch}")

    @property
    def per_device(self) -> int:
        return self.global_batch // self.world_size

    @property
    def micro(self) -> int:
        return self.per_device // self.grad_accum_steps

    @property
    def steps_per_epoch(self) -> int:
        return self.n_pairs // self.global_batch

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * self.num_epochs

    def schedule(self) -> list[tuple[int, list[int]]]:
        """(epoch, global batch) for every step of the run, in order."""
        return [(e, b) for e in range(self.num_epochs)
                for b in global_batches(self.n_pairs, self.global_batch, self.seed, e)]

    def local_slice(self, global_indices: list[int], rank: int) -> list[int]:
        return global_indices[rank * self.per_device: (rank + 1) * self.per_device]

    def micro_batches(self, local: list[int]) -> list[list[int]]:
        return [local[i: i + self.micro] for i in range(0, self.per_device, self.micro)]
