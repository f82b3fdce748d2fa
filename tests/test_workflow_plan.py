"""What the workflow plans for a machine, by dry run: world sizes, refusals before any job."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import pytest

from helpers import REPO


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    for name in ("Snakefile", "workflow", "config", "profiles", "envs"):
        (root / name).symlink_to(REPO / name)
    return root


def plan(workdir, *args, gpus: int | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TIER1_GPUS"}
    if gpus is not None:
        env["TIER1_GPUS"] = str(gpus)  # a machine with this many GPUs, as far as planning goes
    # --quiet progress: the default profile quiets the per-job blocks, shell commands included
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "all", "--quiet", "progress", *args], cwd=workdir,
                          capture_output=True, text=True, env=env)


def trained(proc) -> list[int]:
    return sorted({int(n) for n in re.findall(r"results/default/train/gpus(\d+)/train_metrics\.json", proc.stdout)})


def evaluated(proc) -> list[int]:
    return sorted({int(n) for n in re.findall(r"results/default/eval/base/ws(\d+)/metrics\.json", proc.stdout)})


@pytest.mark.parametrize("gpus, sizes", [(None, [1, 2, 4]), (1, [1]), (2, [1, 2]), (4, [1, 2, 4]), (8, [1, 2, 4, 8])])
def test_auto_plans_the_world_sizes_of_the_machine(workdir, gpus, sizes):
    proc = plan(workdir, gpus=gpus)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert trained(proc) == sizes and evaluated(proc) == sizes


def test_more_ranks_than_gpus_is_refused_before_any_job(workdir):
    proc = plan(workdir, "--config", "gpu_counts=[1,2,4]", gpus=2)
    assert proc.returncode != 0
    assert "gpu_counts: world size 4 needs 4 GPUs, but jobs here see 2" in proc.stdout + proc.stderr
    assert "Job stats" not in proc.stdout


@pytest.mark.parametrize("given", ["gpu_counts=[1,2]", "gpu_counts=1,2"])
def test_world_sizes_from_the_command_line(workdir, given):
    proc = plan(workdir, "--config", given)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert trained(proc) == [1, 2] and evaluated(proc) == [1, 2]


def test_use_multi_gpu_off_is_one_rank_everywhere(workdir):
    proc = plan(workdir, "--config", "use_multi_gpu=false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert trained(proc) == [1] and evaluated(proc) == [1]
    assert "train_dropout_reference" not in proc.stdout  # nothing to compare with


def test_the_slurm_profile_asks_each_job_for_its_gpus(workdir):
    pytest.importorskip("snakemake_executor_plugin_slurm")
    proc = plan(workdir, "--profile", "profiles/slurm", gpus=4)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert trained(proc) == [1, 2, 4]
    jobs = proc.stdout.split("\n\n")
    train4 = next(j for j in jobs if "results/default/train/gpus4/train_metrics.json" in j and "rule train:" in j)
    assert "gpu=4" in train4 and "runtime=240" in train4


def test_a_damaged_token_cache_is_set_aside_before_planning(workdir):
    tokens = workdir / "results" / "default" / "data" / "tokens.safetensors"
    tokens.parent.mkdir(parents=True, exist_ok=True)
    tokens.write_bytes(b"\x00" * 64)  # truncated or overwritten: not a safetensors file
    proc = plan(workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "tokens.safetensors: not a readable safetensors file" in proc.stderr
    assert not tokens.exists() and tokens.with_name("tokens.safetensors.corrupt").exists()
    assert "rule tokenize" in proc.stdout  # remade before anything reads it


def rule_jobs(proc, rule: str) -> list[str]:
    """The output paths of every job of `rule` in a dry run's plan."""
    return sorted(re.findall(rf"rule {rule}:\n    output: (\S+)", proc.stdout))


def report_command(proc) -> str:
    return next(line for line in proc.stdout.splitlines() if "-m tier1.report " in line)


def report_index(proc) -> dict:
    """The report's inputs by name, as its command line hands them over (--records)."""
    args = shlex.split(report_command(proc))
    return json.loads(args[args.index("--records") + 1])


@pytest.mark.parametrize("gpus, comm", [(None, [2, 4]), (2, [2]), (8, [2, 4, 8])])
def test_preflight_once_and_commbench_for_every_world_size_above_one(workdir, gpus, comm):
    proc = plan(workdir, gpus=gpus)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert rule_jobs(proc, "preflight") == ["results/default/preflight.json"]
    assert rule_jobs(proc, "commbench") == sorted(f"results/default/comm/ws{n}.json" for n in comm)
    sizes = " ".join(str(n) for n in trained(proc))
    assert f"-m tier1.stages.preflight --world-sizes {sizes} --out results/default/preflight.json" in proc.stdout
    index = report_index(proc)
    assert index["records"]["preflight"] == "results/default/preflight.json"
    assert index["records"]["comm"] == {str(n): f"results/default/comm/ws{n}.json" for n in comm}
    assert all(index["jobs"][f"commbench_ws{n}"]["windows"] == [f"comm:{n}"] for n in comm)
    # timed like training: one at a time, and on a cluster with the GPUs of its world size
    jobs = proc.stdout.split("\n\n")
    for n in comm:
        job = next(j for j in jobs if f"output: results/default/comm/ws{n}.json" in j)
        assert "timed=1" in job and f"gpu={n if gpus else 0}" in job
        assert f"--ranks {n} " in job and "tier1.stages.commbench" in job


def test_the_report_reads_the_record_of_every_stage_it_times(workdir):
    proc = plan(workdir, "--config", "use_multi_gpu=false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    # tokens.safetensors is not JSON: the tokenize stage writes its work window beside it
    assert "--out results/default/data/tokens.safetensors --record-out results/default/data/tokens.json" in proc.stdout
    index = report_index(proc)
    records, jobs = index["records"], index["jobs"]
    assert records["manifest"] == "results/default/data/manifest.json"
    assert records["tokens"] == "results/default/data/tokens.json"
    assert records["preflight"] == "results/default/preflight.json"
    assert records["probe"] == {"1": "results/default/probe/gpus1.json"}
    # every job the report times names its benchmark file and the records of its windows, and each
    # of those records is one the report is given
    assert list(jobs) == ["preflight", "prepare", "tokenize", "probe", "train_gpus1", "eval_ws1"]
    for job in jobs.values():
        assert job["benchmark"].startswith("results/default/benchmarks/")
        for ref in job["windows"]:
            kind, _, n = ref.partition(":")
            assert kind in records and (not n or n in records[kind]), ref


def test_one_rank_runs_the_preflight_but_no_commbench(workdir):
    proc = plan(workdir, "--config", "use_multi_gpu=false")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert rule_jobs(proc, "preflight") == ["results/default/preflight.json"]
    assert rule_jobs(proc, "commbench") == []
    assert report_index(proc)["records"]["comm"] == {}


def test_a_named_run_plans_every_output_in_its_own_folder(workdir):
    proc = plan(workdir, "--configfile", "config/quick.yaml")
    assert proc.returncode == 0, proc.stderr
    outputs = re.findall(r"^\s+output: (.+)$", proc.stdout, flags=re.M)
    paths = [p.strip() for line in outputs for p in line.split(",")]
    assert paths and all(p.startswith("results/quick/") for p in paths), paths
    assert "results/default/" not in proc.stdout
