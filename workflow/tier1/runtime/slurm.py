"""The cluster path: what tier1 adds to Snakemake's SLURM executor (snakemake-executor-plugin-slurm)
so that a run on SLURM never hangs, names its failures and leaves no job behind.

- Job status: the executor asks `sacct` whenever the binary exists; on a cluster without accounting
  (no slurmdbd) sacct answers "accounting storage is disabled" and no job is ever seen to end.
  `choose_status_command` asks sacct once, and switches the executor to squeue when it does not work.
  Where sacct works, it names a cancelled job "CANCELLED by <uid>", a state the executor took for a
  running job (the run waited for ever): `plain_job_states` gives the executor squeue's plain names.
- A lost Snakemake: a SLURM job runs on another machine, where no parent-death signal or pid can
  reach it. The submitting Snakemake writes a heartbeat file on the shared file system (the executor
  needs one anyway) every HEARTBEAT_EVERY_S from a thread that does nothing else; each job's console
  story watches it and stops the job when it has not changed for TIER1_HEARTBEAT_STALE_S (default
  HEARTBEAT_STALE_S). Watching for a change (not comparing clocks) is immune to clock skew between
  nodes; reading by open() gets NFS's close-to-open consistency.
- Status checks: `adapt_status_checks` asks soon after a submission or a job's end and backs off
  while nothing changes (StatusSchedule): short jobs are seen to end within seconds, long ones cost
  the controller little.
- Failures: each job's console story leaves a note (label, log, node) under the run's notes folder;
  after a failed run `run_jobs` asks SLURM for the state and reason of every job of the run (squeue,
  and sacct where it works for the jobs squeue has forgotten) and `with_notes` joins them with the
  notes, so the failure screen names the job, its SLURM state and reason, and the end of its logs.
- Requests: `request_problems` compares each job's CPUs, memory and GPUs with the largest node of its
  partition before anything is submitted (SLURM refuses memory at once but leaves too many CPUs
  pending for ever).

Nothing here imports torch or Snakemake.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HEARTBEAT_ENV = "TIER1_HEARTBEAT"
STALE_ENV = "TIER1_HEARTBEAT_STALE_S"
NOTES_ENV = "TIER1_SLURM_NOTES"
HEARTBEAT_EVERY_S = 1.0
# Five beats: the beat's own thread does nothing else, so a live Snakemake misses five only when its
# machine or file system has stalled for seconds. A job of a Snakemake killed with kill -9 then sees
# the loss 5-6 s after the kill and cancels itself (~2 s to end, measured on a loaded 2-core test
# cluster): inside the 10 s in which a lost run must leave no job. 10 s took ~12 s in all.
HEARTBEAT_STALE_S = 5.0
# The last line of a job's story (tier1.runtime.console): its command has ended, its SLURM job soon will.
STORY_END = re.compile(r"^\[tier1\] .*?: (done in \d+ s|FAILED \(exit|stopped\b)")
FAILED_STATES = {"BOOT_FAIL", "CANCELLED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT", "PREEMPTED"}


def _run(cmd: list[str], timeout: float = 20) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None


def in_slurm_job(env: dict[str, str] | None = None) -> bool:
    return bool((os.environ if env is None else env).get("SLURM_JOB_ID"))


# --- job status -------------------------------------------------------------------------------------

def accounting_works() -> tuple[bool, str]:
    """Whether `sacct` answers on this cluster, and what it said when it does not."""
    if shutil.which("sacct") is None:
        return False, "no sacct on this machine"
    proc = _run(["sacct", "-X", "-n", "-S", "now", "-o", "JobIDRaw"])
    if proc is None:
        return False, "sacct did not answer within 20 s"
    said = (proc.stderr or proc.stdout).strip().splitlines()
    if proc.returncode != 0 or "disabled" in proc.stdout + proc.stderr:
        return False, f"sacct: {said[-1] if said else f'exit status {proc.returncode}'}"
    return True, "sacct works"


def min_job_age_s() -> int | None:
    """How long slurmctld keeps a finished job where squeue sees it (MinJobAge), if it says."""
    proc = _run(["scontrol", "show", "config"])
    for line in (proc.stdout if proc else "").splitlines():
        if line.strip().startswith("MinJobAge"):
            found = re.search(r"=\s*(\d+)", line)
            return int(found[1]) if found else None
    return None


def choose_status_command(settings) -> str:
    """Point the executor's status check (settings.status_command) at what works here; returns
    the line that says which and why."""
    works, said = accounting_works()
    if works:
        if getattr(settings, "status_command", None) != "squeue":
            settings.status_command = "sacct"
        return f"SLURM: job status from {settings.status_command} (accounting works)"
    settings.status_command = "squeue"
    line = f"SLURM: job status from squeue: this cluster keeps no accounting ({said})"
    age, first = min_job_age_s(), getattr(settings, "init_seconds_before_status_checks", 40) or 40
    if age is not None and age < 3 * first:
        line += (f"; MinJobAge {age} s is under 3x --slurm-init-seconds-before-status-checks ({first} s), so "
                 f"the executor would go back to sacct: lower that to {max(1, age // 3)}")
    elif age is not None and age < 2 * status_cap_s():
        line += (f"; MinJobAge {age} s is under twice the longest wait between status checks "
                 f"({status_cap_s():g} s): lower {STATUS_MAX_ENV} to {max(1, age // 2)}")
    return line


def plain_state(state: str) -> str:
    """A job state as squeue names it: sacct adds who cancelled a job ("CANCELLED by 0")."""
    return state.split(" ", 1)[0]


def plain_job_states(executor) -> bool:
    """Make the executor read sacct's job states as squeue names them. It compares each job's state
    with its own list of failed states; "CANCELLED by 0" is in none of them, so a cancelled job
    (scancel by a user or an administrator, a job stopping itself on a stale heartbeat) was a running
    job to it, and the run waited for ever. Its status query is a function of its module
    (query_job_status), wrapped there. Whether that was found."""
    module = next((sys.modules.get(c.__module__) for c in type(executor).__mro__
                   if hasattr(sys.modules.get(c.__module__), "query_job_status")), None)
    if module is None:
        return False
    query = module.query_job_status
    if getattr(query, "plain_states", False):
        return True

    async def plain(*args, **kwargs):
        states, took = await query(*args, **kwargs)
        return (None if states is None else {job: plain_state(state) for job, state in states.items()}), took

    plain.plain_states = True
    module.query_job_status = plain
    return True


STATUS_MAX_ENV = "TIER1_SLURM_STATUS_MAX_S"
STATUS_FIRST_S = 1.0  # a young job, or one whose command has just ended, is asked about soon
STATUS_BACKOFF = 1.5  # a job is seen to end at most about half its age (plus STATUS_FIRST_S) late
STATUS_MAX_S = 30.0  # a long job costs the controller one squeue call per run per 30 s
STATUS_SLICE_S = 0.25  # how often the waiting executor looks at the schedule (no cluster call)


class StatusSchedule:
    """When the executor next asks SLURM about the run's jobs: STATUS_FIRST_S after a change is
    expected (a submission; a job's story saying its command ended) or a check saw a job end (the
    next wave is young), each check that saw nothing change waiting STATUS_BACKOFF times longer, up
    to `cap_s`. Times are time.monotonic()'s."""

    def __init__(self, cap_s: float = STATUS_MAX_S, first_s: float = STATUS_FIRST_S, backoff: float = STATUS_BACKOFF):
        self.cap_s, self.first_s, self.backoff = cap_s, min(first_s, cap_s), backoff
        self.interval, self.due = self.first_s, 0.0
        self.lock = threading.Lock()  # submissions come from Snakemake's thread, checks from the executor's

    def expect_change(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self.lock:
            self.interval = self.first_s
            self.due = min(self.due, now + self.first_s)

    def checked(self, now: float, changed: bool) -> None:
        """After a status check; `changed`: it saw a job end."""
        with self.lock:
            self.interval = self.first_s if changed else min(self.interval * self.backoff, self.cap_s)
            self.due = now + self.interval

    def wait_s(self, now: float) -> float:
        with self.lock:
            return max(0.0, self.due - now)

    def describe(self) -> str:
        return (f"checks {self.first_s:g} s after a submission or a job's end, then {self.backoff:g}x longer "
                f"while nothing changes, up to {self.cap_s:g} s ({STATUS_MAX_ENV})")


def status_cap_s(env: dict[str, str] | None = None) -> float:
    try:
        cap = float((os.environ if env is None else env).get(STATUS_MAX_ENV) or STATUS_MAX_S)
    except ValueError:
        return STATUS_MAX_S
    return cap if cap > 0 else STATUS_MAX_S


def adapt_status_checks(executor, env: dict[str, str] | None = None) -> StatusSchedule:
    """Put the executor's status checks on a StatusSchedule. The executor's own schedule waits 10 s
    longer after each check that sees no job end, up to 180 s, and a new job waits out whatever
    interval is running: a 6 s job was seen ~15 s late, a failed run waited out the interval before
    it ended. Here the waiting executor looks at the schedule every STATUS_SLICE_S, so a submission
    (or a job's end told by its story, Heartbeat's on_job_end) shortens the wait at once, and a run
    that is ending stops waiting."""
    schedule = StatusSchedule(status_cap_s(env))
    base = type(executor)

    class Adaptive(base):
        async def sleep(self):
            while self.wait and schedule.wait_s(time.monotonic()) > 0:
                await asyncio.sleep(min(STATUS_SLICE_S, schedule.wait_s(time.monotonic())))

        async def check_active_jobs(self, active_jobs):
            running = 0
            async for job in super().check_active_jobs(active_jobs):
                running += 1
                yield job
            schedule.checked(time.monotonic(), changed=running < len(active_jobs))

        def report_job_submission(self, job_info, *args, **kwargs):
            super().report_job_submission(job_info, *args, **kwargs)
            schedule.expect_change()

    Adaptive.__name__ = Adaptive.__qualname__ = base.__name__
    executor.__class__ = Adaptive
    return schedule


# --- the lost-Snakemake heartbeat ---------------------------------------------------------------------

class Heartbeat:
    """A file whose content changes every `every_s` while the submitting Snakemake lives, and the relay
    of the jobs' story lines (notes folder, *.story) to its console.

    Two threads: the beat's does nothing but rewrite the file, so no slow relay (a story file on a
    sluggish NFS, a blocked console) can delay a beat and make a live run's jobs stop themselves; the
    relay's reads and prints on its own. A STALE_ENV of a few beats is then safe."""

    def __init__(self, path: Path, every_s: float = HEARTBEAT_EVERY_S, relay=None, on_job_end=None):
        """`relay`: called with each new line of the jobs' stories; `on_job_end`: called (no arguments)
        when a story's line says the job's command has ended, before SLURM does."""
        self.path, self.every_s, self.relay, self.on_job_end = Path(path), every_s, relay, on_job_end
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.read_to: dict[Path, int] = {}
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.beat()
        self.threads = [self._every(self.beat, "tier1-heartbeat")]
        if relay is not None:
            self.threads.append(self._every(self.relay_stories, "tier1-relay"))

    def _every(self, action, name: str) -> threading.Thread:
        def loop():
            while not self.stopped.wait(self.every_s):
                try:
                    action()
                except OSError:
                    pass
        thread = threading.Thread(target=loop, daemon=True, name=name)
        thread.start()
        return thread

    def beat(self) -> None:
        tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
        tmp.write_text(f"{os.getpid()} {time.time():.3f}\n")
        os.replace(tmp, self.path)

    def relay_stories(self) -> None:
        if self.relay is None:
            return
        with self.lock:
            self._relay()

    def _relay(self) -> None:
        for story in sorted(self.path.parent.glob("*.story"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0):
            start = self.read_to.get(story, 0)
            try:
                with story.open() as f:
                    f.seek(start)
                    text = f.read()
            except OSError:
                continue
            whole = text[: text.rfind("\n") + 1]  # a line still being written waits for the next pass
            self.read_to[story] = start + len(whole.encode())
            for line in whole.splitlines():
                self.relay(line)
                if self.on_job_end is not None and STORY_END.search(line):
                    self.on_job_end()

    def finish(self) -> None:
        """After a run that ended well: the jobs' last lines, then the run's folder (heartbeat, notes,
        stories) removed; every job has ended, and only a failure screen reads the notes. A failed
        run keeps its folder (the notes and stories its failure screen was made from)."""
        self.stopped.set()
        for thread in self.threads:
            thread.join(timeout=5)
        self.relay_stories()
        shutil.rmtree(self.path.parent, ignore_errors=True)


def _read(path: Path) -> str | None:
    try:
        with open(path) as f:  # open() revalidates on NFS (close-to-open)
            return f.read()
    except OSError:
        return None


def stale_s(env: dict[str, str] | None = None) -> float:
    try:
        return float((os.environ if env is None else env).get(STALE_ENV) or HEARTBEAT_STALE_S)
    except ValueError:
        return HEARTBEAT_STALE_S


def wait_for_lost_heartbeat(path: Path, running, stale: float, every_s: float = 0.25) -> str | None:
    """While `running()`: watch the heartbeat; the reason once it has not changed for `stale` s."""
    last, since = _read(path), time.monotonic()
    while running():
        time.sleep(every_s)
        now = _read(path)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since > stale:
            who = (last or "").split()[0] if last else "?"
            return f"the Snakemake that submitted it (pid {who}) is gone: no heartbeat in {path} for {stale:g} s"
    return None


# --- notes and the failure screen --------------------------------------------------------------------

def write_note(label: str, log: Path, env: dict[str, str] | None = None) -> Path | None:
    """Inside a SLURM job: what this job is, for the failure screen of the run that submitted it.
    Returns the file its console story goes to, which the submitting Snakemake relays."""
    env = os.environ if env is None else env
    folder, job = env.get(NOTES_ENV), env.get("SLURM_JOB_ID")
    if not folder or not job:
        return None
    note = {"slurm_job": job, "label": label, "log": str(Path(log).resolve()), "node": env.get("SLURMD_NODENAME"),
            "allocation": allocation(env)}
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        tmp = Path(folder) / f".{job}.tmp"
        tmp.write_text(json.dumps(note))
        os.replace(tmp, Path(folder) / f"{job}.json")
    except OSError:
        return None
    return Path(folder) / f"{job}.story"


ALLOCATION_VARS = ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NNODES", "SLURM_NTASKS", "SLURM_CPUS_ON_NODE",
                   "SLURM_JOB_CPUS_PER_NODE", "SLURM_CPUS_PER_TASK", "SLURM_MEM_PER_NODE", "SLURM_JOB_GPUS",
                   "SLURM_GPUS_ON_NODE", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_PARTITION")


def allocation(env: dict[str, str] | None = None) -> dict[str, str]:
    """The job's SLURM allocation as the job sees it (empty outside a SLURM job)."""
    env = os.environ if env is None else env
    if not in_slurm_job(env):
        return {}
    out = {k: env[k] for k in ALLOCATION_VARS if k in env}
    try:
        out["cpus_allowed"] = str(len(os.sched_getaffinity(0)))
    except AttributeError:
        pass
    return out


@dataclass
class SlurmJob:
    job_id: str
    state: str
    reason: str
    comment: str  # the executor's rule_<name>[_wildcards_<w>]
    exit_code: str = ""
    label: str | None = None
    log: Path | None = None
    slurm_log: Path | None = None

    @property
    def failed(self) -> bool:
        return self.state in FAILED_STATES

    def what(self) -> str:
        if self.label:
            return self.label
        if not self.comment:  # sacct keeps a job's comment only where the cluster asks it to (job_comment)
            return "a job of this run"
        rule = self.comment.removeprefix("rule_")
        return "rule " + rule.replace("_wildcards_", " (") + (")" if "_wildcards_" in rule else "")


SETTLE_S = 10.0  # how long the end-of-run screen waits for jobs cancelled at the end to finish completing


def queued_jobs(run_uuid: str) -> list[SlurmJob]:
    """Every job of one Snakemake run (the executor names them all after its run id), by squeue."""
    proc = _run(["squeue", "--states=all", "--noheader", "--name", run_uuid, "--format=%i|%T|%r|%k"])
    jobs = []
    for line in (proc.stdout if proc and proc.returncode == 0 else "").splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 4:
            jobs.append(SlurmJob(parts[0], parts[1], parts[2], parts[3]))
    return jobs


def accounted_jobs(run_uuid: str, since: str) -> list[SlurmJob]:
    """Every job of one run as the accounting database has it (sacct, jobs started since `since`,
    an ISO time): also the jobs squeue has forgotten (MinJobAge after they ended)."""
    proc = _run(["sacct", "-X", "--noheader", "--parsable2", "--name", run_uuid, "--starttime", since,
                 "--format=JobIDRaw,State,Reason,Comment,ExitCode"])
    jobs = []
    for line in (proc.stdout if proc and proc.returncode == 0 else "").splitlines():
        parts = line.split("|")
        if len(parts) >= 5:
            jobs.append(SlurmJob(parts[0], plain_state(parts[1]), parts[2], parts[3], exit_code=parts[4]))
    return jobs


def run_jobs(run_uuid: str, settle_s: float = SETTLE_S, accounted_since: str | None = None) -> list[SlurmJob]:
    """The run's jobs as they end: a job cancelled as the run stopped is COMPLETING until SLURM has
    ended its processes (up to the cluster's KillWait), so wait up to `settle_s` for its final state.
    With `accounted_since` (the run's start, where accounting works) the jobs squeue no longer shows
    are added from sacct: on a real cluster a job that failed early in a long run is gone from squeue
    (MinJobAge, 300 s by default) by the time the run ends."""
    deadline = time.monotonic() + settle_s
    jobs = queued_jobs(run_uuid)
    while any(j.state == "COMPLETING" for j in jobs) and time.monotonic() < deadline:
        time.sleep(0.5)
        jobs = queued_jobs(run_uuid)
    for job in jobs:
        detail = _run(["scontrol", "show", "job", "-o", job.job_id])
        found = re.search(r"\bExitCode=(\S+)", detail.stdout if detail else "")
        job.exit_code = found[1] if found else ""
    if accounted_since:
        seen = {j.job_id for j in jobs}
        jobs += [j for j in accounted_jobs(run_uuid, accounted_since) if j.job_id not in seen]
    return sorted(jobs, key=lambda j: int(j.job_id) if j.job_id.isdigit() else 0)


def active(jobs: list[SlurmJob]) -> list[SlurmJob]:
    return [j for j in jobs if j.state in {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED"}]


def with_notes(jobs: list[SlurmJob], notes: Path | None, slurm_logdir: Path | None = None) -> list[SlurmJob]:
    for job in jobs:
        note = notes / f"{job.job_id}.json" if notes else None
        if note and note.exists():
            try:
                data = json.loads(note.read_text())
                job.label, job.log = data.get("label"), Path(data["log"]) if data.get("log") else None
            except (OSError, ValueError):
                pass
        if slurm_logdir and slurm_logdir.is_dir():
            job.slurm_log = next(iter(sorted(slurm_logdir.rglob(f"{job.job_id}.log"))), None)
    return jobs


def pending_reason(job: SlurmJob) -> str | None:
    """A line for a job that SLURM will never start as asked."""
    if job.state == "PENDING" and re.search(r"Resources|ReqNodeNotAvail|PartitionConfig|BadConstraints|NodeDown",
                                            job.reason) and "Priority" not in job.reason:
        return f"SLURM job {job.job_id} ({job.what()}) is pending: {job.reason}"
    return None


# --- requests against the partition -------------------------------------------------------------------

@dataclass
class Node:
    name: str
    cpus: int
    mem_mb: int
    gpus: int


def partition_nodes(partition: str | None) -> list[Node]:
    cmd = ["sinfo", "--noheader", "--Node", "--format=%N|%c|%m|%G"] + (["--partition", partition] if partition else [])
    proc = _run(cmd)
    nodes = []
    for line in (proc.stdout if proc and proc.returncode == 0 else "").splitlines():
        parts = line.strip().split("|")
        if len(parts) < 4:
            continue
        gpus = sum(int(m[1]) for m in re.finditer(r"gpu(?::[\w.]+)?:(\d+)", parts[3]))
        try:
            nodes.append(Node(parts[0], int(parts[1]), int(re.sub(r"\D", "", parts[2]) or 0), gpus))
        except ValueError:
            continue
    return nodes


def default_partition() -> str | None:
    proc = _run(["sinfo", "--noheader", "--format=%P"])
    for name in (proc.stdout if proc else "").split():
        if name.endswith("*"):
            return name[:-1]
    return None


def request_problems(requests: list[tuple[str, str | None, int, int, int]]) -> list[str]:
    """Each (job, partition, cpus, mem_mb, gpus) no node of its partition can hold, as a line."""
    problems, cache = [], {}
    for job, partition, cpus, mem_mb, gpus in requests:
        part = partition or default_partition()
        if part not in cache:
            cache[part] = partition_nodes(part)
        nodes = cache[part]
        if not nodes:
            problems.append(f"{job}: partition '{part}' has no nodes sinfo can see")
            continue
        if any(n.cpus >= cpus and n.mem_mb >= mem_mb and n.gpus >= gpus for n in nodes):
            continue
        big = max(nodes, key=lambda n: (n.gpus, n.cpus, n.mem_mb))
        asks = f"{cpus} CPUs, {mem_mb} MB" + (f", {gpus} GPU(s)" if gpus else "")
        has = f"{big.cpus} CPUs, {big.mem_mb} MB, {big.gpus} GPU(s)"
        problems.append(f"{job} asks for {asks}; the largest node of partition '{part}' ({big.name}) has {has}")
    return problems


# --- training across nodes ------------------------------------------------------------------------------

# torchrun's default port plus the job id mod 1000: two jobs on one first node get different ports
# unless their ids are a multiple of 1000 apart. Nothing reserves the port: another program holding
# it makes the rendezvous fail (the job then fails, naming the endpoint in its log).
RDZV_PORT_BASE = 29500
RDZV_PORT_SPAN = 1000


def job_fields(job_id: str) -> dict[str, str]:
    """`scontrol show job -o JOB`'s fields (NumNodes, NodeList, CPUs/Task, ...); inside a job step the
    executor has dropped the SLURM_* variables that say the same."""
    proc = _run(["scontrol", "show", "job", "-o", job_id])
    if proc is None or proc.returncode != 0:
        said = (proc.stderr or proc.stdout).strip() if proc else "no answer within 20 s"
        raise SystemExit(f"SLURM: cannot read job {job_id}'s allocation (scontrol show job: {said})")
    return dict(part.split("=", 1) for part in proc.stdout.split() if "=" in part)


def hostnames(nodelist: str) -> list[str]:
    """A SLURM node list (`node[1-3]`) as host names, in order."""
    proc = _run(["scontrol", "show", "hostnames", nodelist])
    hosts = proc.stdout.split() if proc and proc.returncode == 0 else []
    if not hosts:
        raise SystemExit(f"SLURM: cannot expand the node list {nodelist!r} (scontrol show hostnames)")
    return hosts


@dataclass
class NodePlan:
    """How M torchrun agents (the job's "nodes") are placed on a SLURM allocation."""

    job_id: str
    nnodes: int  # torchrun agents, one per node
    hosts: list[str]  # the allocation's hosts the agents run on
    cpus_per_task: int | None

    @property
    def agents_per_host(self) -> int:
        return self.nnodes // len(self.hosts)

    @property
    def rdzv_endpoint(self) -> str:
        """The first node hosts the c10d rendezvous (as torchtitan's multi-node script does)."""
        return f"{self.hosts[0]}:{RDZV_PORT_BASE + int(self.job_id) % RDZV_PORT_SPAN}"

    def srun(self, task: list[str], gpus_per_task: int = 0) -> list[str]:
        """The srun that starts `task` once per agent: one task per node, or, where the allocation has
        fewer hosts than agents, several tasks per host standing in for nodes. A task that fails ends
        the step (--kill-on-bad-exit)."""
        cmd = ["srun", f"--jobid={self.job_id}", f"--nodes={len(self.hosts)}", f"--ntasks={self.nnodes}",
               f"--ntasks-per-node={self.agents_per_host}", "--kill-on-bad-exit=1", "--export=ALL"]
        if self.cpus_per_task:
            cmd.append(f"--cpus-per-task={self.cpus_per_task}")
        if gpus_per_task:
            cmd.append(f"--gpus-per-task={gpus_per_task}")
        return cmd + task

    def describe(self) -> str:
        where = (f"{len(self.hosts)} nodes ({', '.join(self.hosts)})" if self.agents_per_host == 1 else
                 f"{self.agents_per_host} SLURM tasks per host standing in for nodes on "
                 f"{len(self.hosts)} host(s) ({', '.join(self.hosts)})")
        return (f"SLURM job {self.job_id}: {self.nnodes} torchrun agents through srun, {where}; "
                f"c10d rendezvous at {self.rdzv_endpoint}")


def node_plan(nnodes: int, env: dict[str, str] | None = None) -> NodePlan:
    """The placement of `nnodes` agents on this SLURM job's allocation (read with scontrol). An allocation
    of fewer hosts than agents runs several per host (the single-host test cluster's stand-in for nodes),
    provided they divide evenly."""
    env = os.environ if env is None else env
    job_id = env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID")
    if not job_id:
        raise SystemExit("--srun starts the nodes inside a SLURM allocation (sbatch, salloc), and this is not "
                         "one; elsewhere start `launch --nnodes M --rdzv-endpoint HOST:PORT ...` on each machine")
    fields = job_fields(job_id)
    hosts = hostnames(fields.get("NodeList", ""))[:nnodes]
    if nnodes % len(hosts):
        raise SystemExit(f"SLURM job {job_id} has {len(hosts)} node(s), which {nnodes} nodes' agents cannot "
                         f"share evenly; ask for {nnodes} nodes")
    cpus = fields.get("CPUs/Task", "")
    return NodePlan(job_id, nnodes, hosts, int(cpus) if cpus.isdigit() and int(cpus) > 0 else None)


def cancel_own_job(env: dict[str, str] | None = None) -> bool:
    """Inside a SLURM job: cancel it. SLURM then signals every process of the job at once (the
    command, its ranks, and the batch script's own Snakemake, which otherwise tears down only after
    the command has ended), and the job ends CANCELLED. Whether scancel took it."""
    job = (os.environ if env is None else env).get("SLURM_JOB_ID")
    proc = _run(["scancel", job], timeout=10) if job else None
    return proc is not None and proc.returncode == 0
