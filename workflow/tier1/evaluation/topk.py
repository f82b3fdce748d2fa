"""Blockwise similarity and top-k, and the merge of top-k lists, with ties broken by index.

Candidates are ordered by (-score, document index). That order is total, so merging per-block
or per-rank lists in any grouping gives the ranking one process computes over the whole corpus.

A pair's score is its dot product in float64, rounded to float32. A float32 product rounds
differently for different block shapes (a shard's size changes the kernel), which would reorder
near-ties between world sizes; float64 errs by ~1e-16, far below float32's resolution, so the
rounded score is the same whatever the sharding. float64 is slow on GPUs (1/64 of the float32
rate on some), so a block is scored in float32 first, and only the documents whose float32 score
is near enough to the top to belong there are scored again in float64.
"""

from __future__ import annotations

import torch

from tier1.runtime import device as devices

NO_DOC = torch.iinfo(torch.long).max  # index of padding slots; sorts after every real document
TINY = torch.finfo(torch.float32).tiny


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


def gamma(n: int, u: float) -> float:
    """Higham's gamma_n = n*u / (1 - n*u): the relative error bound of n roundings by at most u."""
    assert n * u < 1, (n, u)
    return n * u / (1 - n * u)


def score_error(dim: int) -> float:
    """A bound on |float32 dot product - score|, per unit of ||q|| * ||d||, for `dim`-long vectors.

    float32: every term of the sum is rounded at most `dim` times (its product, then the additions
    it goes through), in any summation order (blocked, split-k, fused multiply-adds), so the error
    is <= gamma_dim(2^-24) * sum|q_i d_i| <= gamma * ||q|| ||d|| (Higham, Accuracy and Stability
    of Numerical Algorithms, 3.1). The score: its float64 sum errs by gamma_dim(2^-53) the same way
    (float32 products are exact in float64), and rounding it to float32 adds 2^-24 of its size.
    The float64 term is counted twice; the second covers the float64 arithmetic that applies this.
    """
    u32, u64 = 2.0 ** -24, 2.0 ** -53
    g32, g64 = gamma(dim, u32), gamma(dim, u64)
    return g32 + 2 * g64 + u32 * (1 + g64)


def _at_most(x: torch.Tensor) -> torch.Tensor:
    """A float32 below float64 `x` and below the exact value that x is a rounding of."""
    y = x.float()
    return torch.nextafter(y, torch.full_like(y, float("-inf")))


