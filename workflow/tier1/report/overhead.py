"""Pipeline overhead: the run's job wall time minus the timed windows of its stages.

A job's wall time is Snakemake's benchmark file of it (`benchmark:` in the rule; column `s`, the
seconds its shell command ran, one row per repetition). Its timed windows are what the stage files
the report reads say they timed: training and evaluation, the sum of `wall_times_s` over repeats (training adds
`decomposition_s`, the steps it re-runs to measure the step decomposition);
every other stage, `work_s`, the seconds of its own work (inspecting the machine, preparing the
data set, tokenising, the probe's batch search, the collectives sweep). Everything else is
overhead: process and torchrun start-up, imports, model and input loading, warm-up, writing
files, and whole jobs whose stage file records no window (one written before
the stages recorded `work_s`, or one the report was not given).

Jobs are named by their benchmark file's stem, as the rules name those files: `train_gpus{n}`,
`train_reference_gpus1`, `eval_ws{w}` (the base and the trained model at world size w, one
launch; older runs: `eval_base_ws{w}`, `eval_gpus{n}_ws{w}`), `preflight`, `prepare`,
`tokenize`, `probe_gpus{n}` and `commbench_ws{n}` have timed windows; any other job has none.
The report job cannot time itself, so a `report` file (an earlier report's) is left out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tier1.report.analysis import fmt, pct
from tier1.report.collect import Results

AROUND = {
    "train": "start-up, imports, model and data load, warm-up step (GPUs only), writing",
    "eval": "start-up, imports, model and token load, warm-up, writing",
    "work": "start-up, imports, loading the model or inputs, writing",
}
UNTIMED = "the whole job: it has no timed window"
NOT_GIVEN = "the whole job: its stage record was not given to the report"
NO_WORK_S = "the whole job: its stage record holds no `work_s` (written before stages recorded their work)"
# the order the jobs run in, by name prefix; other jobs go last
ORDER = ("check_gpus", "preflight", "prepare", "tokenize", "probe", "commbench_", "train_gpus", "train_reference",
         "eval_ws", "eval_base_", "eval_gpus")


def _order(name: str) -> tuple[int, int, str]:
    rank = next((i for i, p in enumerate(ORDER) if name.startswith(p)), len(ORDER))
    digits = re.findall(r"\d+", name)
    return rank, int(digits[-1]) if digits else 0, name


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


def _windows(kind: str, record: dict) -> float | None:
    """The seconds `record` says its stage timed; None when it records none (an older file)."""
    if kind == "work":
        return None if record.get("work_s") is None else float(record["work_s"])
    # training's second window: the step decomposition's re-run steps and all-reduce timing
    return float(sum(_walls(record))) + float(record.get("decomposition_s") or 0.0)


def _walls(record: dict) -> list[float]:
    return list(record.get("wall_times_s") or [record["wall_time_s"]])


def _what(kind: str, record: dict | None, timed: float | None) -> str:
    if timed is not None:
        if kind == "train" and "decomposition_s" not in record:  # a record from before it was timed
            return AROUND[kind] + ", the step decomposition's re-run steps"
        return AROUND[kind]
    if record:
        return NO_WORK_S
    return NOT_GIVEN if kind else UNTIMED


def timed_window(name: str, r: Results) -> tuple[str, dict | None, str | None]:
    """(kind, record, source) for a job: kind "train"/"eval" for timed runs, "work" for a stage's
    own work (`work_s`), record None when the report was not given it; "" for a job that times nothing."""
    once = {"preflight": (r.preflight, "preflight"), "prepare": (r.manifest, "manifest"), "tokenize": (r.tokenize, "tokenize")}
    if name in once:  # one file per run, kept at world size 0
        record, key = once[name]
        return "work", record or None, r.paths.get((key, 0))
    if name == "probe":  # on a CPU one job writes every world size's "not applicable" record
        first = min(r.probe, default=None)
        return "work", r.probe.get(first), r.paths.get(("probe", first))
    if m := re.fullmatch(r"probe_gpus(\d+)", name):
        n = int(m[1])
        return "work", r.probe.get(n), r.paths.get(("probe", n))
    if m := re.fullmatch(r"commbench_ws(\d+)", name):
        n = int(m[1])
        return "work", r.comm.get(n), r.paths.get(("comm", n))
    if name == "train_reference_gpus1":
        return "train", r.reference_train or None, r.paths.get(("reference_train", 1))
    if m := re.fullmatch(r"train_gpus(\d+)", name):
        n = int(m[1])
        return "train", r.train.get(n), r.paths.get(("train", n))
    if m := re.fullmatch(r"eval_ws(\d+)", name):
        # one launch evaluates the base model and the model trained on w ranks, each timed
        w = int(m[1])
        base, trained = r.eval_base.get(w), r.eval_trained.get(w)
        if not (base and trained):
            return "eval", None, None
        both = {"wall_times_s": _walls(base) + _walls(trained)}
        return "eval", both, f"{r.paths.get(('eval_base', w))} + {r.paths.get(('eval_trained', w))}"
    if m := re.fullmatch(r"eval_base_ws(\d+)", name):
        w = int(m[1])
        return "eval", r.eval_base.get(w), r.paths.get(("eval_base", w))
    if m := re.fullmatch(r"eval_gpus(\d+)_ws(\d+)", name):
        n, w = int(m[1]), int(m[2])
        # the report reads each trained model evaluated at its own world size only
        found = r.eval_trained.get(w) if n == w else None
        return "eval", found, r.paths.get(("eval_trained", w)) if found else None
    return "", None, None


def jobs(r: Results) -> list[Job]:
    out = []
    for name, bench in sorted(r.benchmarks.items(), key=lambda kv: _order(kv[0])):
        kind, record, source = timed_window(name, r)
        seconds = bench["s"]
        timed = _windows(kind, record) if record else None
        out.append(Job(name, bench["path"], seconds[-1], len(seconds), timed, source if timed is not None else None,
                       _what(kind, record, timed)))
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
    if not r.benchmarks:
        return lines + ["No Snakemake benchmark files were given to the report (`--benchmarks`), so the "
                        "pipeline overhead is not shown.", ""]
    js = jobs(r)
    t = totals(js)
    lines += ["The jobs' wall time (Snakemake benchmark files, `s`) minus the timed windows their stage files "
              "record: training and evaluation every repeat's timed run (training also the steps it re-runs to "
              "measure the step decomposition), every other stage the seconds of its own "
              "work (`work_s`: inspecting the machine, preparing the data set, tokenising, the collectives sweep, "
              "the probe's batch search, which is none on a CPU). Overhead is everything outside a timed window: process and "
              "torchrun start-up, imports, loading the model and inputs, warm-up, writing, and "
              "whole jobs whose stage file records no window (an older file, or one not given to the report). "
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
    if r.benchmarks_left_out:
        lines += ["", "Left out: " + ", ".join(f"`{p}`" for p in r.benchmarks_left_out)
                  + " (the report job's own, from an earlier report)."]
    return lines + [""]


def csv_rows(r: Results) -> list[dict]:
    """Long-form rows for performance.csv: per job, then the totals."""
    if not r.benchmarks:
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
