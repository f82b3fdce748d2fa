"""Faults end a run quickly and cleanly, and the rerun resumes. Snakemake runs the tiny config's
2-rank training through the rule's own command line (console story, `env`, launcher, torchrun, CPU
ranks with gloo), and the test acts on it as users and schedulers do: kill -9 of Snakemake (alone,
and with its process group), Ctrl-C (SIGINT) and SIGTERM to Snakemake, kill -9 and SIGSTOP of one
rank, the console wrapper killed. Each must end within LIMIT_S with no process left, a last screen
that says what happened, earlier results intact, and a rerun that resumes the training."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import psutil
import pytest

import workflow_runs as wr

pytestmark = pytest.mark.slow
LIMIT_S = 60
COLLECTIVE_TIMEOUT_S = 20  # the SIGSTOP case ends through it
TARGET = "results/default/train/gpus2/train_metrics.json"
CONFIG = ["--configfile", wr.TINY, "--config", "num_epochs=25", "checkpoint_every=2",
          f"collective_timeout_s={COLLECTIVE_TIMEOUT_S}"]
RUN = ["--cores", "2", TARGET, *CONFIG]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model) -> Path:
    """Data and token ids made once; each case runs the training on a copy."""
    folder = wr.workdir(tmp_path_factory.mktemp("faults") / "run", tiny_model)
    wr.snakemake(folder, "--cores", "2", "results/default/data/tokens.safetensors", *CONFIG)
    return folder


def fingerprints(folder: Path) -> dict[str, str]:
    """The checksum of every earlier result (everything the training does not write)."""
    out = {}
    for path in sorted((folder / "results/default").rglob("*")):
        rel = str(path.relative_to(folder))
        if path.is_file() and "train/gpus2" not in rel and "train_gpus2" not in rel:
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def started(prepared: Path, tmp_path: Path) -> tuple[Path, subprocess.Popen, dict[str, str]]:
    folder = wr.copy(prepared, tmp_path / "run")
    before = fingerprints(folder)
    smk = wr.start(folder, *RUN)
    wr.wait_for(folder / "results/default/train/gpus2/checkpoints/last.json", smk, folder)
    assert len(wr.ranks(folder)) == 2, [p.cmdline() for p in wr.processes_in(folder)]
    return folder, smk, before


def console_of(folder: Path) -> psutil.Process:
    return next(p for p in wr.processes_in(folder) if "tier1.runtime.console" in p.cmdline())


def ended(case: str, folder: Path, smk: subprocess.Popen, t0: float, before: dict[str, str]) -> str:
    """Waits for the end; checks time, leftovers and earlier results; returns the last screen."""
    try:
        smk.wait(timeout=LIMIT_S + 30)
    except subprocess.TimeoutExpired:
        pass
    gone = wr.seconds_until_gone(folder, t0, LIMIT_S)
    print(f"{case}: every process gone after {gone:.1f} s")
    screen = (folder / "screen.txt").read_text()
    assert gone < LIMIT_S, screen[-3000:]
    assert fingerprints(folder) == before
    assert not (folder / TARGET).exists()  # no half-written result
    assert 'File "' not in screen.split("[tier1] train, 2 rank(s): started")[-1].split("The end of")[0], screen[-3000:]
    return screen


def resumes(folder: Path) -> None:
    """The same command again (after `--unlock` when Snakemake itself was killed) finishes the training
    from its last checkpoint."""
    if (folder / ".snakemake/locks").exists() and any((folder / ".snakemake/locks").iterdir()):
        wr.snakemake(folder, "--unlock", *CONFIG)
    wr.snakemake(folder, *RUN)
    metrics = json.loads((folder / TARGET).read_text())
    assert metrics["resumed_from_step"] > 0
    assert any(m.startswith("resumed at step") for m in metrics["marks"])  # never shown as a clean time


def the_end(screen: str) -> str:
    """What the run printed after the job's own lines: the end-of-run screen."""
    return screen[screen.rindex("tier1: "):]


