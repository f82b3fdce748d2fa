"""What both sides of the benchmark are given: the same model, pairs, texts and settings.

Each side records `fingerprint()` of what it actually fed its library, so compare.json shows
(and a test checks) that the two sides measured the same work.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from tier1.data.sources import read_jsonl
from tier1.encoder.token_cache import doc_text

RECIPES = ("matched", "defaults", "host_overhead")


@dataclass(frozen=True)
class Workload:
    model: str  # a local model folder (resolved before the sides start)
    pairs: str  # train.jsonl
    corpus: str  # corpus.jsonl: the texts to encode
    steps: int  # training steps per measurement; the first is warm-up, the rest are timed
    batch_size: int
    max_seq_length: int
    precision: str  # "fp32" or "bf16" (tier1's autocast; sentence-transformers' bf16 under "matched")
    texts: int  # how many corpus texts to encode
    eval_batch_size: int
    learning_rate: float
    warmup_ratio: float
    weight_decay: float
    loss_scale: float
    seed: int
    threads: int
    length_buckets: int | str = "auto"  # tier1's own (sentence-transformers pads each batch to its longest text)
    pad_widths: list[int] | str = "auto"  # tier1's width ladder
    # "matched": sentence-transformers runs tier1's recipe (precision, no gradient clipping);
    # "defaults": its own defaults (fp32, gradient clipping at 1.0), tier1 unchanged;
    # "host_overhead": "matched" with a tiny model (tier1.bench.tiny), where a step is host work.
    recipe: str = "matched"
    encoder: str = "auto"  # the config key: whose code runs tier1's side (tier1.encoder.model.load)
    # timed encoding passes per process, the median kept: one pass of the CPU default is ~4 s, and
    # one pass per process over 3 processes put the sides within noise where 15 showed tier1 7%
    # faster (docs/performance.md)
    encode_passes: int = 3

    def __post_init__(self) -> None:
        if self.steps < 2:
            raise ValueError("bench needs at least 2 training steps: the first is not timed")
        if isinstance(self.pad_widths, list | tuple):
            object.__setattr__(self, "pad_widths", list(self.pad_widths))
        if self.encode_passes < 1:
            raise ValueError("bench needs at least 1 timed encoding pass")
        if self.recipe not in RECIPES:
            raise ValueError(f"recipe {self.recipe!r} is not one of {RECIPES}")

    @property
    def n_pairs(self) -> int:
        return self.steps * self.batch_size

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Workload:
        return cls(**json.loads(text))


def training_pairs(w: Workload) -> list[dict[str, str]]:
    pairs = read_jsonl(Path(w.pairs))
    if len(pairs) < w.n_pairs:
        raise ValueError(f"{w.pairs} has {len(pairs)} pairs; {w.steps} steps of {w.batch_size} need {w.n_pairs}")
    return pairs[: w.n_pairs]


def encode_texts(w: Workload) -> list[str]:
    docs = read_jsonl(Path(w.corpus))
    return [doc_text(d) for d in docs[: w.texts]]


def bench_device():
    """The one device both sides measure on: the first GPU, else the CPU."""
    import torch

    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def short_precision(dtype) -> str:
    """"bf16" or "fp32", as the config spells them, for an autocast dtype (None: fp32)."""
    import torch

    return "bf16" if dtype == torch.bfloat16 else "fp32"


def digest(items) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint(w: Workload, anchors: list[str], positives: list[str], texts: list[str], device: str,
                threads: int, precision: str, **settings) -> dict:
    """What one side fed its library: the data's digests and the settings it really used."""
    return {
        "pairs": digest([anchors, positives]), "n_pairs": len(anchors), "texts": digest(texts), "n_texts": len(texts),
        "model": w.model, "device": device, "threads": threads, "precision": precision,
        "steps": w.steps, "batch_size": w.batch_size, "max_seq_length": w.max_seq_length,
        "eval_batch_size": w.eval_batch_size, **settings,
    }

