"""What a person watching a run sees: a line as each job starts and ends, its progress, the end of
its log when it fails, and at the end of the run the verdicts, the table and where the reports are.

Each rule runs its command through `python -m tier1.runtime.console --label L --log F -- CMD ...`: the whole
output goes to the log file as before; the console gets the start and end lines, the progress
lines and tier1's own INFO lines of rank 0, each prefixed with the label. No torch import here.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tier1.measure import clock
from tier1.runtime import lifeline, slurm

TAIL_LINES = 15
PROGRESS_EVERY_S = 10.0  # at most one progress line per job this often on the console (all in the log)
# tier1's progress lines (tier1.runtime.cli.progress in a log) and its INFO lines; other ranks stay in the log
PROGRESS = re.compile(r"^\S.*\|\s*(\d+)/(\d+) \[")
SHOWN = re.compile(PROGRESS.pattern + r"|\bINFO tier1[.\w]*(?: \[rank 0\])?:")
OTHER_RANK = re.compile(r"\[rank [1-9]\d*\]")


def shown(line: str) -> bool:
    return bool(SHOWN.search(line)) and not OTHER_RANK.search(line)


STORY: list[Path] = []  # in a SLURM job: the file the submitting Snakemake relays to its console


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
    for path in STORY:
        try:
            with path.open("a") as f:
                f.write(text + "\n")
        except OSError:
            pass


def tail(path: Path, n: int = TAIL_LINES) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


# A rank's own last words (tier1's ERROR lines, a rank's exception), which torchrun's failure
# summary at the end of the log pushes out of a plain tail
CAUSE = re.compile(r" ERROR tier1[.\w]*|^\[rank\d+\]: [\w.]*(Error|Exception)\b")


def why_it_failed(path: Path, n: int = TAIL_LINES) -> list[str]:
    """The end of a failed job's log, led by the causes a plain tail would miss."""
    lines = tail(path, 1_000_000)
    end = lines[-n:]
    causes = [line for line in lines[:-n] if CAUSE.search(line)][-4:]
    return [*causes, "    ..." if causes else "", *end] if causes else end


# torchrun's failure summary, one entry per failed rank: "rank      : 1 (local_rank: 1)", then
# "exitcode  : -9 (pid: 2166)"; what a failed tier1 rank logs of itself (tier1.runtime.cli.stage)
# and of the peers it kills (tier1.runtime.distributed.end_local_peers)
SUMMARY_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)")
SUMMARY_SIGKILL = re.compile(r"^\s*exitcode\s*:\s*-9\b")
ENDED_BY_TIER1 = re.compile(r"\bkilling ranks? ([\d, ]+)")
FAILED_BY_ITSELF = re.compile(r"\brank (\d+) failed \(")


def unexplained_kill(lines: list[str], returncode: int) -> str | None:
    """A line for a job ended by SIGKILL that no tier1 rank did: the kernel's out-of-memory killer
    sends SIGKILL, and a rank it kills says nothing (a surviving peer's own failure, a lost
    connection, is then all the log shows). None where every SIGKILL is explained: the rank had
    failed by itself (and a failing peer ended it), or a failed peer said it would end it."""
    killed, rank = set(), None
    for line in lines:
        found = SUMMARY_RANK.match(line)
        if found:
            rank = int(found[1])
        elif rank is not None and SUMMARY_SIGKILL.match(line):
            killed.add(rank)
    for line in lines:
        ended, failed = ENDED_BY_TIER1.search(line), FAILED_BY_ITSELF.search(line)
        if ended:
            killed -= {int(r) for r in ended[1].replace(" ", "").split(",") if r}
        if failed:
            killed.discard(int(failed[1]))
    if killed:
        who = f"Rank{'s' if len(killed) > 1 else ''} {', '.join(map(str, sorted(killed)))} " + \
            ("were" if len(killed) > 1 else "was")
    elif returncode == -signal.SIGKILL:
        who = "The job's process was"
    else:
        return None
    return (f"{who} ended by SIGKILL from outside the job, without a word of its own: most often by the "
            "kernel's out-of-memory killer (`dmesg | grep -i -e oom -e killed` names it), else by a kill -9. "
            "If it was memory: a smaller batch_size or max_seq_length, or fewer ranks on this machine.")


STOP_GRACE_S = 20.0  # after a stop request, how long the job has to end before it is killed
LIFELINE_EVERY_S = 1.0


