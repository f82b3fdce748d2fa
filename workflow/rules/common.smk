import json
import os
import re
import shlex
import signal
import time
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod
from snakemake.utils import validate

from tier1 import layout
from tier1.runtime import console, slurm
from tier1.encoder import random_models
from tier1.input_checks import TRUSTED_DATASETS, check_inputs
from tier1.config import ConfigError, Tier1Config, config_hash, from_command_line, stage_json
from tier1.config_schema import first_problem
from tier1.records import EvaluationRecord, RankComputeRecord
from tier1.runtime.checksum import token_cache_problem
from tier1.runtime.gpus import visible_gpus

RUN_STARTED = time.time()
# The command that goes on from where this run stops (what the end-of-run screen tells the user).
RERUN = shlex.join(["snakemake", *sys.argv[1:]])
STOPPED_BY = []  # the signal that stopped this run (Ctrl-C, a scheduler's SIGTERM), if one did


def stop_jobs_on_signals():
    """Ctrl-C (SIGINT) or SIGTERM to Snakemake: every running job is asked to stop now, where
    Snakemake alone would wait for it to end; then Snakemake ends the run its own way (SIGINT: as
    on a Ctrl-C; SIGTERM: its graceful exit, which now waits only for the stopping jobs). Called
    from onstart, after Snakemake has set its own SIGTERM handler, which this one then calls."""

    def handler(previous):
        def stop(signum, frame):
            STOPPED_BY.append(signal.Signals(signum).name)
            console.stop_jobs(os.getpid(), signum)
            # On a cluster the jobs are not this process's children: Snakemake cancels them (scancel)
            # on a KeyboardInterrupt, while its graceful SIGTERM would wait for them to finish.
            if signum == signal.SIGINT or not callable(previous) or CLUSTER:
                raise KeyboardInterrupt
            previous(signum, frame)

        return stop

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            signal.signal(sig, handler(signal.getsignal(sig)))
        except ValueError:  # not Snakemake's main thread: nothing to stop from here
            pass


CLUSTER = {}  # under the SLURM executor: its executor and this run's notes folder (cluster_onstart)


def cluster_onstart():
    """Under the SLURM executor (not inside a job): the job status check that works on this cluster
    (sacct, or squeue where there is no accounting), every job's request checked against its
    partition before anything is submitted, and the heartbeat by which each job knows this Snakemake
    is alive (tier1.runtime.slurm)."""
    plugin = workflow.executor_plugin
    refuse_nodes_outside_slurm(plugin)
    if plugin is None or plugin.name != "slurm":
        return
    executor = getattr(workflow.scheduler, "_executor", None)  # Snakemake's own attribute: may be renamed
    status = slurm.choose_status_command(workflow.executor_settings)
    # where sacct works, the failure screen asks it for the jobs squeue has forgotten (MinJobAge);
    # a minute early, for a clock a little behind the controller's
    accounted_since = None
    if workflow.executor_settings.status_command == "sacct":
        accounted_since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 60))
    # (the executor may also fall back to sacct by itself: its states are made plain whatever the command)
    plain = executor is not None and slurm.plain_job_states(executor)
    if not plain and workflow.executor_settings.status_command == "sacct":
        print(
            "SLURM: the executor's status query was not found: a job cancelled may not be seen to end", file=sys.stderr
        )
    schedule = None if executor is None else slurm.adapt_status_checks(executor)
    if schedule is None:
        print(f"{status}; at the executor's own intervals (its object was not found to adapt them)", file=sys.stderr)
    else:
        print(f"{status}; {schedule.describe()}", file=sys.stderr)
    problems = slurm.request_problems([slurm_request(job) for job in workflow.dag.needrun_jobs() if not job.is_local])
    if problems:
        raise WorkflowError(
            "SLURM: no node can run these jobs as asked (SLURM would refuse them, or leave them pending for ever):\n  "
            + "\n  ".join(problems)
            + "\nLower the request (e.g. --default-resources cpus_per_task=N mem_mb=M, --set-resources RULE:mem_mb=M) "
            "or name a partition whose nodes are larger (slurm_partition=...)."
        )
    notes = Path(".snakemake/tier1-slurm", getattr(executor, "run_uuid", "run")).resolve()
    # a job's story that says its command ended brings the next status check forward
    heartbeat = slurm.Heartbeat(
        notes / "heartbeat", relay=console.say, on_job_end=schedule.expect_change if schedule else None
    )
    CLUSTER.update(executor=executor, notes=notes, heartbeat=heartbeat, accounted_since=accounted_since)
    os.environ.update({slurm.NOTES_ENV: str(notes), slurm.HEARTBEAT_ENV: str(notes / "heartbeat")})


