"""Faults end a job quickly and cleanly, and the rerun resumes: a killed launcher, a killed rank,
a stopped (hung) rank. Real torchrun jobs on CPU ranks with gloo."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow
LIMIT_S = 60


def start(tiny_model, data: Path, out: Path, timeout_s: int = 45) -> subprocess.Popen:
    from tier1.config import Tier1Config, stage_json

    cfg = Tier1Config(model=str(tiny_model), batch_size=8, num_epochs=40, max_seq_length=32,
                      learning_rate=1e-3, checkpoint_every=2, gpu_counts=(2,))
    env = {**os.environ, "TIER1_COLLECTIVE_TIMEOUT_S": str(timeout_s), "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "tier1.launch", "--ranks", "2", "tier1.train", "--config", stage_json(cfg, "train"),
           "--data", str(data), "--model-out", str(out / "model"), "--metrics-out", str(out / "train_metrics.json"),
           "--loss-out", str(out / "loss.csv")]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=open(out.parent / f"{out.name}.log", "w"),
                            start_new_session=True)


def ranks_of(marker: Path) -> list[psutil.Process]:
    """Every process whose command line names this run's output folder (the launcher and ranks)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(marker) in part for part in p.info["cmdline"] or []):
                found.append(p)
        except psutil.Error:
            pass
    return found


def wait_for_checkpoint(out: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "last.json").exists():
        assert proc.poll() is None, (out.parent / f"{out.name}.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 4 minutes"
        time.sleep(0.5)
    time.sleep(1.0)


def seconds_until_gone(out: Path) -> float:
    t0 = time.monotonic()
    while ranks_of(out):
        if time.monotonic() - t0 > LIMIT_S + 30:
            for p in ranks_of(out):
                p.kill()
            break
        time.sleep(0.25)
    return time.monotonic() - t0


@pytest.fixture()
def data(tmp_path, pairs):
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs[:48]))
    return path


def resumes(tiny_model, data, out) -> dict:
    proc = start(tiny_model, data, out)
    assert proc.wait(timeout=600) == 0, (out.parent / f"{out.name}.log").read_text()[-3000:]
    metrics = json.loads((out / "train_metrics.json").read_text())
    assert metrics["resumed_from_step"] > 0
    assert any(m.startswith("resumed at step") for m in metrics["marks"])  # never shown as a clean time
    return metrics


def rank_processes(launcher: subprocess.Popen) -> list[psutil.Process]:
    return [c for c in psutil.Process(launcher.pid).children(recursive=True) if "tier1.train" in " ".join(c.cmdline())]


def test_killing_the_launcher_ends_every_rank(tiny_model, data, tmp_path):
    out = tmp_path / "run"
    proc = start(tiny_model, data, out)
    wait_for_checkpoint(out, proc)
    assert len(rank_processes(proc)) == 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    gone = seconds_until_gone(out)
    print(f"launcher killed: every rank gone after {gone:.1f} s")
    assert gone < LIMIT_S
    resumes(tiny_model, data, out)


def test_killing_a_rank_ends_the_job(tiny_model, data, tmp_path):
    out = tmp_path / "run"
    proc = start(tiny_model, data, out)
    wait_for_checkpoint(out, proc)
    t0 = time.monotonic()
    rank_processes(proc)[-1].send_signal(signal.SIGKILL)
    assert proc.wait(timeout=LIMIT_S) != 0
    seconds_until_gone(out)
    gone = time.monotonic() - t0
    print(f"rank killed: job ended and every process gone after {gone:.1f} s")
    assert gone < LIMIT_S
    resumes(tiny_model, data, out)


def test_a_stopped_rank_ends_the_job_after_the_collective_timeout(tiny_model, data, tmp_path):
    from tier1.distributed import DEFAULT_COLLECTIVE_TIMEOUT_S

    out = tmp_path / "run"
    proc = start(tiny_model, data, out, timeout_s=int(DEFAULT_COLLECTIVE_TIMEOUT_S))  # the default must do
    wait_for_checkpoint(out, proc)
    stopped = rank_processes(proc)[-1]
    t0 = time.monotonic()
    stopped.send_signal(signal.SIGSTOP)
    try:
        assert proc.wait(timeout=LIMIT_S) != 0
        print(f"rank stopped (default collective timeout): job ended after {time.monotonic() - t0:.1f} s")
        assert time.monotonic() - t0 < LIMIT_S
    finally:
        for p in ranks_of(out):
            p.send_signal(signal.SIGCONT)
    assert seconds_until_gone(out) < LIMIT_S
    log = (out.parent / f"{out.name}.log").read_text()
    assert "timed out" in log.lower() or "timeout" in log.lower(), log[-3000:]
    assert re.search(r"rank \d was stopped", log), log[-3000:]  # the message names the hung rank
    resumes(tiny_model, data, out)


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
        return [sys.executable, "-m", "tier1.launch", *launch, "tier1.train", "--config", cfg, "--data", str(data),
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


def test_killing_the_owner_past_the_job_shell_ends_every_rank(tiny_model, data, tmp_path):
    """Snakemake runs a job as `bash -c '...'`, and that shell outlives a killed Snakemake: the
    launcher's watchdog must see the owner go and end the job."""
    from tier1.config import Tier1Config, stage_json

    out = tmp_path / "run"
    cfg = stage_json(Tier1Config(model=str(tiny_model), batch_size=8, num_epochs=40, max_seq_length=32,
                                 learning_rate=1e-3, checkpoint_every=2, gpu_counts=(2,)), "train")
    job = (f"set -euo pipefail; CUDA_VISIBLE_DEVICES= {sys.executable} -m tier1.launch --ranks 2 tier1.train "
           f"--config '{cfg}' --data {data} --model-out {out}/model --metrics-out {out}/train_metrics.json "
           f"--loss-out {out}/loss.csv > {tmp_path}/run.log 2>&1")
    owner = subprocess.Popen([sys.executable, "-c", f"import subprocess, time; subprocess.Popen(['bash', '-c', {job!r}]); "
                              "time.sleep(600)"])
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "last.json").exists():
        assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()[-3000:]
        time.sleep(0.5)
    assert len([p for p in ranks_of(out) if "tier1.train" in " ".join(p.cmdline())]) >= 2
    owner.kill()
    owner.wait()
    gone = seconds_until_gone(out)
    print(f"owner (Snakemake's stand-in) killed: every rank gone after {gone:.1f} s")
    assert gone < LIMIT_S
