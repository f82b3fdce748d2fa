"""Pipeline overhead: the run's job wall time minus the timed windows of its stages.

A job's wall time is Snakemake's benchmark file of it (`benchmark:` in the rule; column `s`, the
seconds its shell command ran, one row per repetition). Its timed windows are what the stage records
the report rule names for it say they timed: training and evaluation, the sum of `wall_times_s` over
repeats (training adds `decomposition_s`, the steps it re-runs to measure the step decomposition);
every other stage, `work_s`, the seconds of its own work (inspecting the machine, preparing the
data set, tokenising, the probe's batch search, the collectives sweep). Everything else is
overhead: process and torchrun start-up, imports, model and input loading, warm-up, writing
files, and whole jobs with no timed window or whose record the report was not given.

The jobs, their benchmark files and the records of their windows come from the report rule's index
(tier1.report.collect.Inputs.jobs), in the order the rule lists them; nothing is read from a name.
The report job cannot time itself, so it is not among them.
"""

from __future__ import annotations

from dataclasses import dataclass

from tier1.records import EvaluationRecord, Record, TrainRecord
from tier1.report.analysis import fmt, pct
from tier1.report.collect import Results

AROUND = {
    "train": "start-up, imports, model and data load, shape warm-up, writing",
    "eval": "start-up, imports, model and token load, warm-up, writing",
    "work": "start-up, imports, loading the model or inputs, writing",
}
UNTIMED = "the whole job: it has no timed window"
NOT_GIVEN = "the whole job: its stage record was not given to the report"


@dataclass(frozen=True)
class Job:
    name: str
    source: str                # the benchmark file
    wall_s: float              # the last repetition's: the one whose stage files the report reads
    repetitions: int
    timed_s: float | None      # None: no timed window counted
    timed_source: str | None
    what: str                  # what the overhead is made of

    @property
    def overhead_s(self) -> float:
        return self.wall_s - (self.timed_s or 0.0)


def seconds_timed(record: Record) -> float:
    """The seconds `record` says its stage timed: every repeat's timed run (training adds the step
    decomposition's re-run steps), or the stage's own work."""
    if isinstance(record, TrainRecord):
        return float(sum(record.wall_times_s)) + float(record.decomposition_s)
    if isinstance(record, EvaluationRecord):
        return float(sum(record.wall_times_s))
    return float(record.work_s)


def kind_of(record: Record) -> str:
    return "train" if isinstance(record, TrainRecord) else "eval" if isinstance(record, EvaluationRecord) else "work"


def jobs(r: Results) -> list[Job]:
    out = []
    for name, job in r.jobs.items():
        found = [r.window(ref) for ref in job.windows]
        records = [record for record, _ in found]
        wall = job.seconds[-1]
        if not job.windows:
            timed, source, what = None, None, UNTIMED
        elif any(record is None for record in records):
            # one window missing (a launch evaluating two models, say): none is half-counted
            timed, source, what = None, None, NOT_GIVEN
        else:
            timed = sum(seconds_timed(record) for record in records)
            source, what = " + ".join(path for _, path in found), AROUND[kind_of(records[0])]
            warm = [s for record in records if isinstance(record, TrainRecord) for s in record.warm_up_s]
            if warm:  # the one part of the overhead the training stage measures itself
                what += f" (of which shape warm-up {fmt(sum(warm), ' s', 1)})"
        out.append(Job(name, job.benchmark, wall, len(job.seconds), timed, source, what))
    return out


@dataclass(frozen=True)
class Totals:
    wall_s: float
    timed_s: float
    overhead_s: float
    share: float | None
    around_timed_s: float    # overhead inside jobs that have timed windows
    untimed_jobs_s: float    # jobs with no timed window counted, whole


def totals(js: list[Job]) -> Totals:
    wall = sum(j.wall_s for j in js)
    timed = sum(j.timed_s or 0.0 for j in js)
    around = sum(j.overhead_s for j in js if j.timed_s is not None)
    untimed = sum(j.wall_s for j in js if j.timed_s is None)
    return Totals(wall, timed, wall - timed, (wall - timed) / wall if wall else None, around, untimed)


def markdown(r: Results) -> list[str]:
    lines = ["## Pipeline overhead", ""]
    if not r.jobs:
        return lines + ["No Snakemake benchmark files were given to the report (its index's `jobs`), so the "
                        "pipeline overhead is not shown.", ""]
    js = jobs(r)
    t = totals(js)
    lines += ["The jobs' wall time (Snakemake benchmark files, `s`) minus the timed windows their stage files "
              "record: training and evaluation every repeat's timed run (training also the steps it re-runs to "
              "measure the step decomposition), every other stage the seconds of its own "
              "work (`work_s`: inspecting the machine, preparing the data set, tokenising, the collectives sweep, "
              "the probe's batch search, which is none on a CPU). Overhead is everything outside a timed window: process and "
              "torchrun start-up, imports, loading the model and inputs, warm-up, writing, and "
              "whole jobs with no timed window or whose stage record was not given to the report. "
              "The wall times are summed, so jobs that ran at the same time each count; the report job "
              "itself and Snakemake's own planning between jobs are not in the sum (no benchmark file measures them).",
              "",
              f"- Job wall time, summed: {fmt(t.wall_s, ' s', 1)} over {len(js)} jobs",
              f"- Timed windows: {fmt(t.timed_s, ' s', 1)}",
              f"- **Overhead: {fmt(t.overhead_s, ' s', 1)} ({pct(t.share)} of the job wall time)**: "
              f"{fmt(t.around_timed_s, ' s', 1)} around the timed windows, "
              f"{fmt(t.untimed_jobs_s, ' s', 1)} in jobs with no timed window", "",
              "| Job | Wall | Timed windows | Overhead | Share of the job | Overhead is |", "|---" * 6 + "|"]
    for j in js:
        warn = " ⚠ timed windows exceed the job's wall time (a resumed job?)" if j.overhead_s < 0 else ""
        lines.append(f"| {j.name} | {fmt(j.wall_s, ' s', 1)} | {fmt(j.timed_s, ' s', 1)} "
                     f"| {fmt(j.overhead_s, ' s', 1)}{warn} | {pct(j.overhead_s / j.wall_s if j.wall_s else None)} "
                     f"| {j.what} |")
    repeated = [j for j in js if j.repetitions > 1]
    if repeated:
        lines += ["", "Repeated jobs (`repeat()` in the rule): only the last repetition counts, the one whose stage "
                  "files the report reads: " + ", ".join(f"{j.name} ({j.repetitions} repetitions)" for j in repeated)
                  + "."]
    return lines + [""]


def csv_rows(r: Results) -> list[dict]:
    """Long-form rows for performance.csv: per job, then the totals."""
    if not r.jobs:
        return []
    js = jobs(r)
    t = totals(js)
    out = []

    def add(metric, value, unit, source):
        out.append({"metric": metric, "world_size": None, "value": value, "unit": unit, "source": source})

    for j in js:
        add(f"job_{j.name}_wall_time", j.wall_s, "s", j.source)
        add(f"job_{j.name}_timed_windows", j.timed_s, "s", j.timed_source or "")
        add(f"job_{j.name}_overhead", j.overhead_s, "s", j.source)
    derived = "sum of the job_* rows"
    add("pipeline_wall_time", t.wall_s, "s", derived)
    add("pipeline_timed_windows", t.timed_s, "s", derived)
    add("pipeline_overhead", t.overhead_s, "s", derived)
    add("pipeline_overhead_share", t.share, "fraction", derived)
    return out
