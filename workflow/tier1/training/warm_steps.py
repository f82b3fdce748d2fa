"""Which steps the step decomposition may use: only steps whose shapes every rank had met before.

The first time a process meets a (rows, padded width) shape it pays set-up (kernel selection,
attention plans, allocator growth), most of all on a GPU. A synced step that pays it while its
unsynced re-run (which meets the shape a second time) does not would book that set-up as exposed
communication. So the decomposition takes the last steps of the timed window whose shapes each
rank had already met in an earlier step (or in the untimed warm-up step); their re-runs replay the
same batches, met twice by then. The shapes come from the same length buckets the step builds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

Shapes = frozenset  # of (rank, rows, width)


def step_shapes(world_size: int, schedule: list[tuple[int, list[int]]],
                shapes_of: Callable[[list[int], int], Iterable[tuple[int, int]]]) -> list[Shapes]:
    """Per step of `schedule`, the (rank, rows, width) shapes every rank's micro-batches meet;
    `shapes_of(global_indices, rank)` gives one rank's (Trainer.shapes_of)."""
    return [frozenset((rank, *shape) for rank in range(world_size) for shape in shapes_of(global_indices, rank))
            for _, global_indices in schedule]


def pick(shapes: list[Shapes], first_timed: int, end: int, k: int, warmed: Iterable = ()) -> tuple[list[int], int]:
    """The last k steps in [first_timed, end) whose shapes were all met before them (in earlier
    steps of the window, or in `warmed`), in order; and how many steps of the window met a shape
    for the first time (cold steps, never chosen)."""
    seen = set(warmed)
    warm = []
    for i in range(first_timed, end):  # steps before the window ran in another process (a resume)
        if shapes[i] <= seen:
            warm.append(i)
        seen |= shapes[i]
    cold = (end - first_timed) - len(warm)
    return (warm[-k:] if k else []), cold


def choose(trainer, k: int) -> dict:
    """For a trainer after `fit`: the timed steps the decomposition re-runs (warm ones), and how
    many steps of the window were cold."""
    end = trainer.step
    first = end - len(trainer.times.compute)
    schedule = trainer.plan.schedule()[:end]
    shapes = step_shapes(trainer.plan.world_size, schedule, trainer.shapes_of)
    # warm_shapes met every shape of the window on each rank before it opened
    warmed = frozenset().union(*shapes[first:end]) if trainer.shape_log.warmed else ()
    chosen, cold = pick(shapes, first, end, k, warmed)
    # too few warm steps (a short run): the latest cold ones fill in, named so the report says it
    filler = [i for i in range(end - 1, first - 1, -1) if i not in chosen][:max(0, k - len(chosen))]
    return {"indices": sorted(chosen + filler), "cold_used": sorted(filler), "cold_steps_in_window": cold,
            "window_steps": end - first}