class Job:
    """The job's process, and how it is stopped: when asked (SIGINT, SIGTERM, SIGHUP to this wrapper)
    or when the lifeline breaks (Snakemake, or whatever started the job, is gone)."""

    def __init__(self, proc: subprocess.Popen, label: str):
        self.proc, self.label = proc, label
        self.stopped_by: str | None = None

    def stop(self, why: str, first: int = signal.SIGTERM) -> None:
        if self.stopped_by is not None:
            return
        self.stopped_by = why
        threading.Thread(target=self._end, args=(first,), daemon=True).start()

    def _end(self, first: int) -> None:
        # A Ctrl-C in a terminal reaches the job itself too: give it a second to end on its own
        # before repeating the request, then the grace period, then SIGKILL.
        for sig, wait in ((None, 1.0), (first, STOP_GRACE_S), (signal.SIGKILL, 0.0)):
            if self.proc.poll() is not None:
                return
            if sig is not None:
                try:
                    self.proc.send_signal(sig)
                except OSError:
                    return
            try:
                self.proc.wait(timeout=wait or None)
            except subprocess.TimeoutExpired:
                pass

    def on_signal(self, signum: int, _frame) -> None:
        self.stop(f"stopped by {signal.Signals(signum).name}", signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    def watch(self, pids: list[int]) -> None:
        """Stop the job when any of `pids` (the lifeline above this wrapper) is gone."""
        def loop():
            dead = lifeline.wait_for_loss(pids, lambda: self.proc.poll() is None, LIFELINE_EVERY_S)
            if dead is not None:
                self.stop(f"stopped: the process that started it (pid {dead}) is gone")
        if pids:
            threading.Thread(target=loop, daemon=True).start()

    def watch_heartbeat(self, path: Path, stale_s: float) -> None:
        """In a SLURM job, on a machine where no pid of the submitting Snakemake can be seen: stop
        the job when that Snakemake's heartbeat stops, and cancel its SLURM job so that every process
        of it ends at once (tier1.runtime.slurm)."""
        def loop():
            why = slurm.wait_for_lost_heartbeat(path, lambda: self.proc.poll() is None, stale_s)
            if why is not None:
                self.stop(f"stopped: {why}")
                slurm.cancel_own_job()
        threading.Thread(target=loop, daemon=True).start()


def _leave(signum: int, _frame) -> None:
    raise SystemExit(f"[tier1] stopped by {signal.Signals(signum).name} before the job started")


def run(label: str, log: Path, cmd: list[str], timed: str | None = None) -> int:
    log.parent.mkdir(parents=True, exist_ok=True)
    # The job lives by this wrapper (the parent-death signal, and TIER1_LIFELINE for a launcher below
    # a shell or `env`) and by whatever this wrapper lives by (tier1.runtime.lifeline).
    above = lifeline.lifeline(os.getpid())
    if timed is None:
        return _run(label, log, cmd, above)
    from tier1.runtime.machine_lock import TimedWindow

    def orphaned() -> str | None:
        dead = lifeline.gone(above)
        return None if dead is None else f"the process that started this job (pid {dead}) is gone"

    with handling_signals(_leave), TimedWindow(timed, os.environ.get("TIER1_RUN", "?"), label, give_up=orphaned,
                                               say=lambda text: say(f"[tier1] {label}: {text}")):
        return _run(label, log, cmd, above)


@contextlib.contextmanager
def handling_signals(handler):
    """SIGINT, SIGTERM and SIGHUP go to `handler` inside the block, as before after it."""
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = [signal.signal(sig, handler) for sig in signals]
    try:
        yield
    finally:
        for sig, old in zip(signals, before, strict=True):
            signal.signal(sig, old)


def _run(label: str, log: Path, cmd: list[str], above: list[int]) -> int:
    in_cluster_job = slurm.in_slurm_job() and bool(os.environ.get(slurm.HEARTBEAT_ENV))
    if in_cluster_job:  # the story also goes to the submitting Snakemake's console
        STORY[:] = [p for p in [slurm.write_note(label, log)] if p]
    say(f"[tier1] {label}: started")
    t0 = clock.now()
    last_progress = -PROGRESS_EVERY_S
    env = {**os.environ, lifeline.LIFELINE_ENV: ",".join(map(str, [*above, os.getpid()]))}
    with log.open("w") as out, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                                errors="replace", bufsize=1, env=env,
                                                preexec_fn=lifeline.die_with_parent) as proc:
        job = Job(proc, label)
        job.watch(above)
        if in_cluster_job:
            job.watch_heartbeat(Path(os.environ[slurm.HEARTBEAT_ENV]), slurm.stale_s())
        with handling_signals(job.on_signal):
            for line in proc.stdout:
                out.write(line)
                out.flush()
                if not shown(line):
                    continue
                progress = PROGRESS.search(line)
                if progress:  # throttled, but the first and the last (n/n) always shown
                    now = clock.now()
                    done = progress[1] == progress[2]
                    if not done and now - last_progress < PROGRESS_EVERY_S:
                        continue
                    last_progress = now
                say(f"[tier1] {label}: {line.strip()}")
    seconds = clock.now() - t0
    if proc.returncode == 0:
        say(f"[tier1] {label}: done in {seconds:.0f} s")
        return 0
    dead = lifeline.gone(above) if not job.stopped_by else None
    if dead is not None:  # the job's own watchdog (tier1.runtime.launch) saw the loss before this wrapper did
        job.stopped_by = f"stopped: the process that started it (pid {dead}) is gone"
    if job.stopped_by:
        say(f"[tier1] {label}: {job.stopped_by} after {seconds:.0f} s; its log: {log}")
        return 130
    hint = unexplained_kill(tail(log, 1_000_000), proc.returncode)
    if hint:  # into the log too: the failure screen shows the log's end
        with log.open("a") as out:
            out.write(hint + "\n")
    say(f"[tier1] {label}: FAILED (exit {proc.returncode}) after {seconds:.0f} s; the end of {log}:")
    for line in why_it_failed(log):
        say(f"    {line}")
    return proc.returncode if proc.returncode > 0 else 1


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


