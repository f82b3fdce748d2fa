"""A DDP communication hook that does DDP's default gradient averaging and times it.

No `from __future__ import annotations` here: DDP checks the hook's return annotation at run time.
"""

import torch
import torch.distributed as dist

from tier1.measure import clock


class AllreduceSpan:
    """Per step, the time from the first gradient bucket's all-reduce launch to the last one's
    completion. Buckets are reduced while backward still runs, so this span overlaps compute: it
    bounds the communication a step can expose, it is not added to it.

    The ends are tier1.measure.clock marks. On a GPU they are CUDA events: NCCL's future
    completes on the host as soon as the work is queued, so a host clock would measure kernel
    launches. The completion event is recorded in
    the future's callback, which CUDA orders after the all-reduce. With gloo the future completes
    when the data has arrived, so the host clock is right.
    """

    def __init__(self) -> None:
        self.first_launch = None
        self.last_done = None

    def mark(self, cuda: bool):
        """A bucket's launch or completion (every bucket the hook reduces comes through here)."""
        return clock.mark(cuda)

    def take_marks(self):
        """The step just finished's (first launch, last completion) marks, unread, then reset:
        on a GPU reading them waits for the device, so `seconds` is called later."""
        marks = (self.first_launch, self.last_done)
        self.first_launch = self.last_done = None
        return marks

    @staticmethod
    def seconds(marks) -> float | None:
        """Seconds spanned by `take_marks`' result (None if no bucket was reduced)."""
        start, end = marks
        if start is None or end is None:
            return None
        return clock.between(start, end)

    def take(self):
        """Seconds spanned by the step just finished (None if no bucket was reduced), then reset."""
        return self.seconds(self.take_marks())


def timed_allreduce(state: AllreduceSpan, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """Average the bucket over ranks (what DDP does without a hook), noting when it ran."""
    buffer = bucket.buffer()
    cuda = buffer.is_cuda
    if state.first_launch is None:
        state.first_launch = state.mark(cuda)
    buffer.div_(dist.get_world_size())
    future = dist.all_reduce(buffer, async_op=True).get_future()

    def done(fut: torch.futures.Future) -> torch.Tensor:
        state.last_done = state.mark(cuda)
        return fut.value()[0]

    return future.then(done)
