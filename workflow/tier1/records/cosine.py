"""The GPU check's embedding agreement (tier1.tools.gpu_summary cosine): how far bf16 autocast
moves the embeddings from plain fp32 on the same device."""

from __future__ import annotations

from dataclasses import dataclass

from tier1.records.base import Record


@dataclass(frozen=True)
class CosineRecord(Record):
    KIND = "cosine"

    model: str
    device: str
    texts: int
    max_seq_length: int
    min_cosine: float
    mean_cosine: float