# a mark in a table cell: "⚠ disturbed: other processes used 0.32 of 2 cores ..." up to the cell's end
CELL_MARK = re.compile(r"⚠ ([\w-]+)[^|]*")


def run_summary(md: Path, html: Path | None = None) -> str:
    """The verdicts and the headline table of a finished report, then where to read the rest. The
    table's marks are shortened to their kind ("⚠ disturbed"): whole, they made lines of hundreds of
    characters; the report says by what."""
    text = md.read_text()
    table = [CELL_MARK.sub(r"⚠ \1 ", line) for line in section(text, "The table")]
    marked = any("⚠" in line for line in table)
    out = ["", "tier1: the run is complete", "", "Verdicts:", *section(text, "Verdicts"), "",
           "The table:", *table, *(["(⚠: a marked time; the report says what marked it)"] if marked else []),
           "", f"Report: {md}"]
    if html is not None and html.exists():
        out.append(f"Report page (open in a browser): {html}")
    return "\n".join(out)


LABEL = re.compile(r"-m tier1\.runtime\.console .*?--label ('[^']*'|\S+)")
LOG = re.compile(r"-m tier1\.runtime\.console .*?--log (\S+)")
EXIT = re.compile(r"returned non-zero exit status (\d+)")


def failed_jobs(snakemake_log: Path) -> list[dict]:
    """The jobs a Snakemake log reports as failed: what the job is (its console label, else its
    rule), its outputs, log file and exit status. Read from Snakemake's error block ("Error in rule",
    absent under `--quiet rules`) and from the failed command it always reports."""
    jobs, job = [], None
    for line in tail(snakemake_log, 100000):
        if line.startswith("Error in rule"):
            job = {"job": "rule " + line[len("Error in rule"):].split(",")[0].strip(" :"), "output": "", "log": None}
            jobs.append(job)
        elif line.startswith("Command '") and "tier1.runtime.console" in line:
            label, logfile, status = LABEL.search(line), LOG.search(line), EXIT.search(line)
            jobs.append({"job": label[1].strip("'") if label else "a job", "output": "",
                         "log": Path(logfile[1]) if logfile else None, "exit": int(status[1]) if status else None})
            job = None
        elif job is not None and line.strip().startswith("output:"):
            job["output"] = line.split("output:", 1)[1].strip()
        elif job is not None and line.strip().startswith("log:"):
            job["log"] = Path(line.split("log:", 1)[1].split("(")[0].strip().split(",")[0])
        elif job is not None and not line.startswith(" "):
            job = None
    unique: dict = {}
    for j in jobs:  # one entry per job: the console's label wins over the rule name
        key = j["log"] or j["job"]
        if key not in unique or not unique[key]["job"].startswith("rule "):
            unique.setdefault(key, {}).update({k: v for k, v in j.items() if v})
        else:
            unique[key].update({k: v for k, v in j.items() if v and k != "job"} | {"job": j["job"]})
    return list(unique.values())


def failure_summary(snakemake_log: Path, rerun: str = "snakemake --cores 4 all") -> str:
    jobs = failed_jobs(snakemake_log)
    out = ["", f"tier1: the run stopped: {len(jobs) or 'a'} job{'s' if len(jobs) > 1 else ''} failed."]
    for job in jobs:
        out += ["", f"Failed: {job['job']}" + (f" (exit status {job['exit']})" if job.get("exit") else "")
                + (f", writing {job['output']}" if job.get("output") else "")]
        if job["log"]:
            out += [f"The end of its log, {job['log']}:", *(f"    {line}" for line in why_it_failed(job["log"]))]
    incomplete = any("--rerun-incomplete" in line for line in tail(snakemake_log, 100000))
    out += ["", "What to do: fix the cause shown above, then run the same command again; it goes on from where it "
            "stopped (finished jobs are kept and not redone, training resumes from its last checkpoint):",
            f"    {rerun}" + (" --rerun-incomplete" if incomplete and "--rerun-incomplete" not in rerun else "")]
    if jobs and any(j["log"] for j in jobs):
        out.append("Each job's whole output is in its log (above); Snakemake's own log: " + str(snakemake_log))
    else:
        out.append(f"Snakemake's own log: {snakemake_log}")
    return "\n".join(out)


