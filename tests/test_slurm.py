"""The cluster path on a real SLURM: the single-host cluster of scripts/slurm_cluster.sh (munge,
slurmctld, slurmd on 127.0.0.1, four fake GPU devices, no accounting), the tiny pipeline through
`--profile profiles/slurm` as a user runs it, and the faults a cluster adds (scancel of a job,
SIGTERM and kill -9 of the Snakemake that submitted it). test_slurm_accounting.py runs the tiny
pipeline and the scancel case again on the same cluster with accounting (job status from sacct).

The cluster: one of the module's kind that is up (partition `tier1`) is used as it is; with
TIER1_SLURM_CLUSTER=start (as root; CI's .ci/run does this) the module starts one, stopping the
script's cluster of the other kind first, and stops it at the end; otherwise every test here is
skipped, saying so. The node has this machine's cores; its memory is declared at 128 GB (no
cgroups: SLURM accounts it, nothing enforces it) so that the profile's own memory requests fit, and
the jobs ask for 2 CPUs (a 2-core node refuses the profile's 8 before submitting: tested too).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

import workflow_runs as wr
from tier1.runtime import slurm

from helpers import REPO

pytestmark = [pytest.mark.slow, pytest.mark.slurm]
SCRIPT = REPO / "scripts" / "slurm_cluster.sh"
PARTITION = "tier1"
SLURM = ["--profile", "profiles/slurm", "--default-resources", f"slurm_partition={PARTITION}", "runtime=30", "mem_mb=4000",
         "cpus_per_task=2"]
TARGET = "results/default/train/gpus2/train_metrics.json"
FAULT_CONFIG = ["--configfile", wr.TINY, "--config", "num_epochs=25", "checkpoint_every=2"]
LIMIT_S = 10  # after the run ends: no process of it and no SLURM job of it left
# tier1's own defaults (heartbeat staleness, status schedule), whatever the caller's environment says
ENV = {k: v for k, v in wr.ENV.items() if k not in {slurm.STALE_ENV, slurm.STATUS_MAX_ENV}}


def _sh(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)


def cluster_is_up() -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        proc = _sh("sinfo", "--noheader", "--partition", PARTITION, "--format=%t")
    except (OSError, subprocess.SubprocessError):
        return False
    return proc.returncode == 0 and any(s.strip() in {"idle", "mix", "alloc"} for s in proc.stdout.splitlines())


def cluster_of(accounting: bool):
    """A module's cluster, of one kind: with accounting (sacct answers) or without."""
    kind = "with accounting" if accounting else "without accounting"
    up = cluster_is_up()
    if up and slurm.accounting_works()[0] == accounting:
        yield
        return
    start = ["start", "--accounting"] if accounting else ["start"]
    if os.environ.get("TIER1_SLURM_CLUSTER") != "start":
        pytest.skip(f"no SLURM cluster {kind} is up (partition 'tier1'): start one with `sudo scripts/slurm_cluster.sh "
                    f"{' '.join(start)}` or let the tests start it: TIER1_SLURM_CLUSTER=start (as root; .ci/run does)")
    if os.geteuid() != 0:
        pytest.skip("TIER1_SLURM_CLUSTER=start needs root (munge, slurmctld, slurmd)")
    if up:  # the other kind: only the script's own cluster can be stopped (by its pid files)
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, text=True, timeout=120)
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPT), *start, "--mem-mb", "131072"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"cluster {kind} started in {time.monotonic() - t0:.1f} s: {proc.stderr.strip().splitlines()[-1]}")
    try:
        yield
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def cluster():
    yield from cluster_of(accounting=False)


MADE: dict[str, object] = {}  # what both kinds' modules start from, made once a session (a fixture is per module)


def made_once(key: str, make):
    if key not in MADE:
        MADE[key] = make()
    return MADE[key]


@pytest.fixture(scope="module")
def local_tiny(tmp_path_factory, tiny_model) -> tuple[Path, float]:
    """The tiny pipeline run locally, and its seconds: what every run through SLURM must equal."""
    def make():
        folder = wr.workdir(tmp_path_factory.mktemp("slurm-local") / "local", tiny_model)
        t0 = time.monotonic()
        wr.snakemake(folder, "--cores", "2", "all", "--configfile", wr.TINY)
        return folder, time.monotonic() - t0
    return made_once("local-tiny", make)