def _floor(kth: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """The float32 score a top-k document reaches at least, given a k-th best float32 score so far."""
    return _at_most(kth.double() - 2 * margin)


def _kth(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Per row, the k-th largest value; -inf where a row has fewer than k."""
    if scores.shape[1] < k:
        return torch.full(scores.shape[:1], float("-inf"), device=scores.device)
    return scores.topk(k, dim=1, sorted=False).values.amin(1)  # amin: min(1) is erratically slow on CPU


def _near_top(scores: torch.Tensor, start: int, floor: torch.Tensor, k: int, margin: torch.Tensor):
    """A block's (float32 score, position in docs) pairs that may be top-k, padded with (-inf, -1).

    Kept: scores at or above `floor`, and (where the block has more than k of those, as the
    first block does) at or above the floor the block's own k-th best gives.
    """
    keep = scores >= floor[:, None]
    if int(keep.sum(1).max()) > k:
        floor = torch.maximum(floor, _floor(_kth(scores, k), margin))
        keep = scores >= floor[:, None]
    counts = keep.sum(1)
    row, col = keep.nonzero(as_tuple=True)  # row-major: each row's entries are consecutive
    slot = torch.arange(len(row), device=scores.device) - (counts.cumsum(0) - counts)[row]
    values = torch.full((len(scores), int(counts.max())), float("-inf"), device=scores.device)
    pos = torch.full(values.shape, -1, dtype=torch.long, device=scores.device)
    values[row, slot], pos[row, slot] = scores[row, col], col + start
    return values, pos


def _compact(scores: torch.Tensor, pos: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The kept (score, position) pairs of each row, padded with (-inf, -1) to the longest row."""
    cols = keep.to(torch.uint8).topk(int(keep.sum(1).max()), dim=1, sorted=False).indices
    drop = ~keep.gather(1, cols)
    return scores.gather(1, cols).masked_fill_(drop, float("-inf")), pos.gather(1, cols).masked_fill_(drop, -1)


def _rescore(queries: torch.Tensor, docs: torch.Tensor, pos: torch.Tensor, budget: int) -> torch.Tensor:
    """The scores (float64 products rounded to float32) of each query with docs[pos]."""
    scores = torch.empty(pos.shape, device=pos.device)
    # Candidates are gathered in float32 and float64, 12 bytes an entry: budget/3 entries at a
    # time keep within the memory of a float32 block of scores (4 bytes x budget).
    step = max(1, budget // (3 * max(1, pos.shape[1] * docs.shape[1])))
    for s in range(0, pos.shape[0], step):
        gathered = docs[pos[s: s + step].clamp(min=0)].double()
        scores[s: s + step] = torch.bmm(gathered, queries[s: s + step].double().unsqueeze(2)).squeeze(2).float()
    return scores


def search(queries: torch.Tensor, docs: torch.Tensor, doc_index: torch.Tensor, k: int, block_size: int,
           exclude: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k documents per query, computing at most queries x block_size scores at a time.

    `doc_index` holds the global corpus index of each row of `docs`; `exclude[q]` is a document
    index query q must never retrieve (or -1), BEIR's rule for a document that is the query.

    Blocks are scored in float32, and each query keeps the documents whose float32 score is at
    least the k-th best so far minus 2 * margin, where margin bounds |float32 score - score|.
    That drops no top-k document: with F the k-th best float32 score of all documents, k of them
    score >= F - margin, so a top-k document does too and its float32 score is >= F - 2 * margin,
    while a k-th best so far is <= F. The kept documents are then scored in float64 and ranked.
    """
    n_queries, dim = queries.shape
    device = queries.device
    if n_queries == 0 or docs.shape[0] == 0:
        return empty(n_queries, k, device)
    doc_index = doc_index.to(device)
    d_norm = max(torch.linalg.vector_norm(docs[s: s + block_size], dim=1, dtype=torch.float64).max()
                 for s in range(0, docs.shape[0], block_size))
    # Products and sums that underflow (or are flushed to zero) lose at most TINY each, for
    # entries <= 1 as in unit vectors; the per-pair bound uses the largest document norm.
    margin = score_error(dim) * torch.linalg.vector_norm(queries, dim=1, dtype=torch.float64) * d_norm + 2 * dim * TINY
    q32 = queries.float()
    kept = torch.empty(n_queries, 0, device=device), torch.empty(n_queries, 0, dtype=torch.long, device=device)
    for start in range(0, docs.shape[0], block_size):
        block = docs[start: start + block_size]
        with devices.ieee_fp32_matmul():  # TF32 would void the bound
            scores = q32 @ block.float().T
        if exclude is not None:
            index = doc_index[start: start + block_size]
            scores.masked_fill_(index.unsqueeze(0) == exclude.unsqueeze(1), float("-inf"))
        new = _near_top(scores, start, _floor(_kth(kept[0], k), margin), k, margin)
        del scores
        scores, pos = torch.cat([kept[0], new[0]], 1), torch.cat([kept[1], new[1]], 1)
        kept = _compact(scores, pos, (pos >= 0) & (scores >= _floor(_kth(scores, k), margin)[:, None]))

    pos = kept[1]
    exact = _rescore(queries, docs, pos, n_queries * block_size)
    ids = doc_index[pos.clamp(min=0)]
    if exclude is not None:
        exact.masked_fill_(ids == exclude.unsqueeze(1), float("-inf"))
    padding = pos < 0
    return merge(empty(n_queries, k, device), (exact.masked_fill_(padding, float("-inf")), ids.masked_fill_(padding, NO_DOC)), k)
