"""A DDP communication hook that does DDP's default gradient averaging and times it.

No `from __future__ import annotations` here: DDP checks the hook's return annotation at run time.
"""

import time

import torch
import torch.distributed as dist


class AllreduceSpan:
    """Per step, the time from the first gradient bucket's all-reduce launch to the last one's
    completion, measured on the host. Buckets are reduced while backward still runs, so this
    span overlaps compute: it bounds the communication a step can expose, it is not added to it.
    """

    def __init__(self) -> None:
        self.first_launch: float | None = None
        self.last_done: float | None = None

    def take(self) -> float | None:
        """The span of the step just finished (None if no bucket was reduced), then reset."""
        span = None if self.first_launch is None else self.last_done - self.first_launch
        self.first_launch = self.last_done = None
        return span


def timed_allreduce(state: AllreduceSpan, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Average the bucket over ranks (what DDP does without a hook), noting when it ran."""
    now = time.perf_counter()
    if state.first_launch is None:
        state.first_launch = now
    buffer = bucket.buffer().div_(dist.get_world_size())
    future = dist.all_reduce(buffer, async_op=True).get_future()

    def done(fut: torch.futures.Future) -> torch.Tensor:
        state.last_done = time.perf_counter()
        return fut.value()[0]

    return future.then(done)