def run_id(screen: str) -> str:
    """The executor's id of a run: every SLURM job of it carries it as its name."""
    found = re.search(r"SLURM run ID: (\S+)", screen)
    assert found, screen[-3000:]
    return found[1]


def jobs_of(run: str) -> list[dict]:
    """Every SLURM job of a run, read back from squeue (MinJobAge keeps finished ones there)."""
    proc = _sh("squeue", "--states=all", "--noheader", "--name", run, "--format=%i|%T|%r|%k|%C|%b")
    rows = [line.split("|") for line in proc.stdout.splitlines() if line.strip()]
    return [{"id": r[0], "state": r[1], "reason": r[2], "comment": r[3], "cpus": r[4], "gres": r[5]} for r in rows]


def accounted(run: str) -> dict[str, str]:
    """Each job of a run and its state, as the accounting database has them (sacct)."""
    proc = _sh("sacct", "-X", "--parsable2", "--noheader", "--name", run, "--format=JobIDRaw,State")
    return dict(line.split("|", 1) for line in proc.stdout.splitlines() if "|" in line)


def left_running(run: str) -> list[dict]:
    return [j for j in jobs_of(run) if j["state"] in {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING"}]


def notes_folder(folder: Path, run: str) -> Path:
    return folder / ".snakemake/tier1-slurm" / run


def seconds_in_jobs(run: str) -> tuple[float, float]:
    """The run's jobs' own time from SLURM's start and end times (1 s resolution): the wall time in
    which any of them ran, and the sum of their times."""
    proc = _sh("squeue", "--states=all", "--noheader", "--name", run, "--format=%S|%e")
    spans = sorted(tuple(time.mktime(time.strptime(t, "%Y-%m-%dT%H:%M:%S")) for t in line.strip().split("|"))
                   for line in proc.stdout.splitlines() if line.strip())
    wall, reach = 0.0, float("-inf")
    for start, end in spans:
        wall += max(0.0, end - max(start, reach))
        reach = max(reach, end)
    return wall, sum(end - start for start, end in spans)


def scalar(path: Path, *keys: str):
    data = json.loads(path.read_text())
    for key in keys:
        data = data[key]
    return data


def test_the_cluster_has_the_node_and_gpus_it_was_asked_for(cluster):
    proc = _sh("sinfo", "--noheader", "--Node", "--partition", PARTITION, "--format=%t|%c|%G")
    state, cpus, gres = proc.stdout.split()[0].split("|")
    assert state in {"idle", "mix", "alloc"} and int(cpus) >= 1 and "gpu:4" in gres, proc.stdout


def test_a_request_no_node_can_hold_is_refused_before_any_job(cluster, tmp_path, tiny_model):
    folder = wr.workdir(tmp_path / "run", tiny_model)
    cpus = int(_sh("sinfo", "--noheader", "--partition", PARTITION, "--format=%c").stdout.split()[0])
    proc = wr.snakemake(folder, "all", "--profile", "profiles/slurm", "--default-resources", f"slurm_partition={PARTITION}",
                        f"cpus_per_task={cpus + 1}", "--configfile", wr.TINY, check=False, env=ENV)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "SLURM: no node can run these jobs as asked" in out, out[-3000:]
    assert f"train n=2 asks for {cpus + 1} CPUs" in out and f"partition '{PARTITION}'" in out, out[-3000:]
    assert not jobs_of(run_id(out)), "nothing was submitted"


def test_the_tiny_pipeline_through_slurm_equals_the_local_run(cluster, tmp_path, tiny_model, local_tiny):
    screen = tiny_pipeline_through_slurm(tmp_path, tiny_model, local_tiny)
    # no hang without accounting: the status check says what it uses
    assert "SLURM: job status from squeue: this cluster keeps no accounting" in screen, screen[-3000:]


def tiny_pipeline_through_slurm(tmp_path: Path, tiny_model: Path, local_tiny: tuple[Path, float]) -> str:
    """The tiny pipeline through the profile, checked against the local run; its screen."""
    local, local_s = local_tiny
    remote = wr.workdir(tmp_path / "slurm", tiny_model)
    t0 = time.monotonic()
    proc = wr.snakemake(remote, "all", *SLURM, "--configfile", wr.TINY, env=ENV)
    slurm_s = time.monotonic() - t0
    screen = proc.stdout + proc.stderr
    run = run_id(screen)
    in_jobs, summed = seconds_in_jobs(run)
    commands = sum(float(row.split("\t")[0]) for tsv in (remote / "results/default/benchmarks").glob("*.tsv")
                   for row in tsv.read_text().splitlines()[1:])
    print(f"tiny pipeline: local {local_s:.0f} s, through SLURM {slurm_s:.0f} s; in SLURM jobs {in_jobs:.0f} s "
          f"(sum {summed:.0f} s), in the rules' commands {commands:.0f} s; 2 x local + jobs' own = "
          f"{2 * local_s + in_jobs:.0f} s (SLURM's job times), {2 * local_s + commands:.0f} s (the commands' times)")
    # every rule a SLURM job (but `all` and the CPU probe, which run in the workflow's own process)
    jobs = jobs_of(run)
    rules = {re.sub(r"_wildcards_.*", "", j["comment"]).removeprefix("rule_") for j in jobs}
    assert rules == {"preflight", "prepare", "tokenize", "commbench", "rank_compute", "train", "train_dropout_reference",
                     "evaluate", "report"}, jobs
    assert all(j["state"] == "COMPLETED" for j in jobs), jobs
    assert len(jobs) == 11, jobs
    # the story of each job on the submitting console, as locally
    assert screen.count("[tier1] ") >= 2 * len(jobs), screen[-3000:]
    # the same losses, nDCG@10 and verdicts as the local run
    for n in (1, 2):
        assert (remote / f"results/default/train/gpus{n}/loss.csv").read_text() == \
            (local / f"results/default/train/gpus{n}/loss.csv").read_text()
        metrics = f"results/default/eval/gpus{n}/ws{n}/metrics.json"
        assert scalar(remote / metrics, "metrics") == scalar(local / metrics, "metrics")

    def verdicts(folder):
        # the verdicts on what was computed; "vs prediction" judges measured times, which differ
        # from run to run (on this shared CPU one run's may pass where another's fails)
        md = (folder / "results/default/report/performance.md").read_text()
        return re.findall(r"\*\*(scaling|same model|all ranks worked): (\w+)", md)

    assert verdicts(remote) == verdicts(local) and ("same model", "PASS") in verdicts(remote)
    # the run's notes folder (heartbeat, notes, stories) is gone after a run that ended well
    assert not notes_folder(remote, run).exists(), list(notes_folder(remote, run).iterdir())
    # each job's allocation as the job saw it, in the stage's own record: the CPUs its ranks use, one node
    record = json.loads((remote / "results/default/train/gpus2/train_metrics.json").read_text())
    train2 = record["hardware"]["slurm_allocation"]
    assert train2["SLURM_CPUS_PER_TASK"] == "2" and train2["cpus_allowed"] == "2" and train2["SLURM_NNODES"] == "1", train2
    assert "slurm_allocation" not in json.loads((local / "results/default/train/gpus2/train_metrics.json").read_text())["hardware"]
    # timed jobs apart: no two training windows overlap (the `timed` slot, --exclusive and the machine lock)
    windows = sorted((scalar(remote / f"results/default/train/{d}/train_metrics.json", "started_at"),
                      scalar(remote / f"results/default/train/{d}/train_metrics.json", "finished_at"))
                     for d in ("gpus1", "gpus2", "reference_gpus1"))
    assert all(a[1] <= b[0] for a, b in zip(windows, windows[1:])), windows
    return screen


def test_training_across_two_nodes_under_srun_equals_the_one_node_run(cluster, tmp_path, tiny_model):
    # nodes: 2 under SLURM: one job of 2 nodes x 1 rank, the job's command starting one torchrun agent per
    # node through srun, the c10d rendezvous on the allocation's first node. This cluster has one node,
    # so the job asks for it alone (--set-resources train:nodes=1) and srun's two tasks stand in for
    # the two nodes, each a torchrun agent of its own, joined by the rendezvous as on two machines.
    # Against the same training on one node (2 ranks under one torchrun, locally); the tiny model has
    # dropout off, so the runs are the same computation split differently.
    data = wr.workdir(tmp_path / "data", tiny_model)
    wr.snakemake(data, "--cores", "2", "results/default/data/tokens.safetensors", "--configfile", wr.TINY)
    one = wr.copy(data, tmp_path / "one-node")
    t0 = time.monotonic()
    wr.snakemake(one, "--cores", "2", TARGET, "--configfile", wr.TINY, "--config", "num_epochs=3")
    one_s = time.monotonic() - t0
    two = wr.copy(data, tmp_path / "two-nodes")
    t0 = time.monotonic()
    proc = wr.snakemake(two, TARGET, *SLURM, "--set-resources", "train:nodes=1", "train:cpus_per_task=1",
                        "--configfile", wr.TINY, "--config", "num_epochs=3", "nodes=2", env=ENV)
    two_s = time.monotonic() - t0
    print(f"training of 2 ranks: on one node {one_s:.0f} s (local), across 2 nodes through SLURM {two_s:.0f} s")
    screen = proc.stdout + proc.stderr
    assert "[tier1] train, 2 rank(s) across 2 nodes: done" in screen, screen[-3000:]
    # one SLURM job: 2 tasks (one per node) of 1 CPU each, on the one host
    job = next(j for j in jobs_of(run_id(screen)) if j["comment"] == "rule_train_wildcards_2")
    assert job["state"] == "COMPLETED" and job["cpus"] == "2", job
    log = (two / "results/default/logs/train_gpus2.log").read_text()
    assert re.search(r"SLURM job \d+: 2 torchrun agents through srun, 2 SLURM tasks per host standing in for nodes "
                     r"on 1 host\(s\) \(\S+\); c10d rendezvous at \S+:\d+", log), log[-2000:]

    def losses(folder):
        rows = (folder / "results/default/train/gpus2/loss.csv").read_text().splitlines()[1:]
        return [float(row.split(",")[3]) for row in rows]

    one_loss, two_loss = losses(one), losses(two)
    worst = max(abs(a - b) / abs(a) for a, b in zip(one_loss, two_loss))
    print(f"per-step loss, 2 nodes x 1 rank against 1 node x 2 ranks: {len(one_loss)} steps, largest relative "
          f"difference {worst:.1e}")
    assert len(one_loss) == len(two_loss) > 0 and worst <= 1e-6, (one_loss, two_loss)
    record = json.loads((two / TARGET).read_text())
    assert record["checksums_equal"] and [r["rank"] for r in record["ranks"]] == [0, 1]
    nodes = record["hardware"]["nodes"]
    assert nodes["count"] == 2 and nodes["ranks_per_node"] == 1 and nodes["launched_by"] == "SLURM tasks", nodes
    assert nodes["summary"].startswith("2 nodes (SLURM tasks standing in for nodes on one host") and \
        "gloo over loopback" in nodes["summary"], nodes
    assert "nodes" not in json.loads((one / TARGET).read_text())["hardware"]


@pytest.fixture(scope="module")
def prepared(cluster, tmp_path_factory, tiny_model) -> Path:
    """Data and token ids made once (locally); each fault case trains through SLURM on a copy."""
    def make():
        folder = wr.workdir(tmp_path_factory.mktemp("slurm-faults") / "run", tiny_model)
        wr.snakemake(folder, "--cores", "2", "results/default/data/tokens.safetensors", *FAULT_CONFIG)
        return folder
    return made_once("prepared", make)


def started(prepared: Path, tmp_path: Path, config: list[str] = FAULT_CONFIG):
    folder = wr.copy(prepared, tmp_path / "run")
    smk = wr.start(folder, TARGET, *SLURM, *config, env=ENV)
    wr.wait_for(folder / "results/default/train/gpus2/checkpoints/last.json", smk, folder, limit_s=180)
    screen = (folder / "screen.txt").read_text()
    run = run_id(screen)
    job = next(j for j in jobs_of(run) if j["comment"] == "rule_train_wildcards_2")
    return folder, smk, run, job


def ended(folder: Path, smk: subprocess.Popen, run: str, t0: float | None = None) -> str:
    """After the run's end (or t0): within LIMIT_S no process of the run and no SLURM job of it."""
    if t0 is None:
        try:
            smk.wait(timeout=120)
        except subprocess.TimeoutExpired:
            smk.kill()  # its jobs stop themselves once its heartbeat stops
            pytest.fail("the run did not end within 120 s of its job's end: " + (folder / "screen.txt").read_text()[-3000:])
        t0 = time.monotonic()
    while (wr.processes_in(folder) or left_running(run)) and time.monotonic() - t0 < LIMIT_S + 60:
        time.sleep(0.2)
    gone = time.monotonic() - t0
    screen = (folder / "screen.txt").read_text()
    print(f"every process and SLURM job of the run gone {gone:.1f} s after the run ended")
    assert gone < LIMIT_S, (left_running(run), [p.cmdline() for p in wr.processes_in(folder)], screen[-3000:])
    assert not (folder / TARGET).exists()
    return screen


def resumes(folder: Path, config: list[str] = FAULT_CONFIG) -> None:
    if (folder / ".snakemake/locks").exists() and any((folder / ".snakemake/locks").iterdir()):
        wr.snakemake(folder, "--unlock", *SLURM, *config, env=ENV)
    wr.snakemake(folder, TARGET, *SLURM, *config, env=ENV)
    metrics = json.loads((folder / TARGET).read_text())
    assert metrics["resumed_from_step"] > 0
    assert any(m.startswith("resumed at step") for m in metrics["marks"])


def the_end(screen: str) -> str:
    return screen[screen.rindex("tier1: "):]


def test_scancel_of_a_training_job_is_named_and_the_rerun_resumes(prepared, tmp_path):
    resumes(scancel_is_named(prepared, tmp_path))


def scancel_is_named(prepared: Path, tmp_path: Path) -> Path:
    """A training job cancelled under its run: the run ends and its failure screen names the job."""
    folder, smk, run, job = started(prepared, tmp_path)
    _sh("scancel", job["id"])
    end = the_end(ended(folder, smk, run))
    assert f"Failed: train, 2 rank(s) (SLURM job {job['id']}: CANCELLED" in end, end
    assert "results/default/logs/train_gpus2.log" in end, end
    assert (notes_folder(folder, run) / f"{job['id']}.json").exists(), "a failed run keeps its notes"
    return folder


def test_sigterm_to_snakemake_cancels_its_slurm_jobs(prepared, tmp_path):
    # (Ctrl-C takes the same path: SIGTERM is turned into it under a cluster executor)
    folder, smk, run, job = started(prepared, tmp_path)
    smk.send_signal(signal.SIGTERM)
    end = the_end(ended(folder, smk, run))
    assert "tier1: stopped by SIGTERM" in end, end
    assert f"SLURM: job {job['id']} (train, 2 rank(s)) cancelled" in end, end
    resumes(folder)


def test_kill_9_of_snakemake_ends_its_slurm_jobs(prepared, tmp_path):
    # a training long enough to outlast the heartbeat's grace; the run ends at the kill, and within LIMIT_S
    # of it (the default staleness, then the job's own stop) nothing of it is left
    config = [*FAULT_CONFIG, "num_epochs=150"]
    folder, smk, run, job = started(prepared, tmp_path, config)
    smk.send_signal(signal.SIGKILL)
    ended(folder, smk, run, time.monotonic())
    state = next(j for j in jobs_of(run) if j["id"] == job["id"])
    assert state["state"] in {"FAILED", "CANCELLED"}, state
    log = (folder / "results/default/logs/train_gpus2.log").read_text()
    assert "stopped" in log or "SIGTERM" in log, log[-2000:]
    resumes(folder, config)


def test_a_job_past_its_time_limit_is_named_and_the_rerun_resumes(prepared, tmp_path):
    # a 1-minute limit (SLURM's smallest) and a training far longer than that
    config = [*FAULT_CONFIG, "num_epochs=3000", "checkpoint_every=20"]
    limit = ["--set-resources", "train:runtime=1"]
    folder, smk, run, job = started(prepared, tmp_path, [*config, *limit])
    end = the_end(ended(folder, smk, run))
    assert f"Failed: train, 2 rank(s) (SLURM job {job['id']}: TIMEOUT, reason TimeLimit" in end, end
    # the rerun goes on from the last checkpoint (and is stopped there: the rest would take minutes)
    (folder / "screen.txt").rename(folder / "first.txt")
    smk = wr.start(folder, TARGET, *SLURM, *config, env=ENV)
    log = folder / "results/default/logs/train_gpus2.log"
    deadline = time.monotonic() + 120
    while not (log.exists() and "resuming repeat" in log.read_text()) and time.monotonic() < deadline:
        assert smk.poll() is None, (folder / "screen.txt").read_text()[-3000:]
        time.sleep(0.5)
    assert re.search(r"resuming repeat \d+ from step [1-9]", log.read_text()), log.read_text()[-2000:]
    smk.send_signal(signal.SIGTERM)
    ended(folder, smk, run_id((folder / "screen.txt").read_text()))
