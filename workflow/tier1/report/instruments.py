"""What the disturbance instruments observed in the timed windows, said per instrument: a window
no instrument could watch is not a quiet one (its time carries an "unobserved" mark, tier1.measure.disturbance)."""

from __future__ import annotations

from tier1.report.collect import Results


def _windows(r: Results) -> list[tuple[str, int, dict]]:
    """(job, rank, window record) of every timed window the records keep."""
    out = []
    for kind, records in (("training", r.train), ("evaluation", r.eval_base)):
        for n, record in sorted(records.items()):
            for rank, x in enumerate(record.ranks):
                if isinstance(x.get("window"), dict):
                    out.append((f"{kind} on {n} rank(s)", rank, x["window"]))
    return out


def lines(r: Results) -> list[str]:
    windows = _windows(r)
    if not windows:
        return []
    cpu_missing = [(job, rank, w["cpu_unobserved"]) for job, rank, w in windows if w.get("cpu_unobserved")]
    gpus = [(job, rank, w.get("gpu") or {}) for job, rank, w in windows]
    out = ["## What the instruments observed", ""]
    if cpu_missing:
        job, rank, why = cpu_missing[0]
        out.append(f"- Other processes and hypervisor steal (the machine's CPU counters): **unobserved** in "
                   f"{len(cpu_missing)} of {len(windows)} windows, e.g. {job}, rank {rank}: {why}.")
    else:
        out.append(f"- Other processes and hypervisor steal (the machine's CPU counters): observed in all "
                   f"{len(windows)} timed windows.")
    if all(g.get("not_applicable") for _, _, g in gpus):
        out.append("- GPU neighbours and throttling (NVML): not applicable, the run is not on a GPU.")
    else:
        missing = [(job, rank, g.get("unobserved") or "no GPU record") for job, rank, g in gpus
                   if not g.get("sampled") and not g.get("not_applicable")]
        if missing:
            job, rank, why = missing[0]
            out.append(f"- GPU neighbours and throttling (NVML): **unobserved** in {len(missing)} of {len(gpus)} "
                       f"windows, e.g. {job}, rank {rank}: {why}. No verdict of a quiet GPU is drawn from them.")
        else:
            clocks = [g[k] for _, _, g in gpus for k in ("sm_clock_mhz_min", "sm_clock_mhz_max") if g.get(k)]
            span = f", SM clock {min(clocks)}-{max(clocks)} MHz" if clocks else ""
            out.append(f"- GPU neighbours and throttling (NVML): sampled through all {len(gpus)} windows{span}.")
    out += ["", "A window an instrument could not watch carries an \"unobserved\" mark and gets no speedup, "
            "like a disturbed one: its quiet is unknown, not shown.", ""]
    return out
