"""The results layout: where every file of a run lies, spelled here and nowhere else.

Every output of a run lies under results/<run_name>/, so runs never overwrite each other. Paths
below are relative to that folder (`run_folder(name)`); the rules join them to it (`out()` in
workflow/rules/common.smk) and tools read them through `Run`. An argument may be a Snakemake
wildcard in braces ("{n}"): the rules name their outputs through these same functions.

A trained model is named by what it was trained on: `trained_on(n)` ("gpus{n}", n ranks),
REFERENCE (the 1-rank run with other dropout masks) or BASE (the configured model, untrained).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RESULTS = "results"
BASE = "base"
REFERENCE = "reference_gpus1"


def run_folder(run_name: str, results: str | Path = RESULTS) -> str:
    return f"{results}/{run_name}"


def trained_on(n: int | str, parallelism: str = "ddp") -> str:
    """The name of the model trained on n ranks (n may be a wildcard such as "{n}") under the
    data-parallel strategy `parallelism`: "gpus{n}" for DDP (the default), "fsdp_gpus{n}" for FSDP2."""
    return f"gpus{n}" if parallelism == "ddp" else f"{parallelism}_gpus{n}"


# data: the prepared pairs and test set (a BEIR folder), their manifest, the token ids of every text
DATA = "data"
TRAIN_PAIRS = f"{DATA}/train.jsonl"
CORPUS = f"{DATA}/test/corpus.jsonl"
QUERIES = f"{DATA}/test/queries.jsonl"
QRELS = f"{DATA}/test/qrels/test.tsv"
MANIFEST = f"{DATA}/manifest.json"
TOKENS = f"{DATA}/tokens.safetensors"
TOKENS_RECORD = f"{DATA}/tokens.json"  # what was tokenised and its seconds, beside the ids

# the files of one training's folder (train/<model>/) and of one evaluation's (eval/<model>/ws<w>/)
MODEL = "model"
TRAIN_RECORD = "train_metrics.json"
LOSS = "loss.csv"
CHECKPOINTS = "checkpoints"
EVAL_METRICS = "metrics.json"
EVAL_RUN = "run.trec"

PREFLIGHT = "preflight.json"
RANK_COMPUTE = "train/rank_compute.json"
CHECK_GPUS = "check_gpus/summary.json"
BENCH_MD = "bench/compare.md"
BENCH_JSON = "bench/compare.json"
REPORT = "report"
REPORT_HTML = "report/index.html"
REPORT_MD = "report/performance.md"
REPORT_CSV = "report/performance.csv"
SNAKEMAKE_REPORT = "report/report.html"  # snakemake --report
HISTORY = "history"
# the one-GPU check (tier1.tools.gpu_plan): each job's time and exit status, and bf16 vs fp32
GPU_CHECK_STEPS = "logs/gpu_check_steps.tsv"
GPU_COSINE = "gpu_check/cosine.json"
LOGS = "logs"
BENCHMARKS = "benchmarks"


def random_model(name: str) -> str:
    """The folder a `model: random:<name>` spec resolves to (tier1.encoder.random_models), built
    once per run by the rule random_model."""
    return f"models/random-{name}"


def train_folder(model: str) -> str:
    return f"train/{model}"


def model_dir(model: str = "gpus{n}") -> str:
    return f"{train_folder(model)}/{MODEL}"


def train_record(model: str = "gpus{n}") -> str:
    return f"{train_folder(model)}/{TRAIN_RECORD}"


def loss_csv(model: str = "gpus{n}") -> str:
    return f"{train_folder(model)}/{LOSS}"


def checkpoints_beside(train_record_path: Path) -> Path:
    """A training's checkpoints: a folder beside its record (train/<model>/checkpoints)."""
    return Path(train_record_path).parent / CHECKPOINTS


def in_data_folder(path: str, folder: Path) -> Path:
    """`path` (one of the data files above) inside another data folder than a run's."""
    return Path(folder) / Path(path).relative_to(DATA)


def eval_folder(model: str = "gpus{w}", w: int | str = "{w}") -> str:
    """The evaluation of `model` at world size w (the corpus encoded over w ranks)."""
    return f"eval/{model}/ws{w}"


def eval_metrics(model: str = "gpus{w}", w: int | str = "{w}") -> str:
    return f"{eval_folder(model, w)}/{EVAL_METRICS}"


def eval_run(model: str = "gpus{w}", w: int | str = "{w}") -> str:
    return f"{eval_folder(model, w)}/{EVAL_RUN}"


def probe(n: int | str = "{n}") -> str:
    return f"probe/gpus{n}.json"


def comm(n: int | str = "{n}") -> str:
    return f"comm/ws{n}.json"


def sweep(b: int | str = "{b}", n: int | str = "{n}") -> str:
    return f"sweep/b{b}/gpus{n}.json"


def report_plot(name: str) -> str:
    return f"{REPORT}/plots/{name}.png"


def log(job: str) -> str:
    return f"{LOGS}/{job}.log"


def benchmark(job: str) -> str:
    """Snakemake's benchmark file of a job (its wall time), which the report's overhead reads."""
    return f"{BENCHMARKS}/{job}.tsv"


@dataclass(frozen=True)
class Run:
    """One run's folder, for tools that read what it wrote: Run("default").path(layout.MANIFEST)."""

    name: str
    results: Path = Path(RESULTS)

    @property
    def folder(self) -> Path:
        return Path(run_folder(self.name, self.results))

    def path(self, relative: str) -> Path:
        return self.folder / relative


COMPARISONS = "compare"  # the folder beside the runs' that `tier1 compare` writes to: no run may take its name


def comparison(runs: list[str], results: Path = Path(RESULTS)) -> Path:
    """Where `tier1 compare` writes runs side by side: beside the runs, not inside one."""
    return Path(results) / COMPARISONS / f"{'_vs_'.join(runs)}.md"


def named_path(run_name: str, name: str | None = None) -> str:
    """A run's folder, or one of its paths by its name here (REPORT_HTML, CHECK_GPUS, ...)."""
    if name is None:
        return run_folder(run_name)
    value = globals().get(name)
    if not name.isupper() or not isinstance(value, str) or name in ("RESULTS", "BASE", "REFERENCE"):
        raise SystemExit(f"tier1.layout: no path named {name!r}")
    return f"{run_folder(run_name)}/{value}"


def finished_runs(results: Path = Path(RESULTS)) -> list[str]:
    """The runs under `results` with a finished report."""
    return sorted(p.parent.parent.name for p in Path(results).glob(f"*/{REPORT_MD}"))

