"""Retrieval metrics over a ranking, with trec_eval's definitions.

nDCG@k uses linear gains (the judged grade) and log2 discounts; MRR@k, Recall@k and MAP@k
count a document as relevant when its grade is > 0. A query with no relevant document is
left out of the averages, as trec_eval does.
"""

from __future__ import annotations

import math

METRICS = ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100", "map@100")


def ndcg(ranked: list[str], grades: dict[str, int], k: int) -> float:
    dcg = sum(grades.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def mrr(ranked: list[str], grades: dict[str, int], k: int) -> float:
    for i, d in enumerate(ranked[:k]):
        if grades.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall(ranked: list[str], grades: dict[str, int], k: int) -> float:
    relevant = {d for d, g in grades.items() if g > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def average_precision(ranked: list[str], grades: dict[str, int], k: int) -> float:
    n_relevant = sum(1 for g in grades.values() if g > 0)
    hits, total = 0, 0.0
    for i, d in enumerate(ranked[:k]):
        if grades.get(d, 0) > 0:
            hits += 1
            total += hits / (i + 1)
    return total / n_relevant


def per_query(ranking: dict[str, list[str]], qrels: dict[str, dict[str, int]]) -> dict[str, dict[str, float]]:
    out = {}
    for qid, grades in qrels.items():
        if not any(g > 0 for g in grades.values()):
            continue
        ranked = ranking.get(qid, [])
        out[qid] = {
            "ndcg@10": ndcg(ranked, grades, 10),
            "mrr@10": mrr(ranked, grades, 10),
            "recall@1": recall(ranked, grades, 1),
            "recall@10": recall(ranked, grades, 10),
            "recall@100": recall(ranked, grades, 100),
            "map@100": average_precision(ranked, grades, 100),
        }
    return out


def mean(per_q: dict[str, dict[str, float]]) -> dict[str, float]:
    if not per_q:
        return {m: 0.0 for m in METRICS}
    return {m: sum(v[m] for v in per_q.values()) / len(per_q) for m in METRICS}