def refuse_nodes_outside_slurm(plugin):
    """nodes > 1 (training across machines) runs only as SLURM jobs: refused before any job elsewhere."""
    across = [job for job in workflow.dag.needrun_jobs() if job.resources.get("mpi") and job.resources.get("nodes")]
    if across and (plugin is None or plugin.name not in ("slurm", "slurm-jobstep")):
        raise WorkflowError(
            f"nodes: {CFG.nodes} trains across {CFG.nodes} machines, which this run can only do as SLURM jobs "
            f"(--profile profiles/slurm: one torchrun per node through srun); this run's executor is "
            f"{plugin.name if plugin else 'none'}. On one machine leave nodes: 1."
        )


def slurm_request(job):
    """(job, partition, CPUs, memory MB, GPUs) of one node, as the SLURM executor asks for them
    (a job across nodes asks for `tasks` over `nodes`: the tasks one node runs, each of cpus_per_task)."""
    res = job.resources
    number = lambda v: v if isinstance(v, int) else 0  # a value not known before the job runs counts 0
    per_node = -(-number(res.get("tasks")) // (number(res.get("nodes")) or 1)) or 1
    cpus = (number(res.get("cpus_per_task")) or number(job.threads) or 1) * per_node
    mem = number(res.get("mem_mb")) or number(res.get("mem_mb_per_cpu")) * cpus
    gres = re.fullmatch(r"gpu(?::[\w.]+)?:(\d+)", str(res.get("gres") or ""))
    return (
        " ".join([job.name, *(f"{k}={v}" for k, v in job.wildcards_dict.items())]),
        res.get("slurm_partition") or None,
        cpus,
        mem,
        number(res.get("gpu")) or (int(gres[1]) if gres else 0),
    )


def cluster_jobs():
    """This run's SLURM jobs (state, reason, label, logs) for the end-of-run screen; [] off SLURM."""
    executor = CLUSTER.get("executor")
    if executor is None:
        return []
    CLUSTER["heartbeat"].relay_stories()  # the jobs' last lines first
    return slurm.with_notes(
        slurm.run_jobs(executor.run_uuid, accounted_since=CLUSTER["accounted_since"]),
        CLUSTER["notes"],
        getattr(executor, "slurm_logdir", None),
    )


# GPUs the jobs may use (NVML, narrowed by CUDA_VISIBLE_DEVICES; TIER1_GPUS=N declares them).
GPUS = visible_gpus()
ON_GPUS = bool(GPUS)
try:
    # --config gpu_counts=[1,2] arrives as strings, use_multi_gpu=false as a word: make the
    # values what the schema describes first.
    config.update(from_command_line(config))
    # one line naming the setting, before Snakemake's validation (which also fills the defaults)
    # would print the whole schema and config around it
    _problem = first_problem(config, Path(workflow.basedir) / "config" / "schema.yaml")
    if _problem:
        raise ConfigError(_problem)
    validate(config, "../../config/schema.yaml")
    CFG = Tier1Config.from_dict(config).resolve(GPUS)
    # The model and dataset, before any job runs and before any output is removed (not for --lint,
    # which reads the rules only).
    for _warning in [] if "--lint" in sys.argv else check_inputs(CFG, Path.cwd()):
        print(_warning, file=sys.stderr)
except ConfigError as err:
    raise WorkflowError(f"config: {err}")

# Every output of a run lies under results/<run_name>/ (tier1.layout spells the paths inside it).
RESULTS = layout.run_folder(CFG.run_name)
REPORT_MD = f"{RESULTS}/{layout.REPORT_MD}"
REPORT_HTML = f"{RESULTS}/{layout.REPORT_HTML}"
# One fingerprint of the whole resolved config, stamped into every file this run writes
# (tier1.runtime.provenance), beside each stage's own hash of the keys it depends on.
# (kept out of the params, which would rerun every job whenever any setting changes)
os.environ.update(TIER1_RUN=CFG.run_name, TIER1_RUN_CONFIG_HASH=config_hash(CFG.to_dict()))

# The packaged model and the stdlib dataset need no network; stay offline unless told otherwise.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The tier1 package is importable from the source tree too (e.g. inside a conda env built from
# envs/tier1.yaml, which holds only the third-party pins).
TIER1_SRC = os.path.abspath(os.path.join(workflow.basedir, "workflow"))
_inherited = os.environ.get("PYTHON" + "PATH")
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [TIER1_SRC, _inherited])))
CONDA_ENV = "../../envs/tier1.yaml"
# Under --sdm conda each job runs in that environment's python; otherwise in Snakemake's own.
PYTHON = "python" if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method else sys.executable
TOKENS = f"{RESULTS}/{layout.TOKENS}"
# A damaged token cache is set aside before planning, so the tokenize rule remakes it instead of
# every job that reads it failing (and costing the outputs Snakemake removed before running it).
if os.path.exists(TOKENS):
    _damage = token_cache_problem(TOKENS)
    if _damage:
        os.replace(TOKENS, f"{TOKENS}.corrupt")
        print(f"{TOKENS}: {_damage}; set aside as {TOKENS}.corrupt, it will be remade", file=sys.stderr)

