"""Our metrics against pytrec_eval (trec_eval's C code) and against hand-computed answers."""

from __future__ import annotations

import math
import random

import pytest

from tier1.evaluation import metrics

pytrec_eval = pytest.importorskip("pytrec_eval")

TREC = {"ndcg@10": "ndcg_cut_10", "recall@1": "recall_1", "recall@10": "recall_10",
        "recall@100": "recall_100", "map@100": "map_cut_100"}


def random_case(seed: int):
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(300)]
    qrels, ranking = {}, {}
    for q in range(60):
        qid = f"q{q}"
        judged = rng.sample(docs, rng.randint(1, 6))
        qrels[qid] = {d: rng.choice([0, 1, 2, 3]) for d in judged}
        if not any(qrels[qid].values()):
            qrels[qid][judged[0]] = 1
        ranking[qid] = rng.sample(docs, 150)
    return qrels, ranking


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_pytrec_eval(seed):
    qrels, ranking = random_case(seed)
    # Distinct descending scores, so trec_eval's own tie rules cannot reorder our ranking.
    run = {q: {d: float(len(r) - i) for i, d in enumerate(r)} for q, r in ranking.items()}
    ours = metrics.per_query(ranking, qrels)
    ref = pytrec_eval.RelevanceEvaluator(qrels, set(TREC.values()) | {"recip_rank"}).evaluate(run)
    run10 = {q: {d: float(10 - i) for i, d in enumerate(r[:10])} for q, r in ranking.items()}
    ref10 = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(run10)
    for qid in qrels:
        for name, trec in TREC.items():
            assert ours[qid][name] == pytest.approx(ref[qid][trec], abs=1e-6), (qid, name)
        assert ours[qid]["mrr@10"] == pytest.approx(ref10[qid]["recip_rank"], abs=1e-6)


def test_no_relevant_document_retrieved():
    got = metrics.per_query({"q": ["a", "b", "c"]}, {"q": {"z": 1}})["q"]
    assert got == {"ndcg@10": 0.0, "mrr@10": 0.0, "recall@1": 0.0, "recall@10": 0.0,
                   "recall@100": 0.0, "map@100": 0.0}


def test_several_relevant_documents():
    got = metrics.per_query({"q": ["a", "x", "b", "y"]}, {"q": {"a": 1, "b": 1, "c": 1}})["q"]
    assert got["mrr@10"] == 1.0
    assert got["recall@1"] == pytest.approx(1 / 3)
    assert got["recall@10"] == pytest.approx(2 / 3)
    assert got["map@100"] == pytest.approx((1 / 1 + 2 / 3) / 3)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert got["ndcg@10"] == pytest.approx(dcg / idcg)


def test_graded_relevance_uses_linear_gains():
    got = metrics.per_query({"q": ["b", "a"]}, {"q": {"a": 3, "b": 1}})["q"]
    dcg = 1 + 3 / math.log2(3)
    idcg = 3 + 1 / math.log2(3)
    assert got["ndcg@10"] == pytest.approx(dcg / idcg)
    assert got["mrr@10"] == 1.0


def test_relevant_beyond_the_cutoff_counts_for_recall_only():
    ranked = [f"x{i}" for i in range(10)] + ["a"]
    got = metrics.per_query({"q": ranked}, {"q": {"a": 1}})["q"]
    assert got["mrr@10"] == 0.0 and got["ndcg@10"] == 0.0 and got["recall@100"] == 1.0


def test_queries_without_relevant_documents_are_left_out():
    per_q = metrics.per_query({"q1": ["a"], "q2": ["a"]}, {"q1": {"a": 1}, "q2": {"a": 0}})
    assert set(per_q) == {"q1"}
