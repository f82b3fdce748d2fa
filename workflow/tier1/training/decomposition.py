"""Where a training step's time goes, from each rank's own times: compute, exposed communication,
data, optimizer, stragglers and the rest. Pure arithmetic; the Trainer measures the inputs.

Each rank brings, for the same last few steps, its timed forward+backward (with DDP's gradient
all-reduce, `synced_s`) and the same forward+backward again under `no_sync()` (`unsynced_s`),
plus the medians of its data and optimizer phases and its steady step. Gradient sync makes the
ranks finish their backward together, so every rank's synced time is about the slowest rank's
compute plus the communication backward did not hide:

    compute      = median over ranks of each rank's median unsynced forward+backward
    stragglers   = slowest rank's compute - compute (what a typical rank waits for it)
    exposed_comm = median over ranks of the synced forward+backward - slowest rank's compute
    data, optimizer = median over ranks of each rank's median
    other        = step - all of the above (the loss's all-reduce for logging, the scheduler,
                   Python). When the few steps the parts come from ran slower than the steady
                   median, the parts add up to more than the step: they are then scaled to it
                   (`scaled_to_step` < 1) and other is 0, so the parts never exceed the step.

Compute includes the loss's all-gather of embeddings (it runs in the forward, synced or not).
At world size 1 there is nothing to sync: exposed communication and stragglers are zero by
definition.
"""

from __future__ import annotations

import statistics
from typing import Any

TERMS = ("compute", "exposed_comm", "data", "optimizer", "stragglers", "other")
LABELS = {"compute": "compute", "exposed_comm": "exposed communication", "data": "data",
          "optimizer": "optimizer", "stragglers": "stragglers", "other": "other"}


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rank_parts(unsynced: dict[str, list], data: list[float], optimizer: list[float],
               step_s: float | None) -> dict[str, Any]:
    """What one rank contributes (it goes into its rank record): the re-run steps' times and
    the medians of its own phases."""
    return {**unsynced, "data_s": _median(data), "optimizer_s": _median(optimizer), "step_s": step_s}


def fit_to_step(seconds: dict[str, float | None], step: float | None) -> tuple[dict[str, float | None], float]:
    """The parts of a step (every term but "other"; None counts as 0, none negative) and "other",
    so that together they are never more than the step, and the factor that took: the parts come
    from a few steps, the step from the steady median, so when those few ran slower the parts are
    scaled to the step (their proportions kept, `scale` < 1) and other is 0; else other is the
    rest of the step (None without a step)."""
    parts: dict[str, float | None] = {k: max(0.0, v or 0.0) for k, v in seconds.items() if k != "other"}
    known = sum(parts.values())
    scale = step / known if step and known > step else 1.0
    if scale < 1:
        parts = {k: v * scale for k, v in parts.items()}
    parts["other"] = None if step is None else 0.0 if scale < 1 else step - sum(parts.values())
    return parts, scale


def decompose(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The record's `decomposition` block from every rank's `rank_parts` (None without them)."""
    if not parts or any(not p or not p.get("unsynced_s") or not p.get("synced_s") for p in parts):
        return None
    world = len(parts)
    compute_by_rank = [_median(p["unsynced_s"]) for p in parts]
    synced_by_rank = [_median(p["synced_s"]) for p in parts]
    step = _median(p["step_s"] for p in parts)
    compute = _median(compute_by_rank)
    if world == 1:
        stragglers = exposed = 0.0
    else:
        slowest = max(compute_by_rank)
        stragglers = slowest - compute
        # noise can make the synced median fall under the slowest compute: no negative comm
        exposed = max(0.0, _median(synced_by_rank) - slowest)
    data = _median(p["data_s"] for p in parts) or 0.0
    optimizer = _median(p["optimizer_s"] for p in parts) or 0.0
    seconds, scale = fit_to_step({"compute": compute, "exposed_comm": exposed, "data": data, "optimizer": optimizer,
                                  "stragglers": stragglers}, step)
    return {
        "world_size": world,
        "step_s": step,
        "seconds": seconds,
        "fraction_of_step": {k: (v / step if step and v is not None else None) for k, v in seconds.items()},
        # 1.0, or the factor the parts were scaled by to fit the steady step
        "scaled_to_step": scale,
        "synced_forward_backward_s": _median(synced_by_rank),
        "per_rank": {"compute_s": compute_by_rank, "synced_forward_backward_s": synced_by_rank},
        "steps_rerun": len(parts[0]["unsynced_s"]) if world > 1 else 0,
        "step_indices": parts[0].get("step_indices", []),
        # steps of the timed window that met a shape for the first time: never used (training.warm_steps)
        "cold_steps_in_window": parts[0].get("cold_steps_in_window"),
        # cold steps used anyway, only when the window had too few warm ones (a short run)
        "cold_steps_used": parts[0].get("cold_steps_used") or [],
        "method": ("world size 1: no gradient sync, so exposed communication and stragglers are 0 by definition"
                   if world == 1 else
                   f"the last {len(parts[0]['unsynced_s'])} steps whose shapes every rank had met before"
                   + (f" (too few: cold step(s) {parts[0]['cold_steps_used']} filled in)"
                      if parts[0].get("cold_steps_used") else "") + " (steps "
                   f"{', '.join(str(i) for i in parts[0].get('step_indices', []))}): their forward+backward re-run under "
                   "DDP no_sync() after training (untimed, no optimizer step, the same batches: warm), beside the same "
                   "steps' timed forward+backward"),
    }
