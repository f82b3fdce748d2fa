"""What the GPU machine's call would bring back, checked (the last step of scripts/gpu_rehearsal.sh).

    python -m tier1.tools.gpu_rehearsal --plan .gpu_bundle/gpu_check.sh --out OUT --log session.log

Every job of the plan (tier1.tools.gpu_plan) must have run with exit status 0, as its run's steps
file in the archive says; every JSON file a job makes must be in the archive and read through the
record class its schema names (tier1.records); the summary (Markdown and JSON) and the bench's
comparison must be in OUT. What was skipped is said one line each with its reason: the GPU tests
skip on a machine without CUDA, and pytest's own lines say so. Exit status 1 names each failure.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shlex
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tier1 import layout, records
from tier1.records import BenchRecord, Record, RecordError

KINDS: dict[str, type[Record]] = {cls.KIND: cls for cls in (getattr(records, n) for n in records.__all__)
                                  if isinstance(cls, type) and issubclass(cls, Record) and cls.KIND}
ARCHIVE = "gpu_check_files.tar.gz"
SUMMARY = ("gpu_summary.md", "gpu_summary.json")


@dataclass(frozen=True)
class PlannedJob:
    run: str
    name: str
    outputs: list[str]


def planned_jobs(plan: Path) -> list[PlannedJob]:
    """Every `job` line of the check's script: its run, name and outputs."""
    jobs = []
    for line in plan.read_text().splitlines():
        if line.startswith("job "):
            run, name, _limit, _steps, _bench, _inputs, outputs, *_ = shlex.split(line)[1:]
            jobs.append(PlannedJob(run, name, outputs.split()))
    return jobs


BUDGET_LINE = re.compile(r"^#\s+(?:past the plan: )?(?P<job>\S+/\S+): (?P<secs>\d+) s, \d+ s from the start$", re.M)


def expected_on_gpu(plan: Path) -> dict[str, int]:
    """Each job's expected seconds on the GPU, as the plan's budget lines state them."""
    return {m["job"]: int(m["secs"]) for m in BUDGET_LINE.finditer(plan.read_text())}


def times_beside_estimates(plan: Path, files: dict[str, bytes]) -> list[str]:
    """A line per job: its seconds in this rehearsal beside its expected seconds on the GPU."""
    expected = expected_on_gpu(plan)
    lines = []
    for run in dict.fromkeys(j.run for j in planned_jobs(plan)):
        text = files.get(str(PurePosixPath(run) / layout.GPU_CHECK_STEPS), b"").decode()
        for row in csv.reader(io.StringIO(text), delimiter="\t"):
            if row and f"{run}/{row[0]}" in expected:
                lines.append(f"time: {run}/{row[0]}: {row[1] or 'n/a'} s here, {expected[f'{run}/{row[0]}']} s expected on the GPU")
    return lines


def inside_run(path: str, run: str) -> str | None:
    """`path` relative to the run's folder, or None when it lies elsewhere."""
    prefix = layout.run_folder(run) + "/"
    return path[len(prefix):] if path.startswith(prefix) else None


def check(plan: Path, out: Path, log_text: str) -> tuple[list[str], list[str]]:
    """(failures, notes) of the call's output `out` against the plan."""
    failures, notes = [], []
    for name in (*SUMMARY, ARCHIVE):
        if not (out / name).is_file():
            failures.append(f"{out / name}: missing")
    if not (out / ARCHIVE).is_file():
        return failures, notes
    with tarfile.open(out / ARCHIVE) as tar:
        # a hard link (a run's data linked from the main run's) reads as the file it links to
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile() or m.islnk()}
    jobs = planned_jobs(plan)
    for run in sorted({j.run for j in jobs}):
        steps_file = str(PurePosixPath(run) / layout.GPU_CHECK_STEPS)
        rows = list(csv.reader(io.StringIO(files.get(steps_file, b"").decode()), delimiter="\t"))
        status = {row[0]: (row[2] if len(row) > 2 else "") for row in rows if row}
        for job in (j for j in jobs if j.run == run):
            got = status.get(job.name)
            if got != "0":
                tail = files.get(str(PurePosixPath(run) / layout.log(job.name)), b"").decode(errors="replace")
                failures.append(f"{run}/{job.name}: " + ("never ran" if got is None else f"status {got!r}")
                                + ("; its log ends:\n" + "\n".join("    | " + x for x in tail.splitlines()[-12:])
                                   if tail else ""))
                continue
            for path in job.outputs:
                inside = inside_run(path, run)
                if inside is None or not inside.endswith(".json"):
                    continue
                member = str(PurePosixPath(run) / inside)
                if member not in files:
                    failures.append(f"{run}/{job.name}: {inside} is not in the archive")
                    continue
                try:
                    read_record(files[member], member)
                except RecordError as err:
                    failures.append(f"{run}/{job.name}: {err}")
    for name, kind in (("compare.json", BenchRecord),):
        if (out / name).is_file():
            try:
                kind.read(out / name)
            except RecordError as err:
                failures.append(str(err))
        else:
            failures.append(f"{out / name}: missing (the bench's comparison)")
    if (out / SUMMARY[1]).is_file():
        table = json.loads((out / SUMMARY[1]).read_text())
        unmeasured = [label for label, value in table.items() if value == "n/a"]
        notes.append(f"summary: {len(table)} rows, n/a in {len(unmeasured)}: {', '.join(unmeasured) or 'none'}")
    notes += times_beside_estimates(plan, files)
    notes += skipped_tests(log_text)
    return failures, notes


def read_record(data: bytes, source: str) -> Record:
    """The record a file holds, through the class its schema names."""
    try:
        content = json.loads(data)
    except json.JSONDecodeError as err:
        raise RecordError(f"{source}: not JSON ({err})") from None
    kind = str(content.get(records.base.SCHEMA_KEY, "")).partition("/")[0] if isinstance(content, dict) else ""
    if kind not in KINDS:
        raise RecordError(f"{source}: no record kind {kind!r} (its schema field); known: {', '.join(sorted(KINDS))}")
    return KINDS[kind].from_json(content, source)


def skipped_tests(log_text: str) -> list[str]:
    """pytest's lines for the GPU tests that skipped, and its closing count."""
    lines = [x.strip() for x in log_text.splitlines()]
    skipped = [x for x in lines if x.startswith("SKIPPED")]
    closing = [x for x in lines if re.search(r"\b\d+ (passed|skipped|failed|deselected)\b", x) and " in " in x]
    return [f"GPU tests: {x}" for x in skipped + closing[-1:]]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, required=True, help="the check's script (.gpu_bundle/gpu_check.sh)")
    parser.add_argument("--out", type=Path, required=True, help="what the call brought back ($OUT)")
    parser.add_argument("--log", type=Path, help="the session's console output (for the GPU tests' lines)")
    args = parser.parse_args(argv)
    failures, notes = check(args.plan, args.out, args.log.read_text() if args.log else "")
    for note in notes:
        print("   " + note)
    jobs = planned_jobs(args.plan)
    if failures:
        print(f"the rehearsal FAILED: {len(failures)} problem(s) among {len(jobs)} planned jobs", file=sys.stderr)
        for failure in failures:
            print("  - " + failure, file=sys.stderr)
        sys.exit(1)
    print(f"   all {len(jobs)} planned jobs ran; their records, the summary and the archive read back")


if __name__ == "__main__":
    main()
