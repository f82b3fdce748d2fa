"""metrics.json of the evaluate stage: one model's retrieval quality and encoding times at one
world size."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tier1.records.stamped import Stamped


@dataclass(frozen=True)
class EvaluationRecord(Stamped):
    KIND = "evaluation"
    VERSION = 2  # 2: ndcg10_per_query (the same-model verdict's noise of the test set)

    stage: str
    model: str
    model_head: dict[str, Any]
    max_seq_length: int
    world_size: int
    started_at: str
    finished_at: str | None
    metrics: dict[str, float]           # ndcg@10, mrr@10, ... (tier1.evaluation.metrics)
    ndcg10_per_query: dict[str, float]  # query id -> nDCG@10, for paired comparisons of two models
    queries: int
    queries_judged: int
    documents: int
    wall_time_s: float
    wall_times_s: list[float]
    documents_per_s: float | None
    timings_s: dict[str, Any]
    precision: str
    shapes: dict[str, Any]
    encoder: dict[str, str]
    disturbance: dict[str, Any]
    marks: list[str]
    ranks: list[dict[str, Any]]
    config: dict[str, Any]