# "auto" resolved, so what reads the config (the HTML report's text) names the real world sizes
config["gpu_counts"] = list(CFG.gpu_counts)
WORLD_SIZES = list(CFG.world_sizes)  # use_multi_gpu: false leaves only 1, evaluation included
COMM_WORLD_SIZES = [n for n in WORLD_SIZES if n > 1]  # collectives need two ranks or more
# The data-parallel strategies trained (parallelism): the first is the main table's; a second is
# trained and evaluated at every world size beside it. OTHER names the strategy the second rules
# run (defined always, requested only when configured).
STRATEGIES = list(CFG.parallelism)
PRIMARY = STRATEGIES[0]
SECOND = STRATEGIES[1] if len(STRATEGIES) > 1 else None
OTHER = SECOND or ("fsdp" if PRIMARY == "ddp" else "ddp")


wildcard_constraints:
    n=r"\d+",
    w=r"\d+",
    b=r"\d+",


def out(path):
    """A path inside this run's results folder (wildcards in braces are kept)."""
    return f"{RESULTS}/{path}"


def stage_params(stage, parallelism=None):
    """The JSON of the config keys a stage depends on; a change to any other key leaves it cached.
    A training rule names its strategy (`parallelism`; else the first configured)."""
    return stage_json(CFG, stage, parallelism)


# What a timed job holds the machine's lock on (tier1.runtime.machine_lock): every GPU this run may use,
# or the whole machine on a CPU, so that no other run on the machine times at the same moment.
TIMED_DEVICES = ",".join(GPUS) if ON_GPUS else "cpu"


def stage_story(label, timed=False):
    """The wrapper every job's command runs in: its output to the log file, its start, progress and
    end (or the end of its log, when it fails) to the console (tier1.runtime.console). It also carries the
    job's lifeline (the job ends when Snakemake does), and for a timed job (timed=True, beside
    the `timed` resource) holds the machine's lock while it runs."""
    lock = f" --timed {shlex.quote(TIMED_DEVICES)}" if timed else ""
    story = lambda text: f"{PYTHON} -m tier1.runtime.console{lock} --label {shlex.quote(text)} --log"
    if callable(label):
        return lambda wildcards: story(label(wildcards))
    return story(label)


