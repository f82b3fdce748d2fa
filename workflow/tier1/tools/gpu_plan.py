"""The one-GPU check's script, generated from the workflow itself (here, where Snakemake is).

    python -m tier1.tools.gpu_plan --out .gpu_bundle/gpu_check.sh --model .gpu_bundle/model

The GPU machine has no Snakemake, so the check cannot ask the workflow for its jobs there. Here, a
dry run of each of the check's runs with the GPU count declared (`TIER1_GPUS=N snakemake -n -p
--forceall TARGETS`) prints every job's rule, inputs, outputs, log, benchmark file and shell
command, exactly as Snakemake would run them on that machine; this module puts those jobs in
dependency order and writes them into one bash script. No stage command line is written here:
each comes from the rules. The script runs with plain bash from the repository root; every job's
files land in the standard layout (tier1.layout), in each run's own folder, where
tier1.tools.gpu_summary reads them.

The order brings the headline back first (MILESTONES): the bf16 1-rank steady step; 2 ranks
sharing the GPU with the dropout reference (the same-model verdict); the bench against
sentence-transformers; the GPU tests; fp32 and 2 length parts (each its own run, on the main run's
prepared data and token ids, linked, not made again); then the rest of the run and its report;
last, the 2 shared ranks again under FSDP2 (on the same data, linked).
After each milestone the script calls $GPU_CHECK_COLLECT (scripts/gpu_session.sh: the summary and
the archive into $OUT), so a call cut short still brings back what it proved.

What the script adds around each job is what Snakemake would have done: it skips a job whose
inputs are missing (an earlier job failed), runs it under a time limit (and the whole check's
GPU_CHECK_LIMIT_S), writes its benchmark file (wall seconds, as Snakemake's `s` column) and one
line per job to the run's steps file (job, seconds, exit status). The workflow's own environment
(the run's name and config hash, PYTHONPATH, offline) is exported first; the Python that made the
plan is replaced by $PY (python3 there, or $PYTHON). The plan prints each job's expected seconds
on the GPU (JOB_ESTIMATE_S) against the call's budget, and names the jobs past it.
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

# The check's sizes (config/full.yaml's batch and sequence length on a real corpus): 6,656 pairs
# x 2 epochs = 104 steps of 128 pairs, enough for a steady median after the warm-up; share_gpu
# runs 2 ranks on the one GPU over gloo (the multi-rank CUDA path, never a speedup), and the
# sweep measures the steady step per batch. The bench: 3 repeats per side, each 52 steps.
GPU_CHECK = {"dataset": "python-source", "train_samples": 6656, "test_samples": 1000, "num_epochs": 2,
             "batch_size": 128, "max_seq_length": 256, "eval_batch_size": 512, "checkpoint_every": 0,
             "repeats": 1, "corpus_chunk_size": 16384, "gpu_counts": [1, 2], "share_gpu": True,
             "batch_sweep": [32, 128, 512], "bench_steps": 52, "bench_texts": 1000, "bench_repeats": 3}
# Runs beside the main one, on its data (linked by the `reuse_data` job), one epoch on one rank:
# fp32 (bf16's speed-up per step, nDCG@10 against fp32) and the batch in 2 length-sorted parts
# (a GPU's auto is 1 part: is one part still the faster on the ladder of widths?).
FP32 = {"precision": "fp32", "num_epochs": 1, "gpu_counts": [1], "batch_sweep": []}
PARTS2 = {"length_buckets": 2, "num_epochs": 1, "gpu_counts": [1], "batch_sweep": []}
# The main run's 2 ranks sharing the GPU again under FSDP2, last (if the call has time left): its
# per-step losses against DDP's, its step and its memory per rank (the same settings but the strategy).
FSDP2 = {"parallelism": "fsdp", "batch_sweep": []}
# Seconds a job may run (the check's whole limit caps them too).
JOB_LIMIT_S = {"bench_compare": 240, "prepare": 150, "gpu_tests": 100}
DEFAULT_LIMIT_S = 180
# Seconds each job is expected to take on an H100/H200 at the check's sizes, from the last GPU
# run (docs/gpu/20261126-h200/check, before the width ladder: prepare 17, tokenize 24, the 1-rank
# bf16 training 71 for 200 steps of which 48 in the timed window, so about 23 to start and
# 0.24 per step, fp32's 30 for 100 steps, evaluation 17, probe 42, the cosine 15, the report 2),
# scaled to these sizes. Not yet measured there, assumed: 2 ranks sharing the GPU at twice the
# 1-rank step; the bench's 6 processes of 52 steps 100; the GPU tests 60; rank compute and each
# sweep job 30; the collectives 20; preflight 10. The CPU rehearsal (scripts/gpu_rehearsal.sh)
# prints its own time per job beside these.
JOB_ESTIMATE_S = {"preflight": 10, "prepare": 17, "tokenize": 24, "train": 48, "train_gpus2": 75,
                  "train_dropout_reference": 48, "bench_compare": 100, "gpu_tests": 60, "reuse_data": 1,
                  "evaluate": 17, "probe": 42, "cosine": 15, "rank_compute": 30, "sweep_step": 30,
                  "commbench": 20, "report": 2}
ESTIMATE_FOR_OTHERS_S = 30
FP32_TRAIN_S = 30  # one epoch (52 steps), fp32 or 2 parts
# One device call: 600 s at most; the session's installs, the GPU's start-up checks and the
# final summary come out of it, and at least UNPLANNED_S of it is left to no job.
CALL_S = 590
SESSION_OVERHEAD_S = 30
UNPLANNED_S = 60
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


@dataclass(frozen=True)
class Milestone:
    """A named point of the check: once its steps ran, what they proved goes to $OUT."""

    name: str
    steps: list[Step]


def gpu_check(settings: dict, model: str | None) -> tuple[list[CheckRun], list[Milestone]]:
    """The check's runs and milestones, the headline first: a cut-off loses only later ones."""
    main = CheckRun("gpu-check", {**GPU_CHECK, **({"model": model} if model else {}), **settings})
    fp32 = CheckRun("gpu-check-fp32", {**main.settings, **FP32})
    parts2 = CheckRun("gpu-check-parts2", {**main.settings, **PARTS2})
    fsdp2 = CheckRun("gpu-check-fsdp", {**main.settings, **FSDP2})
    one = layout.trained_on(1)
    milestones = [
        Milestone("bf16 1-rank steady step", [Step(main.name, [layout.PREFLIGHT, layout.train_record(one)])]),
        Milestone("2 ranks sharing the GPU: the same model as 1 rank",
                  [Step(main.name, [layout.train_record(layout.trained_on(2)), layout.train_record(layout.REFERENCE)])]),
        Milestone("bench against sentence-transformers", [Step(main.name, [layout.BENCH_JSON])]),
        Milestone("GPU tests", [Step(main.name, [GPU_TESTS])]),
        Milestone("fp32 against bf16", [Step(fp32.name, [layout.eval_metrics(one, 1)]), Step(main.name, [COSINE])]),
        Milestone("1 length part against 2", [Step(parts2.name, [layout.train_record(one)])]),
        Milestone("the rest of the run and its report", [Step(main.name, ["all"])]),
        Milestone("FSDP2: 2 ranks sharing the GPU, against DDP",
                  [Step(fsdp2.name, [layout.train_record(layout.trained_on(2, "fsdp"))])]),
    ]
    return [main, fp32, parts2, fsdp2], milestones


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