@pytest.mark.parametrize("group", [False, True], ids=["snakemake", "its-process-group"])
def test_kill_9_of_snakemake_ends_the_job(prepared, tmp_path, group):
    folder, smk, before = started(prepared, tmp_path)
    t0 = time.monotonic()
    if group:
        os.killpg(smk.pid, signal.SIGKILL)
    else:
        smk.send_signal(signal.SIGKILL)
    screen = ended(f"kill -9 of Snakemake{' and its process group' if group else ''}", folder, smk, t0, before)
    if not group:  # the console wrapper outlived Snakemake long enough to say why the job ended
        assert "stopped: the process that started it" in screen, screen[-2000:]
    resumes(folder)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_to_snakemake_stops_the_run_and_says_how_to_resume(prepared, tmp_path, sig):
    folder, smk, before = started(prepared, tmp_path)
    t0 = time.monotonic()
    smk.send_signal(sig)
    screen = ended(f"{sig.name} to Snakemake", folder, smk, t0, before)
    assert smk.returncode != 0
    end = the_end(screen)
    who = "you (Ctrl-C)" if sig == signal.SIGINT else "SIGTERM"
    assert f"tier1: stopped by {who}" in end, end
    assert f"snakemake {' '.join(RUN)}" in end, end  # the run's own command, to resume
    assert "Traceback" not in screen and "TypeError" not in screen, screen[-3000:]
    resumes(folder)


def test_kill_9_of_a_rank_fails_the_job_and_says_so(prepared, tmp_path):
    folder, smk, before = started(prepared, tmp_path)
    t0 = time.monotonic()
    wr.ranks(folder)[-1].send_signal(signal.SIGKILL)
    screen = ended("kill -9 of one rank", folder, smk, t0, before)
    end = the_end(screen)
    print(end)
    assert "Failed: train, 2 rank(s)" in end, end
    assert "results/default/logs/train_gpus2.log" in end and f"snakemake {' '.join(RUN)}" in end, end
    # what the kernel's out-of-memory killer does, named as such (the other rank only saw its peer go)
    assert re.search(r"Rank \d was ended by SIGKILL from outside the job, without a word of its own: most often "
                     r"by the kernel's out-of-memory killer", end), end
    resumes(folder)


def test_a_stopped_rank_fails_the_job_after_the_collective_timeout(prepared, tmp_path):
    folder, smk, before = started(prepared, tmp_path)
    stopped = wr.ranks(folder)[-1]
    t0 = time.monotonic()
    stopped.send_signal(signal.SIGSTOP)
    try:
        screen = ended("SIGSTOP of one rank", folder, smk, t0, before)
    finally:
        for p in wr.processes_in(folder):
            p.send_signal(signal.SIGCONT)
    assert re.search(r"rank \d was stopped", screen) or re.search(
        r"rank \d was stopped", (folder / "results/default/logs/train_gpus2.log").read_text()), screen[-3000:]
    assert "Failed: train, 2 rank(s)" in the_end(screen)
    resumes(folder)


def test_killing_the_console_wrapper_ends_the_job(prepared, tmp_path):
    folder, smk, before = started(prepared, tmp_path)
    t0 = time.monotonic()
    console_of(folder).send_signal(signal.SIGKILL)
    screen = ended("kill -9 of the console wrapper", folder, smk, t0, before)
    assert "Failed: train, 2 rank(s)" in the_end(screen), screen[-3000:]
    resumes(folder)


def test_every_job_runs_inside_the_console_wrapper_that_carries_its_lifeline(prepared):
    """The fault cases above hold because each rule's command starts with the console story (the
    lifeline's carrier) and each timed job holds the machine's lock: a wrapper added later in front of
    it, or a rule without it, fails here."""
    plan = wr.snakemake(prepared, "-n", "-p", "--forceall", "all", "check_gpus", "results/default/bench/compare.md",
                        "--quiet", "progress", *CONFIG[:2]).stdout
    # each job's block: its resources line, then its shell command (Snakemake's dry-run layout)
    jobs, resources = [], ""
    for line in plan.splitlines():
        if line.strip().startswith("resources:"):
            resources = line
        elif "-m tier1." in line:
            jobs.append((line.strip().removeprefix("Shell command: "), "timed=1" in resources))
            resources = ""
    assert jobs, plan[-3000:]
    assert sum(timed for _, timed in jobs) >= 8, plan[-3000:]
    for cmd, timed in jobs:
        assert re.match(r"\S*python\S* -m tier1\.runtime\.console ", cmd), cmd
        # a job that claims the run's `timed` resource holds the machine's lock too, whatever its rule
        assert (" --timed " in cmd.split(" -- ")[0]) == timed, cmd


