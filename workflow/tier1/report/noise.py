"""How well a measured ratio is known, from the run's own spread: the margin a verdict needs
before it calls a ratio above or below a threshold.

A speedup is a ratio of two steady-step medians (1 rank / n ranks). Each median is known to its
standard error (the train record's `steady_step_spread`: ~0.93 IQR / sqrt(steps)); with several
repeats, their spread counts too (half the range of the repeats' wall times, relative). The
ratio's relative uncertainty adds the two runs' in quadrature. A verdict is given only when the
threshold lies outside ratio x (1 +- NOISE_SIGMAS x uncertainty).
"""

from __future__ import annotations

from tier1.records import TrainRecord

NOISE_SIGMAS = 2.0  # a ratio this many uncertainties from the threshold is judged


def relative_uncertainty(record: TrainRecord) -> float | None:
    """One run's steady step, relative: the larger of its median's standard error and its
    repeats' half range; None when the record holds neither (too few steps, one repeat)."""
    se = (record.steady_step_spread or {}).get("median_se_relative")
    walls = [w for w in record.wall_times_s if w]
    repeats = (max(walls) - min(walls)) / 2 / (sum(walls) / len(walls)) if len(walls) > 1 else None
    known = [x for x in (se, repeats) if x is not None]
    return max(known) if known else None


def ratio_uncertainty(one: TrainRecord, other: TrainRecord) -> float | None:
    """Relative uncertainty of a ratio of the two runs' steady steps."""
    a, b = relative_uncertainty(one), relative_uncertainty(other)
    if a is None and b is None:
        return None
    return ((a or 0.0) ** 2 + (b or 0.0) ** 2) ** 0.5


def judge(ratio: float | None, threshold: float, uncertainty: float | None) -> tuple[bool | None, str]:
    """(True: below the threshold, False: at or above it, None: within noise or unknown) and why.
    Without a known spread, the ratio is judged as measured and said so."""
    if ratio is None:
        return None, "n/a"
    if uncertainty is None:
        return ratio < threshold, "spread unknown: judged as measured"
    margin = NOISE_SIGMAS * uncertainty * ratio
    if ratio + margin < threshold:
        return True, f"below by more than the noise (±{100 * margin:.0f} points)"
    if ratio - margin >= threshold:
        return False, f"above by more than the noise (±{100 * margin:.0f} points)"
    return None, f"within the run's noise of {100 * threshold:.0f}% (±{100 * margin:.0f} points): not judged"