def launcher(n, across_nodes=False):
    """n ranks of a stage: a plain process for one, torchrun (DDP) for several; on a GPU machine
    each job gets exactly n GPUs of its own (tier1.runtime.launch). A training (`across_nodes`) with
    nodes > 1 runs n / nodes ranks on each node: one launcher per node through srun, inside the
    job's SLURM allocation, the c10d rendezvous on its first node (launch --srun)."""
    timeout = f"TIER1_COLLECTIVE_TIMEOUT_S={CFG.collective_timeout_s:g}"
    shared = " --share-gpu" if ON_GPUS and CFG.share_gpu else ""
    nodes = CFG.nodes_for(int(n)) if across_nodes else 1
    ranks = f"--ranks {CFG.ranks_per_node(int(n))} --nnodes {nodes} --srun" if nodes > 1 else f"--ranks {int(n)}"
    return f"env {timeout} {PYTHON} -m tier1.runtime.launch {ranks}" + (" --gpus" if ON_GPUS else "") + shared


def node_resources(n, key):
    """A training of n ranks across nodes (nodes > 1), as the SLURM executor asks for it: `nodes` x one
    task each (--nodes, --ntasks); `mpi` makes the executor run the job's command as it is, on the
    first node, where it starts the nodes' launchers with srun (launcher); on GPUs gpu:K per node
    (--gres; the executor's `gpu` is a total), and tasks_per_gpu 0, or the executor would ask
    --ntasks-per-gpu=tasks. None (not asked) on one node."""
    nodes = CFG.nodes_for(int(n))
    if nodes == 1:
        return None
    gpus = {"gres": f"gpu:{CFG.ranks_per_node(int(n))}", "tasks_per_gpu": 0} if ON_GPUS else {}
    return ({"nodes": nodes, "tasks": nodes, "mpi": "srun"} | gpus).get(key)


def across(n):
    """The story's words for a training across nodes ("" on one)."""
    nodes = CFG.nodes_for(int(n))
    return f" across {nodes} nodes" if nodes > 1 else ""


def gpus_for(n, across_nodes=False):
    """The GPU resource of an n-rank job, so a cluster executor requests them (a training across
    nodes asks per node instead: node_resources)."""
    if across_nodes and CFG.nodes_for(int(n)) > 1:
        return 0
    return (1 if CFG.share_gpu else int(n)) if ON_GPUS else 0


def trained_model(model):
    """The folder the train rule writes the model trained on `model` (layout.trained_on(n)) into."""
    return out(layout.model_dir(model))


def timed_jobs():
    """The jobs of a run whose benchmark files the report sums (all but the report itself), in the
    order they run, each with the records that hold its timed windows (`kind` or `kind:world size`,
    as the report's index names them)."""
    jobs = {"preflight": ["preflight"], "prepare": ["manifest"], "tokenize": ["tokens"]}
    if ON_GPUS:
        jobs |= {f"probe_gpus{n}": [f"probe:{n}"] for n in WORLD_SIZES}
    else:  # one job writes every world size's "not applicable" record
        jobs["probe"] = [f"probe:{min(WORLD_SIZES)}"]
    jobs |= {f"commbench_ws{n}": [f"comm:{n}"] for n in COMM_WORLD_SIZES}
    jobs |= {train_job(n, PRIMARY): [f"train:{n}"] for n in WORLD_SIZES}
    if SECOND:
        jobs |= {train_job(n, SECOND): [f"second_train:{n}"] for n in WORLD_SIZES if n > 1}
    if len(WORLD_SIZES) > 1:
        jobs["train_reference_gpus1"] = ["reference_train"]
    # one launch evaluates the base model and the model trained on w ranks, each timed
    jobs |= {f"eval_ws{w}": [f"eval_base:{w}", f"eval_trained:{w}"] for w in WORLD_SIZES}
    if SECOND:
        jobs |= {f"eval_{SECOND}_ws{w}": [f"second_eval_trained:{w}"] for w in WORLD_SIZES if w > 1}
    return jobs


def second_trained(n):
    """The training the second strategy's row at world size n reads. One rank is the same plain run
    under every strategy (tier1.training.parallel never wraps it), so its row is the first's run,
    not a second training of the same thing."""
    return layout.trained_on(n, PRIMARY if n == 1 else SECOND)


def train_job(n, strategy):
    """The name of the training job of n ranks under `strategy` (its log and benchmark file)."""
    return f"train_{layout.trained_on(n, strategy)}"