# The check's own jobs, named in a Step beside the workflow's targets
GPU_TESTS = "gpu_tests"  # pytest -m gpu: steps under CUDA's sync debug mode, attention at the ladder's widths
COSINE = "cosine"        # bf16 against fp32 embeddings of the trained model
OWN_JOBS = (GPU_TESTS, COSINE)
DATA_RULES = ("prepare", "tokenize")  # what a run beside the main one takes from it (reuse_data)


def plan(runs: list[CheckRun], milestones: list[Milestone], gpus: int, configfiles: list[Path],
         workdir: Path = REPO) -> list[Job | str]:
    """The check's jobs in the milestones' order, each after the jobs it needs, each milestone's
    name after its last job. The first run is the main one; the others link its data."""
    main = runs[0]
    jobs_of = {}
    for run in runs:
        targets = [target(run.name, t) for m in milestones for s in m.steps if s.run == run.name
                   for t in s.targets if t not in OWN_JOBS]
        if targets:
            jobs_of[run.name] = parse_jobs(dry_run(run, configfiles, gpus, targets, workdir), run.name)
    done: set[int] = set()
    out: list[Job | str] = []
    for milestone in milestones:
        for step in milestone.steps:
            jobs = jobs_of.get(step.run, [])
            if step.run != main.name and not any(id(j) in done for j in jobs):
                out.append(reuse_job(jobs_of[main.name], jobs, step.run, done))
            for name in step.targets:
                if name == GPU_TESTS:
                    out.append(gpu_tests_job(main))
                elif name == COSINE:
                    out.append(cosine_job(main))
                else:
                    out += ordered(jobs, [target(step.run, name)], done)
        out.append(milestone.name)
    return out