def stopped_summary(signal_name: str, rerun: str, cluster: list | None = None) -> str:
    who = "you (Ctrl-C)" if signal_name == "SIGINT" else f"{signal_name} (a scheduler, or `kill`)"
    out = ["", f"tier1: stopped by {who}. Finished results are kept; a job cut short was stopped and "
           "its half-written outputs removed (training goes on from its last checkpoint)."]
    if cluster:
        cut = [j for j in cluster if j.state not in {"COMPLETED"}]
        out.append("SLURM: " + (", ".join(f"job {j.job_id} ({j.what()}) {j.state.lower()}" for j in cut)
                                if cut else "no job of this run was left queued or running"))
    return "\n".join([*out, "To resume, run the same command again:", f"    {rerun}"])


def slurm_failures(jobs: list) -> list[str]:
    """The failure screen's part for SLURM jobs: each failed job by name, its SLURM state, reason and
    exit code, the end of its own log (tier1's) and of SLURM's log of it."""
    out = []
    for job in [j for j in jobs if j.failed]:
        out += ["", f"Failed: {job.what()} (SLURM job {job.job_id}: {job.state}, reason {job.reason}"
                + (f", exit code {job.exit_code}" if job.exit_code else "") + ")"]
        if job.log and job.log.exists():
            out += [f"The end of its log, {job.log}:", *(f"    {line}" for line in why_it_failed(job.log))]
        if job.slurm_log and job.slurm_log.exists():
            out += [f"The end of SLURM's log of it, {job.slurm_log}:", *(f"    {line}" for line in tail(job.slurm_log, 8))]
        if not job.log and not job.slurm_log:
            out.append("    it never started: SLURM refused or could not place its request")
    for job in slurm.active(jobs):
        out.append(f"Still queued or running: SLURM job {job.job_id} ({job.what()}), {job.state}")
    return out


def end_of_failed_run(snakemake_logs: list[str] | str, rerun: str, stopped_by: list[str], cluster: list | None = None) -> str:
    """What the Snakefile's onerror prints: why the run stopped, and what to do. `cluster`: the run's
    SLURM jobs (tier1.runtime.slurm.SlurmJob), under the SLURM executor."""
    logs = [snakemake_logs] if isinstance(snakemake_logs, (str, Path)) else list(snakemake_logs)
    if stopped_by:
        return stopped_summary(stopped_by[0], rerun, cluster)
    summary = failure_summary(Path(logs[0]) if logs else Path(os.devnull), rerun)
    failed = slurm_failures(cluster or [])
    if not failed:
        return summary
    # the SLURM part goes where the failed jobs are named: after the headline, before "What to do"
    head, _, rest = summary.partition("\n\nWhat to do:")
    count = sum(1 for j in cluster if j.failed)
    head = head.replace("a job failed.", f"{count} SLURM job{'s' if count > 1 else ''} failed.") if "a job failed." in head else head
    return "\n".join([head, *failed, "", "What to do:" + rest])


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc; none elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if entry.name.isdigit():
            parent = lifeline._parent_of(int(entry.name))
            if parent:
                children.setdefault(parent, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def stop_jobs(pid: int, signum: int) -> None:
    """Ask every console story below `pid` (Snakemake's jobs) to stop its job: SIGINT for a Ctrl-C,
    SIGTERM otherwise."""
    sig = signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM
    for child in descendants(pid):
        if lifeline.is_console(child):
            try:
                os.kill(child, sig)
            except OSError:
                pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run one job's command, its output to a log and its story to the console")
    parser.add_argument("--label", required=True, help="what the job is, e.g. 'train, 2 ranks'")
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--timed", metavar="DEVICES", default=None,
                        help="a timed job: hold the machine's lock for these devices (comma-separated GPU ids, "
                             "or 'cpu') while it runs, so no other run times at the same moment (tier1.runtime.machine_lock)")
    parser.add_argument("cmd", nargs=argparse.REMAINDER, help="-- then the command")
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command after --")
    sys.exit(run(args.label, args.log, cmd, args.timed))


if __name__ == "__main__":
    main()