def report_records():
    """Every record the report reads, by kind: one file, or world size -> file
    (tier1.report.collect.RECORDS names the class each kind is read through)."""
    records = {
        "manifest": out(layout.MANIFEST),
        "tokens": out(layout.TOKENS_RECORD),
        "preflight": out(layout.PREFLIGHT),
        "train": {str(n): out(layout.train_record(layout.trained_on(n, PRIMARY))) for n in WORLD_SIZES},
        "loss": {str(n): out(layout.loss_csv(layout.trained_on(n, PRIMARY))) for n in WORLD_SIZES},
        "probe": {str(n): out(layout.probe(n)) for n in WORLD_SIZES},
        "eval_base": {str(w): out(layout.eval_metrics(layout.BASE, w)) for w in WORLD_SIZES},
        "eval_trained": {str(n): out(layout.eval_metrics(layout.trained_on(n, PRIMARY), n)) for n in WORLD_SIZES},
        "comm": {str(n): out(layout.comm(n)) for n in COMM_WORLD_SIZES},
        # the batch sweep (batch_sweep): the steady step per global batch and world size
        "sweep": {f"b{b}_gpus{n}": out(layout.sweep(b, n)) for b in CFG.batch_sweep for n in WORLD_SIZES},
    }
    if SECOND:  # the second strategy's runs, side by side with the first's
        records["second_train"] = {str(n): out(layout.train_record(second_trained(n))) for n in WORLD_SIZES}
        records["second_loss"] = {str(n): out(layout.loss_csv(second_trained(n))) for n in WORLD_SIZES}
        records["second_eval_trained"] = {str(n): out(layout.eval_metrics(second_trained(n), n)) for n in WORLD_SIZES}
    if len(WORLD_SIZES) > 1:  # only needed to compare world sizes
        # the 1-rank run with other dropout masks (the same-model yardstick)
        records["reference_train"] = out(layout.train_record(layout.REFERENCE))
        records["reference_loss"] = out(layout.loss_csv(layout.REFERENCE))
        # one rank's compute at each world size's share of the batch (the prediction's)
        records["rank_compute"] = out(layout.RANK_COMPUTE)
    return records


def report_index():
    """The report's inputs by name: the records, and every job's wall time (its Snakemake
    benchmark file) with the records of its timed windows, for the pipeline overhead."""
    jobs = {job: {"benchmark": out(layout.benchmark(job)), "windows": windows} for job, windows in timed_jobs().items()}
    return {"records": report_records(), "jobs": jobs}


def report_inputs(wildcards):
    """report_index()'s files, as the rule's named inputs."""
    index = report_index()
    files = {k: list(v.values()) if isinstance(v, dict) else v for k, v in index["records"].items()}
    return files | {"benchmarks": [job["benchmark"] for job in index["jobs"].values()]}


def final_outputs():
    return [out(layout.REPORT_HTML), out(layout.REPORT_MD), out(layout.REPORT_CSV)]


def local_files(spec):
    """Every file of a local dataset or model (the file itself, or a folder's files but hidden
    ones), as a rule's inputs: Snakemake then reruns the jobs that read them when one is edited in
    place, as it does for a changed setting; [] for a name that is not a local path."""
    path = Path(spec).expanduser()
    if path.is_file():
        return [str(path)]
    if not path.is_dir():
        return []
    hidden = lambda f: any(part.startswith(".") for part in f.relative_to(path).parts)
    return sorted(str(f) for f in path.rglob("*") if f.is_file() and not hidden(f))


def model_folder():
    """The model's files as inputs of the first rules that load it (tokenize, commbench,
    check_gpus, bench_compare; every other one comes after tokenize): the folder a
    `model: random:<name>` spec resolves to (built by its rule), else a local folder's files."""
    name = random_models.spec_name(CFG.model)
    return [out(layout.random_model(name))] if name else local_files(CFG.model)


def dataset_files():
    """A local dataset's files (a pair file, or a BEIR folder's), as the prepare rule's inputs."""
    return [] if CFG.dataset in TRUSTED_DATASETS else local_files(CFG.dataset)
