"""Blockwise similarity and top-k, and the merge of top-k lists, with ties broken by index.

Candidates are ordered by (-score, document index). That order is total, so merging per-block
or per-rank lists in any grouping gives the ranking one process computes over the whole corpus.
"""

from __future__ import annotations

import torch

NO_DOC = torch.iinfo(torch.long).max  # index of padding slots; sorts after every real document


def order_candidates(scores: torch.Tensor, index: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the k best (score desc, then index asc) of the given candidates."""
    by_index = torch.argsort(index, dim=1, stable=True)
    scores, index = scores.gather(1, by_index), index.gather(1, by_index)
    by_score = torch.argsort(scores, dim=1, descending=True, stable=True)
    keep = by_score[:, :k]
    return scores.gather(1, keep), index.gather(1, keep)


def empty(n_queries: int, k: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (torch.full((n_queries, k), float("-inf"), device=device),
            torch.full((n_queries, k), NO_DOC, dtype=torch.long, device=device))


def merge(a: tuple[torch.Tensor, torch.Tensor], b: tuple[torch.Tensor, torch.Tensor], k: int):
    return order_candidates(torch.cat([a[0], b[0]], 1), torch.cat([a[1], b[1]], 1), k)


def search(queries: torch.Tensor, docs: torch.Tensor, doc_index: torch.Tensor, k: int, block_size: int,
           exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k documents per query, computing at most queries x block_size scores at a time.

    `doc_index` holds the global corpus index of each row of `docs`; `exclude[q]` is a document
    index query q must never retrieve (or -1), BEIR's rule for a document that is the query.
    """
    best = empty(queries.shape[0], k, queries.device)
    for start in range(0, docs.shape[0], block_size):
        block = docs[start: start + block_size]
        index = doc_index[start: start + block_size].to(queries.device)
        # float32 matrix products round differently for different block shapes (a shard's
        # size changes the kernel), which would reorder near-ties between world sizes. In
        # float64 that difference is ~1e-16, far below float32's resolution, so rounding the
        # result to float32 gives the same score for a pair whatever the sharding.
        scores = (queries.double() @ block.double().T).float()
        if exclude is not None:
            scores.masked_fill_(index.unsqueeze(0) == exclude.unsqueeze(1), float("-inf"))
        best = merge(best, (scores, index.unsqueeze(0).expand_as(scores)), k)
    return best