def test_two_runs_at_once_never_time_at_the_same_moment(prepared, tmp_path):
    """Two Snakemake runs on one machine, started together: the machine's lock keeps their timed
    jobs apart, and the one that waits says for whom."""
    lock_dir = tmp_path / "locks"
    env = {**wr.ENV, "TIER1_LOCK_DIR": str(lock_dir)}
    target = "results/default/train/gpus1/train_metrics.json"
    folders = [wr.copy(prepared, tmp_path / name) for name in ("a", "b")]
    short = ["--configfile", wr.TINY, "--config", "num_epochs=2"]  # 8 steps: the wait is what is tested
    runs = [wr.start(f, "--cores", "2", target, *short, env=env) for f in folders]
    for run, folder in zip(runs, folders, strict=True):
        assert run.wait(timeout=600) == 0, (folder / "screen.txt").read_text()[-3000:]
    spans = sorted((datetime.fromisoformat(m["started_at"]), datetime.fromisoformat(m["finished_at"]))
                   for m in (json.loads((f / target).read_text()) for f in folders))
    assert spans[0][1] <= spans[1][0], spans  # the second started after the first had finished
    screens = [(f / "screen.txt").read_text() for f in folders]
    waited = [s for s in screens if "waiting for the machine (cpu): run 'default', job 'train, 1 rank(s)'" in s]
    assert len(waited) == 1, screens
    assert "the machine is free (cpu) after" in waited[0]


def test_a_failed_job_ends_the_run_with_its_story_and_what_to_do(prepared, tmp_path, tiny_model):
    """A model whose weights cannot be read passes the checks before the run (its folder is
    complete) and fails the training job: the last screen names the job, shows the end of its
    log and the command to rerun, and holds no traceback from tier1 itself."""
    folder = wr.copy(prepared, tmp_path / "run")
    broken = folder / "broken-model"
    shutil.copytree(tiny_model, broken)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    run = [*RUN, "model=broken-model"]  # one more --config value
    proc = wr.snakemake(folder, *run, check=False)
    screen = proc.stdout + proc.stderr
    assert proc.returncode != 0
    end = the_end(screen)
    print(end)
    assert "Failed: train, 2 rank(s)" in end, screen[-4000:]
    assert "The end of its log, results/default/logs/train_gpus2.log:" in end, end
    assert "SafetensorError" in end, end  # the rank's own error, not only torchrun's summary
    assert "from outside the job" not in end, end  # a rank ended by its failed peer is not an outside kill
    assert f"snakemake {' '.join(run)}" in end, end
    assert "TypeError" not in screen and "Traceback" not in end.split("What to do")[1], screen[-4000:]


@pytest.fixture()
def data(tmp_path, pairs):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs[:48]))
    return path


def why_it_failed(stderr: str) -> str:
    """A rank's own last words (C++ aborts, exceptions), which torchrun's failure summary at the
    end of stderr pushes out of a plain tail, then that tail."""
    causes = [line for line in stderr.splitlines()
              if re.search(r"terminate called|what\(\)|Error|Exception|abort", line) and "elastic" not in line]
    return "\n".join(causes[-20:]) + "\n...\n" + stderr[-1500:]


def test_two_nodes_of_two_ranks_train_what_one_node_of_four_does(tiny_model, data, tmp_path):
    """Two launchers on 127.0.0.1 joined by torchrun's c10d rendezvous, against one 4-rank launcher."""
    import torch
    from safetensors.torch import load_file

    from tier1.config import Tier1Config, stage_json

    from helpers import free_port

    cfg = stage_json(Tier1Config(model=str(tiny_model), batch_size=8, num_epochs=1, max_seq_length=32,
                                 learning_rate=1e-3, optimizer="sgd", gpu_counts=(4,)), "train")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}

    def job(out: Path, *launch: str) -> list[str]:
        return [sys.executable, "-m", "tier1.runtime.launch", *launch, "tier1.stages.train", "--config", cfg, "--data", str(data),
                "--model-out", str(out / "model"), "--metrics-out", str(out / "m.json"), "--loss-out", str(out / "loss.csv")]

    one = subprocess.run(job(tmp_path / "one", "--ranks", "4"), env=env, capture_output=True, text=True)
    assert one.returncode == 0, why_it_failed(one.stderr)
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = [subprocess.Popen(job(tmp_path / "two", "--ranks", "2", "--nnodes", "2", "--rdzv-endpoint", endpoint),
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for node in nodes:
        _, err = node.communicate(timeout=600)
        assert node.returncode == 0, why_it_failed(err)
    m = json.loads((tmp_path / "two" / "m.json").read_text())
    assert m["world_size"] == 4 and len(m["ranks"]) == 4 and m["checksums_equal"]
    a = load_file(tmp_path / "one" / "model" / "model.safetensors")
    b = load_file(tmp_path / "two" / "model" / "model.safetensors")
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-6), k


