"""A short ladder of padded widths, so a run meets a small, known set of (rows, width) shapes.

Padded to its own longest text, every batch can have a width of its own, and on a GPU every new
width is a new attention shape: kernel selection, and for some attention backends a plan built
per shape (the H200 run's first bf16 step took 9.7 s, and steps stayed slow until step 120).
Padded up to the next rung of a ladder, a run has at most (row counts x rungs) shapes, all known
before the timed window, so each can be met once, untimed (`warm`). The padding is masked, so it
changes nothing but time (tests/test_shapes.py).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

AUTO = "auto"
GPU_STEP = 64  # multiples of 64 on a GPU: few shapes, tile-friendly widths
CPU_STEP = 16  # on a CPU every padded position is paid in arithmetic and no shape costs set-up


def ladder(setting, max_seq_length: int, device_type: str) -> tuple[int, ...]:
    """The widths a batch may be padded to, ascending, topped by max_seq_length.
    `setting`: "auto" (multiples of 64 on a GPU, of 16 on a CPU) or a list of widths."""
    if setting == AUTO:
        step = GPU_STEP if device_type == "cuda" else CPU_STEP
        rungs = range(step, max_seq_length, step)
    else:
        rungs = (w for w in setting if w < max_seq_length)
    return tuple(sorted(set(rungs))) + (max_seq_length,)


def width(longest: int, rungs: tuple[int, ...]) -> int:
    """The lowest rung that holds `longest` tokens (texts are cut at the top rung)."""
    i = bisect.bisect_left(rungs, longest)
    return rungs[min(i, len(rungs) - 1)]


class ShapeLog:
    """The (rows, width) shapes a stage met, those it warmed before its timed window, and those
    first met inside a timed window (on a GPU each of these paid its set-up inside the window)."""

    def __init__(self) -> None:
        self.met: dict[tuple[int, int], int] = {}  # shape -> calls
        self.warmed: set[tuple[int, int]] = set()
        self.first_in_window: list[tuple[int, int]] = []

    def warm(self, shapes: Iterable[tuple[int, int]]) -> None:
        self.warmed.update(tuple(s) for s in shapes)

    def meet(self, shape: tuple[int, int], timed: bool = True) -> None:
        shape = tuple(shape)
        if timed and shape not in self.met and shape not in self.warmed:
            self.first_in_window.append(shape)
        self.met[shape] = self.met.get(shape, 0) + 1

    def record(self, rungs: tuple[int, ...], note: str) -> dict:
        return {
            "ladder": list(rungs),
            "met": [[r, w, n] for (r, w), n in sorted(self.met.items())],  # rows, width, calls
            "warmed": sorted([r, w] for r, w in self.warmed),
            "first_met_in_window": len(set(self.first_in_window)),
            "note": note,
        }


def note(first_calls_cost: bool) -> str:
    """What a shape record's counts mean where first calls cost (a GPU: every shape warmed through
    the whole model) or not (a CPU: through the embeddings and the first layer)."""
    if first_calls_cost:
        return "every shape the timed window meets is warmed before it opens (one untimed call each)"
    return ("every shape the timed window meets is warmed before it opens, through the embeddings and the first "
            "layer (every layer has the same shapes): a first meeting costs a CPU little "
            "(docs/reproduce/first_meeting_cost.py), a whole-model pass per shape would cost seconds per job")


def combine(records: list[dict]) -> dict:
    """Several ranks' shape records as one: shapes met by any rank, counts summed."""
    met: dict[tuple[int, int], int] = {}
    for r in records:
        for rows, w, n in r["met"]:
            met[(rows, w)] = met.get((rows, w), 0) + n
    return {
        "ladder": records[0]["ladder"],
        "met": [[r, w, n] for (r, w), n in sorted(met.items())],
        "warmed": sorted({tuple(s) for r in records for s in r["warmed"]}),
        "first_met_in_window": sum(r["first_met_in_window"] for r in records),
        "note": records[0]["note"],
    }
