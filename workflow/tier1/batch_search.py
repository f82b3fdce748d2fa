"""Largest value for which a trial succeeds: doubling, then bisection (not only powers of two)."""

from __future__ import annotations

from collections.abc import Callable


def largest_fitting(fits: Callable[[int], bool], start: int = 1, limit: int = 1 << 16) -> int:
    """The largest n in [start, limit] with fits(n), assuming fits is monotone; 0 if none fits."""
    if not fits(start):
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
