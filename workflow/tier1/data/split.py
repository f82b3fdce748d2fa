"""A deterministic train / test split with no pair in both, and the BEIR form of the test side."""

from __future__ import annotations

import random

from tier1.config import ConfigError
from tier1.data.sources import BeirSet


def shuffled(items: list, seed: int, key=None) -> list:
    """A seeded permutation that does not depend on the input order (sorted first by `key`)."""
    order = sorted(items, key=key)
    random.Random(seed).shuffle(order)
    return order


def split_pairs(pairs: list[dict[str, str]], train_samples: int, test_samples: int, seed: int,
                ) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Shuffle with `seed`, then take the test pairs first and the training pairs after them."""
    if len(pairs) < test_samples + 1:
        raise ConfigError(
            f"test_samples: {test_samples} asked for, but the dataset has only {len(pairs)} usable pairs "
            f"(one or more must be left to train on); lower test_samples or give more pairs"
        )
    order = shuffled(pairs, seed, key=lambda p: p["id"])
    test = order[:test_samples]
    train = order[test_samples: test_samples + train_samples]
    return train, test


def beir_from_pairs(test: list[dict[str, str]]) -> BeirSet:
    # Query ids differ from document ids so that BEIR's "ignore identical ids" rule never
    # removes the right answer.
    corpus = {p["id"]: {"title": "", "text": p["positive"]} for p in test}
    queries = {f"q:{p['id']}": p["anchor"] for p in test}
    qrels = {f"q:{p['id']}": {p["id"]: 1} for p in test}
    return BeirSet(corpus, queries, qrels)


def sample_queries(beir: BeirSet, test_samples: int, seed: int) -> BeirSet:
    """Cap a ready-made BEIR set to `test_samples` judged queries; the corpus stays whole."""
    judged = [q for q in beir.qrels if q in beir.queries]
    if not judged:
        raise ConfigError("dataset: the BEIR folder's qrels/test.tsv judges none of its queries")
    judged = shuffled(judged, seed)
    keep = sorted(judged[:test_samples])
    return BeirSet(beir.corpus, {q: beir.queries[q] for q in keep}, {q: beir.qrels[q] for q in keep})