def reuse_job(main_jobs: list[Job], jobs: list[Job], run: str, done: set[int]) -> Job:
    """The main run's prepared data and token ids, hard-linked into `run`'s folder in place of its
    own prepare and tokenize jobs (the same settings make the same files: only the precision, the
    length parts or the strategy differ, which neither stage reads)."""
    made = [j for j in jobs if j.rule in DATA_RULES]
    done.update(id(j) for j in made)
    outputs = [p for j in made for p in j.outputs]
    source = {j.rule: j for j in main_jobs}
    inputs = [p for rule in DATA_RULES for p in source[rule].outputs]
    mine, theirs = layout.run_folder(run), layout.run_folder(main_jobs[0].run)
    if sorted(p.replace(mine, theirs, 1) for p in outputs) != sorted(inputs):
        raise SystemExit(f"{run}: its data files are not the main run's: {outputs} against {inputs}")
    links = " && ".join(f"mkdir -p {shlex.quote(str(Path(p).parent))} && ln -f {shlex.quote(p.replace(mine, theirs, 1))} "
                        f"{shlex.quote(p)}" for p in outputs)
    return Job("reuse_data", run, inputs, outputs, "", "", links)


def gpu_tests_job(run: CheckRun) -> Job:
    """The GPU tests (pytest -m gpu); a collection error fails the job, as it must."""
    return Job(GPU_TESTS, run.name, [], [], "", "", "$PY -m pytest -q -p no:cacheprovider -m gpu tests")


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


def estimate_s(job: Job, runs: dict[str, CheckRun]) -> float:
    """The seconds a job is expected to take on the GPU (JOB_ESTIMATE_S)."""
    settings = runs[job.run].settings if job.run in runs else {}
    if job.rule == "train" and (settings.get("precision") == "fp32" or settings.get("length_buckets") == 2):
        return FP32_TRAIN_S
    if job.rule == "train" and job.name.endswith("gpus2"):
        return JOB_ESTIMATE_S["train_gpus2"]
    return JOB_ESTIMATE_S.get(job.rule, ESTIMATE_FOR_OTHERS_S)


def budget(items: list[Job | str], runs: list[CheckRun]) -> list[tuple[str, float, float, bool]]:
    """(job, expected seconds, seconds from the start, within the plan) for every job: the plan
    holds jobs while their sum leaves UNPLANNED_S of the call; the later ones run only if the
    earlier came in under their estimates."""
    by_name = {r.name: r for r in runs}
    allowed = CALL_S - SESSION_OVERHEAD_S - UNPLANNED_S
    total, out = 0.0, []
    for item in items:
        if isinstance(item, Job):
            total += estimate_s(item, by_name)
            out.append((f"{item.run}/{item.name}", estimate_s(item, by_name), total, total <= allowed))
    return out


