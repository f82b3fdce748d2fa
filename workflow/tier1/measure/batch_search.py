"""Largest value for which a trial succeeds (doubling, then bisection), and what counts as "does not fit"."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

# CUDA reports allocation and launch failures as several exception types: OutOfMemoryError from
# the caching allocator, AcceleratorError from a failed CUDA call (e.g. a launch configuration too
# large), and plain RuntimeError from cuBLAS / cuDNN handles and workspaces (e.g.
# "CUBLAS_STATUS_ALLOC_FAILED"). Other RuntimeErrors are bugs. A fault that poisons the CUDA
# context (an illegal memory access) is caught too, but the next CUDA call fails anyway.
_DEVICE_MESSAGE = re.compile(r"cuda|cublas|cudnn|out of memory", re.IGNORECASE)


def largest_fitting(fits: Callable[[int], bool], limit: int, start: int = 1) -> int:
    """The largest n in [start, limit] with fits(n), assuming fits is monotone; 0 if none fits."""
    if limit < start or not fits(start):
        return 0
    good, bad = start, None
    while bad is None:
        trial = min(good * 2, limit)
        if trial == good:
            return good
        if fits(trial):
            good = trial
        else:
            bad = trial
    while bad - good > 1:
        mid = (good + bad) // 2
        if fits(mid):
            good = mid
        else:
            bad = mid
    return good


@dataclass(frozen=True)
class Failure:
    kind: str  # the exception's class name
    message: str  # its first line


def attempt(trial: Callable[[], object]) -> Failure | None:
    """Run `trial`; None if it ran, the Failure if the device could not allocate or launch it.

    Any other exception is a bug and propagates. The exception (and the frames holding the
    trial's tensors) is dropped before returning, so the caller can free its memory.
    """
    try:
        trial()
    except RuntimeError as err:  # OutOfMemoryError and AcceleratorError are RuntimeErrors
        device_error = isinstance(err, (torch.OutOfMemoryError, torch.AcceleratorError))
        if not (device_error or _DEVICE_MESSAGE.search(str(err))):
            raise
        lines = str(err).strip().splitlines()
        return Failure(type(err).__name__, lines[0] if lines else "")
    return None


@dataclass
class SearchLog:
    """One search's trials on one rank: every batch tried, and how the failed ones failed."""

    limit: int
    tried: list[int] = field(default_factory=list)
    failures: list[tuple[int, Failure]] = field(default_factory=list)

    def record(self, batch: int, failure: Failure | None) -> None:
        self.tried.append(batch)
        if failure is not None:
            self.failures.append((batch, failure))


def summarise(logs: list[SearchLog], found: int) -> dict:
    """Every rank's log of one search (rank order) as one JSON-ready record.

    `failed_trials` counts the agreed decisions that failed (a trial fails if it failed on any
    rank); `failures_by_kind` counts failures by exception type, summed over ranks.
    """
    order = {batch: i for i, batch in enumerate(logs[0].tried)}  # the same batches on every rank
    failed = sorted(((order[batch], rank, batch, failure) for rank, log in enumerate(logs)
                     for batch, failure in log.failures), key=lambda t: t[:2])
    kinds: dict[str, int] = {}
    for *_, failure in failed:
        kinds[failure.kind] = kinds.get(failure.kind, 0) + 1
    first = None
    if failed:
        _, rank, batch, failure = failed[0]
        first = f"rank {rank}, batch {batch}: {failure.kind}: {failure.message}"
    return {"found": found, "limit": logs[0].limit, "at_limit": found == logs[0].limit,
            "trials": len(logs[0].tried), "failed_trials": len({batch for _, _, batch, _ in failed}),
            "failures_by_kind": kinds, "first_failure": first}
