"""What a person watching a run sees: a line as each job starts and ends, its progress, the end of
its log when it fails, and at the end of the run the verdicts, the table and where the reports are.

Each rule runs its command through `python -m tier1.console --label L --log F -- CMD ...`: the whole
output goes to the log file as before; the console gets the start and end lines, the progress
lines and tier1's own INFO lines of rank 0, each prefixed with the label. No torch import here.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

TAIL_LINES = 15
PROGRESS_EVERY_S = 10.0  # at most one progress line per job this often on the console (all in the log)
# tier1's progress lines (tier1.cli.progress in a log) and its INFO lines; other ranks stay in the log
PROGRESS = re.compile(r"^\S.*\|\s*(\d+)/(\d+) \[")
SHOWN = re.compile(PROGRESS.pattern + r"|\bINFO tier1[.\w]*(?: \[rank 0\])?:")
OTHER_RANK = re.compile(r"\[rank [1-9]\d*\]")


def shown(line: str) -> bool:
    return bool(SHOWN.search(line)) and not OTHER_RANK.search(line)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def run(label: str, log: Path, cmd: list[str]) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    say(f"[tier1] {label}: started")
    t0 = time.perf_counter()
    last_progress = -PROGRESS_EVERY_S
    with log.open("w") as out, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                                errors="replace", bufsize=1) as proc:
        for line in proc.stdout:
            out.write(line)
            out.flush()
            if not shown(line):
                continue
            progress = PROGRESS.search(line)
            if progress:  # throttled, but the first and the last (n/n) always shown
                now = time.perf_counter()
                done = progress[1] == progress[2]
                if not done and now - last_progress < PROGRESS_EVERY_S:
                    continue
                last_progress = now
            say(f"[tier1] {label}: {line.strip()}")
    seconds = time.perf_counter() - t0
    if proc.returncode == 0:
        say(f"[tier1] {label}: done in {seconds:.0f} s")
    else:
        say(f"[tier1] {label}: FAILED (exit {proc.returncode}) after {seconds:.0f} s; the end of {log}:")
        for line in tail(log):
            say(f"    {line}")
    return proc.returncode


def section(markdown: str, heading: str) -> list[str]:
    """The lines of a `## heading...` section of the report, without the heading."""
    lines, inside = [], False
    for line in markdown.splitlines():
        if line.startswith("## "):
            inside = line[3:].startswith(heading)
            continue
        if inside:
            lines.append(line)
    return [line for line in lines if line.strip()]


def run_summary(md: Path, html: Path | None = None) -> str:
    """The verdicts and the headline table of a finished report, then where to read the rest."""
    text = md.read_text()
    out = ["", "tier1: the run is complete", "", "Verdicts:", *section(text, "Verdicts"), "",
           "The table:", *section(text, "The table"), "", f"Report: {md}"]
    if html is not None and html.exists():
        out.append(f"Report page (open in a browser): {html}")
    return "\n".join(out)


def failed_logs(snakemake_log: Path) -> list[Path]:
    """The log files of the jobs a Snakemake log reports as failed."""
    logs, in_error = [], False
    for line in tail(snakemake_log, 100000):
        if line.startswith("Error in rule"):
            in_error = True
        elif in_error and line.strip().startswith("log:"):
            logs.append(Path(line.split("log:", 1)[1].split("(")[0].strip()))
            in_error = False
    return list(dict.fromkeys(logs))


def failure_summary(snakemake_log: Path) -> str:
    out = ["", "tier1: the run stopped on an error. Earlier results are untouched; fix the cause and rerun the "
           "same command to go on from where it stopped."]
    for log in failed_logs(snakemake_log):
        out += [f"The end of {log}:", *(f"    {line}" for line in tail(log))]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one job's command, its output to a log and its story to the console")
    parser.add_argument("--label", required=True, help="what the job is, e.g. 'train, 2 ranks'")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command after --")
    sys.exit(run(args.label, args.log, cmd))


if __name__ == "__main__":
    main()