HEADER = r"""#!/usr/bin/env bash
# The one-GPU check: the workflow's own jobs, in dependency order, for a machine without Snakemake.
# Generated by: {generated_by}
# Do not edit: regenerate it (scripts/gpu_bundle.sh does). Run from the repository root:
#   PYTHON=python3 GPU_CHECK_LIMIT_S=540 GPU_CHECK_COLLECT=CMD bash {script}
#   bash {script} --dry-run    # print each job's command, run nothing
# GPU_CHECK_COLLECT: a command run after each milestone (scripts/gpu_session.sh: summary to $OUT).
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
    local run=$1 name=$2 limit=$3 steps=$4 bench=$5 inputs=$6 outputs=$7 vars=$8 command=$9 missing=() p made=0
    if ((DRY)); then
        echo "== $run/$name (limit ${{limit}} s): $vars $command"
        return 0
    fi
    mkdir -p "$(dirname "$steps")"
    [[ -n $outputs ]] && made=1
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
        if ((left < 20)); then
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

# milestone NAME: what the check proved so far goes out at once (a later cut-off keeps it)
milestone() {{
    echo "== milestone: $1, after $(($(date +%s) - T0)) s"
    ((DRY)) && return 0
    if [[ -n ${{GPU_CHECK_COLLECT:-}} ]]; then bash -c "$GPU_CHECK_COLLECT" || echo "   collecting failed"; fi
    return 0
}}
"""


def script(items: list[Job | str], env: dict[str, dict[str, str]], generated_by: str, name: str,
           plan_budget: list[tuple[str, float, float, bool]]) -> str:
    text = HEADER.format(generated_by=generated_by, script=name)
    text += budget_text(plan_budget, comment=True) + "\n"
    python = shlex.quote(sys.executable)
    for item in items:
        if isinstance(item, str):
            text += f"milestone {shlex.quote(item)}\n"
            continue
        command = item.command.replace(python + " ", "$PY ")
        if sys.executable in command:
            raise SystemExit(f"{item.name}: the planning Python left in its command: {command}")
        steps = f"{layout.run_folder(item.run)}/{layout.GPU_CHECK_STEPS}"
        limit = JOB_LIMIT_S.get(item.rule, DEFAULT_LIMIT_S)
        variables = " ".join(f"{k}={v}" for k, v in env[item.run].items())
        args = [item.run, item.name, str(limit), steps, item.benchmark, " ".join(item.inputs), " ".join(item.outputs),
                variables, command]
        text += "job " + " ".join(shlex.quote(a) for a in args) + "\n"
    text += '\nexit "$FAILED"\n'
    return text


def budget_text(rows: list[tuple[str, float, float, bool]], comment: bool = False) -> str:
    """The plan's time budget, a line per job: what each is expected to take on the GPU."""
    allowed = CALL_S - SESSION_OVERHEAD_S - UNPLANNED_S
    lead = "# " if comment else "   "
    lines = [f"Time budget on the GPU: {allowed} s for jobs, of a {CALL_S} s call less {SESSION_OVERHEAD_S} s for the "
             f"session and {UNPLANNED_S} s left unplanned (expected seconds from gpu_plan.JOB_ESTIMATE_S)"]
    lines += [f"  {'' if within else 'past the plan: '}{name}: {secs:.0f} s, {total:.0f} s from the start"
              for name, secs, total, within in rows]
    return "".join(lead + line + "\n" for line in lines)


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
    args = parser.parse_args(argv)
    runs, milestones = gpu_check(yaml.safe_load(args.set) or {}, args.model)
    items = plan(runs, milestones, args.gpus, args.configfile, args.workdir)
    env = {run.name: run_environment(run, args.configfile, args.gpus, args.workdir) for run in runs}
    generated_by = " ".join(("python -m tier1.tools.gpu_plan " + shlex.join(argv if argv is not None else sys.argv[1:])).split())
    plan_budget = budget(items, runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(script(items, env, generated_by, str(args.out), plan_budget))
    jobs = [i for i in items if isinstance(i, Job)]
    print(f"{args.out}: {len(jobs)} jobs of {', '.join(r.name for r in runs)}, {len(milestones)} milestones")
    print(budget_text(plan_budget), end="")

if __name__ == "__main__":
    main()
