"""The one-GPU check's script, generated from the workflow itself (here, where Snakemake is).

    python -m tier1.tools.gpu_plan --out .gpu_bundle/gpu_check.sh --model .gpu_bundle/model   # the stages
    python -m tier1.tools.gpu_plan --out .gpu_bundle/gpu_bench.sh --model .gpu_bundle/model --part bench

The GPU machine has no Snakemake, so the check cannot ask the workflow for its jobs there. Here, a
dry run of each of the check's runs with the GPU count declared (`TIER1_GPUS=N snakemake -n -p
--forceall TARGETS`) prints every job's rule, inputs, outputs, log, benchmark file and shell
command, exactly as Snakemake would run them on that machine; this module puts those jobs in
dependency order (the check's most wanted first, so a cut-off loses the rest) and writes them into
a bash script. No stage command line is written here: each comes from the rules. The script runs
with plain bash from the repository root; every job's files land in the standard layout
(tier1.layout), in each run's own folder, where tier1.tools.gpu_summary reads them.

What the script adds around each job is what Snakemake would have done: it skips a job whose
inputs are missing (an earlier job failed), runs it under a time limit (and the whole check's
GPU_CHECK_LIMIT_S), writes its benchmark file (wall seconds, as Snakemake's `s` column) and one
line per job to the run's steps file (job, seconds, exit status). The workflow's own environment
(the run's name and config hash, PYTHONPATH, offline) is exported first; the Python that made the
plan is replaced by $PY (python3 there, or $PYTHON).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tier1 import layout
from tier1.config import Tier1Config, config_hash

REPO = Path(__file__).resolve().parents[3]

# The check's sizes (config/full.yaml's batch and sequence length on a real corpus): 13,312 pairs
# x 2 epochs = 208 steps of 128 pairs; share_gpu runs 2 ranks on the one GPU over gloo (the
# multi-rank CUDA path, never a speedup), and the sweep measures the steady step per batch.
GPU_CHECK = {"dataset": "python-source", "train_samples": 13312, "test_samples": 1000, "num_epochs": 2,
             "batch_size": 128, "max_seq_length": 256, "eval_batch_size": 512, "checkpoint_every": 0,
             "repeats": 1, "corpus_chunk_size": 16384, "gpu_counts": [1, 2], "share_gpu": True,
             "batch_sweep": [32, 128, 512], "bench_steps": 104, "bench_texts": 1000, "bench_repeats": 3}
# The same pairs in fp32, one epoch, one rank: bf16's speed-up per step and nDCG@10 against fp32.
FP32 = {"precision": "fp32", "num_epochs": 1, "gpu_counts": [1], "batch_sweep": []}
# Seconds a job may run (the check's whole limit caps them too).
JOB_LIMIT_S = {"bench_compare": 480, "prepare": 150}
DEFAULT_LIMIT_S = 180
# The rest of a run, most wanted first: the 2-rank training, then what explains its time.
RULE_ORDER = ["preflight", "prepare", "tokenize", "probe", "train", "evaluate", "rank_compute", "sweep_step",
              "commbench", "train_dropout_reference", "report"]


@dataclass(frozen=True)
class CheckRun:
    """One named run of the workflow, with the settings that differ from config/config.yaml."""

    name: str
    settings: dict


@dataclass(frozen=True)
class Step:
    """Targets of one run, in the order the check wants them: a cut-off loses only later steps."""

    run: str
    targets: list[str]  # paths inside the run's folder (tier1.layout), or rule names such as "all"


@dataclass
class Job:
    rule: str
    run: str
    inputs: list[str]
    outputs: list[str]
    log: str
    benchmark: str
    command: str
    name: str = field(init=False)

    def __post_init__(self):
        self.name = Path(self.log).stem if self.log else self.rule


def gpu_check(settings: dict, model: str | None, part: str) -> tuple[list[CheckRun], list[Step]]:
    """The runs and steps of one part of the check. "check": the 1-rank pipeline, the fp32
    training, then the rest of the run (2 ranks sharing the GPU, rank compute, batch sweep,
    collectives) and its report. "bench": the bench against sentence-transformers on the check's
    data (prepared by the bench part itself when the check did not run first)."""
    main = CheckRun("gpu-check", {**GPU_CHECK, **({"model": model} if model else {}), **settings})
    if part == "bench":
        return [main], [Step(main.name, [layout.BENCH_JSON])]
    fp32 = CheckRun("gpu-check-fp32", {**main.settings, **FP32})
    one = layout.trained_on(1)
    steps = [Step(main.name, [layout.PREFLIGHT, layout.probe(1), layout.eval_metrics(one, 1)]),
             Step(fp32.name, [layout.eval_metrics(one, 1)]),
             Step(main.name, ["all"])]
    return [main, fp32], steps


def base_config(configfiles: list[Path], workdir: Path = REPO) -> dict:
    """config/config.yaml, then each further config file over it, as Snakemake merges them."""
    merged: dict = {}
    for path in [Path("config") / "config.yaml", *configfiles]:
        merged.update(yaml.safe_load((workdir / path).read_text()) or {})
    return merged


def dry_run(run: CheckRun, configfiles: list[Path], gpus: int, targets: list[str], workdir: Path) -> str:
    """The workflow's dry run of `targets` with every job forced, its shell commands printed."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({**run.settings, "run_name": run.name}, f)
    env = {**os.environ, "TIER1_GPUS": str(gpus)}
    try:
        proc = subprocess.run([sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--quiet", "progress",
                               "--configfile", *map(str, configfiles), f.name, "--", *targets],
                              cwd=workdir, env=env, capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        raise SystemExit(f"the workflow's dry run for {run.name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


BLOCK = re.compile(r"^(?:local)?rule (?P<rule>\w+):\n(?P<body>.*?)^Shell command: (?P<command>[^\n]*)$", re.M | re.S)


def parse_jobs(text: str, run: str) -> list[Job]:
    """Every job of a dry run (`-p --quiet progress`) with a shell command, in the order printed."""
    jobs = []
    for m in BLOCK.finditer(text):
        if m["command"].strip() == "None":
            continue  # a rule that only gathers others (all, bench)
        fields = dict(re.findall(r"^\s+(\w+): (.*)$", m["body"], flags=re.M))
        inputs, outputs = ([p.strip() for p in fields.get(key, "").split(",") if p.strip()] for key in ("input", "output"))
        jobs.append(Job(m["rule"], run, inputs, outputs, fields.get("log", ""), fields.get("benchmark", ""),
                        m["command"].strip()))
    return jobs


def ordered(jobs: list[Job], targets: list[str], done: set[int]) -> list[Job]:
    """The jobs `targets` need, each after the jobs that make its inputs, none of `done` again."""
    producer = {out: job for job in jobs for out in job.outputs}
    out: list[Job] = []

    def visit(job: Job) -> None:
        if id(job) in done:
            return
        done.add(id(job))
        for path in job.inputs:
            if path in producer:
                visit(producer[path])
        out.append(job)

    for target in targets:
        if "/" in target:  # a file: the job that makes it (none when the workflow makes it itself)
            if target in producer:
                visit(producer[target])
        else:  # a rule name: every job of the dry run
            rank = {rule: i for i, rule in enumerate(RULE_ORDER)}
            numbers = lambda name: [int(x) if x.isdigit() else x for x in re.split(r"(\d+)", name)]
            for job in sorted(jobs, key=lambda j: (rank.get(j.rule, len(rank)), numbers(j.name))):
                visit(job)
    return out


def target(run: str, name: str) -> str:
    """A step's target as Snakemake takes it: a path in the run's folder, or a rule's name."""
    return f"{layout.run_folder(run)}/{name}" if "/" in name or "." in name else name


def run_environment(run: CheckRun, configfiles: list[Path], gpus: int, workdir: Path = REPO) -> dict[str, str]:
    """What the workflow exports to every job of a run (workflow/rules/common.smk): its name and
    the hash of its whole resolved config, which every record it writes carries."""
    cfg = Tier1Config.from_dict({**base_config(configfiles, workdir), **run.settings, "run_name": run.name})
    cfg = cfg.resolve([f"gpu{i}" for i in range(gpus)])
    return {"TIER1_RUN": cfg.run_name, "TIER1_RUN_CONFIG_HASH": config_hash(cfg.to_dict())}


def plan(runs: list[CheckRun], steps: list[Step], gpus: int, configfiles: list[Path], workdir: Path = REPO) -> list[Job]:
    """The check's jobs in the steps' order, each after the jobs it needs."""
    jobs_of = {}
    for run in runs:
        targets = [target(run.name, t) for s in steps if s.run == run.name for t in s.targets]
        jobs_of[run.name] = parse_jobs(dry_run(run, configfiles, gpus, targets, workdir), run.name)
    done: set[int] = set()
    out: list[Job] = []
    for step in steps:
        out += ordered(jobs_of[step.run], [target(step.run, t) for t in step.targets], done)
    return out


def cosine_job(run: CheckRun, texts: int = 300) -> Job:
    """How far bf16 autocast moves the trained model's embeddings from fp32 (not a stage of the
    workflow: a measurement of the check's own, tier1.tools.gpu_summary cosine)."""
    folder = layout.Run(run.name).folder
    model, corpus, queries = (str(folder / p) for p in (layout.model_dir(layout.trained_on(1)), layout.CORPUS,
                                                         layout.QUERIES))
    out = str(folder / layout.GPU_COSINE)
    command = shlex.join(["$PY", "-m", "tier1.tools.gpu_summary", "cosine", "--model", model, "--corpus", corpus,
                          "--queries", queries, "--max-seq-length", str(run.settings["max_seq_length"]),
                          "--texts", str(texts), "--out", out]).replace("'$PY'", "$PY")
    return Job("cosine", run.name, [model, corpus, queries], [out], "", "", command)


HEADER = r"""#!/usr/bin/env bash
# The one-GPU check: the workflow's own jobs, in dependency order, for a machine without Snakemake.
# Generated by: {generated_by}
# Do not edit: regenerate it (scripts/gpu_bundle.sh does). Run from the repository root:
#   PYTHON=python3 GPU_CHECK_LIMIT_S=420 bash {script}
#   bash {script} --dry-run    # print each job's command, run nothing
set -uo pipefail
DRY=0
[[ ${{1:-}} == --dry-run ]] && DRY=1
PY=${{PYTHON:-python3}}
LIMIT_S=${{GPU_CHECK_LIMIT_S:-0}}   # 0: no limit for the whole check
T0=$(date +%s)
export PY HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD/workflow${{PYTHONPATH:+:$PYTHONPATH}}
FAILED=0

# job RUN NAME LIMIT_S STEPS_FILE BENCHMARK_FILE INPUTS OUTPUTS ENV COMMAND: run one job of the
# workflow as Snakemake would: not when its outputs are there already (an earlier part made them),
# not without its inputs; ENV is the run's environment; timed, its wall time to its benchmark file.
job() {{
    local run=$1 name=$2 limit=$3 steps=$4 bench=$5 inputs=$6 outputs=$7 vars=$8 command=$9 missing=() p made=1
    if ((DRY)); then
        echo "== $run/$name (limit ${{limit}} s): $vars $command"
        return 0
    fi
    mkdir -p "$(dirname "$steps")"
    for p in $outputs; do [[ -e $p ]] || made=0; done
    if ((made)); then
        echo "== $run/$name: made already"
        return 0
    fi
    for p in $inputs; do [[ -e $p ]] || missing+=("$p"); done
    if ((${{#missing[@]}})); then
        echo "== $run/$name: skipped, no ${{missing[0]}}"
        printf '%s\t\t%s\n' "$name" skipped >>"$steps"
        return 0
    fi
    if ((LIMIT_S > 0)); then
        local left=$((LIMIT_S - ($(date +%s) - T0)))
        if ((left < 30)); then
            echo "== $run/$name: skipped, the check's ${{LIMIT_S}} s are spent"
            printf '%s\t\t%s\n' "$name" "out of time" >>"$steps"
            return 0
        fi
        ((limit > left)) && limit=$left
    fi
    echo "== $run/$name (limit ${{limit}} s)"
    local t0 t1 rc=0 secs
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086 # VAR=value words
    timeout --kill-after=10 "$limit" env $vars bash -c "$command" || rc=$?
    t1=$(date +%s.%N)
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN {{ printf "%.4f", b - a }}')
    printf '%s\t%s\t%s\n' "$name" "$secs" "$rc" >>"$steps"
    if [[ -n $bench ]]; then
        mkdir -p "$(dirname "$bench")"
        awk -v s="$secs" 'BEGIN {{ printf "s\th:m:s\n%s\t%d:%02d:%02d\n", s, s / 3600, s % 3600 / 60, s % 60 }}' >"$bench"
    fi
    if ((rc != 0)); then
        echo "   FAILED (exit $rc) after $secs s"
        FAILED=1
    fi
}}
"""


def script(jobs: list[Job], env: dict[str, dict[str, str]], generated_by: str, name: str) -> str:
    text = HEADER.format(generated_by=generated_by, script=name) + "\n"
    python = shlex.quote(sys.executable)
    for j in jobs:
        command = j.command.replace(python + " ", "$PY ")
        if sys.executable in command:
            raise SystemExit(f"{j.name}: the planning Python left in its command: {command}")
        steps = f"{layout.run_folder(j.run)}/{layout.GPU_CHECK_STEPS}"
        limit = JOB_LIMIT_S.get(j.rule, DEFAULT_LIMIT_S)
        variables = " ".join(f"{k}={v}" for k, v in env[j.run].items())
        args = [j.run, j.name, str(limit), steps, j.benchmark, " ".join(j.inputs), " ".join(j.outputs), variables, command]
        text += "job " + " ".join(shlex.quote(a) for a in args) + "\n"
    text += '\nexit "$FAILED"\n'
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the script to write")
    parser.add_argument("--gpus", type=int, default=1, help="the GPUs the check's machine has (0: a CPU run)")
    parser.add_argument("--model", default=None,
                        help="the model, as the GPU machine finds it (scripts/gpu_bundle.sh: .gpu_bundle/model)")
    parser.add_argument("--configfile", type=Path, nargs="*", default=[],
                        help="config files over config/config.yaml (e.g. .test/config/config.yaml)")
    parser.add_argument("--set", default="{}", help="settings over the check's, as YAML (e.g. '{train_samples: 32}')")
    parser.add_argument("--workdir", type=Path, default=REPO,
                        help="the workflow's folder (its Snakefile, config, and what the config names)")
    parser.add_argument("--part", choices=("check", "bench"), default="check",
                        help="the check's stages, or the bench against sentence-transformers")
    args = parser.parse_args(argv)
    runs, steps = gpu_check(yaml.safe_load(args.set) or {}, args.model, args.part)
    jobs = plan(runs, steps, args.gpus, args.configfile, args.workdir)
    if args.part == "check":  # after the 1-rank pipeline and the fp32 run, before the scaling jobs
        at = max(i for i, j in enumerate(jobs) if j.run == runs[1].name) + 1
        jobs.insert(at, cosine_job(runs[0]))
    env = {run.name: run_environment(run, args.configfile, args.gpus, args.workdir) for run in runs}
    generated_by = "python -m tier1.tools.gpu_plan " + shlex.join(argv if argv is not None else sys.argv[1:])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(script(jobs, env, generated_by, str(args.out)))
    print(f"{args.out}: {len(jobs)} jobs of {', '.join(r.name for r in runs)}")
    for j in jobs:
        print(f"   {j.run}/{j.name}")


if __name__ == "__main__":
    main()
