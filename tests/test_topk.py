"""Blockwise top-k and the merge of shard top-k lists reproduce one full sort in float64."""

from __future__ import annotations

import pytest
import torch

from tier1.evaluation import sharding, topk
from tier1.runtime import device as devices


def full_ranking(q, d, k, exclude=None):
    """Every score in float64, rounded to float32, and one sort: what search must return."""
    scores = (q.double() @ d.double().T).float()
    index = torch.arange(d.shape[0]).expand_as(scores)
    if exclude is not None:
        scores.masked_fill_(index == exclude.unsqueeze(1), float("-inf"))
    return topk.order_candidates(scores, index, k)


def unit(x):
    return x / x.norm(dim=1, keepdim=True)


def near_ties(seed=0, dim=384):
    """Queries near one vector, and documents that are tiny perturbations of it (or copies).

    Their scores differ by 1e-8 to 1e-5, mostly less than float32's error on a 384-long sum, so
    only the float64 scores order them; other documents are random.
    """
    g = torch.Generator().manual_seed(seed)
    base = unit(torch.randn(1, dim, generator=g))
    queries = unit(torch.cat([base + 0.05 * torch.randn(8, dim, generator=g), torch.randn(4, dim, generator=g)]))
    size = 10 ** (-8 + 3 * torch.rand(300, 1, generator=g))
    close = unit(base + size * torch.randn(300, dim, generator=g))
    docs = torch.cat([close, close[:20], unit(torch.randn(900, dim, generator=g))])
    docs = docs[torch.randperm(len(docs), generator=g)]
    exclude = torch.randint(-1, len(docs), (len(queries),), generator=g)
    return queries, docs, exclude


def assert_same(got, ref):
    assert torch.equal(got[1], ref[1]) and torch.equal(got[0], ref[0])


def test_blocks_give_the_one_block_result():
    torch.manual_seed(0)
    q, d = torch.randn(7, 16), torch.randn(301, 16)
    idx = torch.arange(301)
    one = topk.search(q, d, idx, 20, block_size=10_000)
    for block in (1, 7, 64, 300):
        got = topk.search(q, d, idx, 20, block_size=block)
        assert torch.equal(got[1], one[1]) and torch.equal(got[0], one[0]), block
    assert_same(one, full_ranking(q, d, 20))


@pytest.mark.parametrize("block", [37, 128, 500, 10_000])
def test_near_ties_rank_as_in_float64(block):
    q, d, exclude = near_ties()
    got = topk.search(q, d, torch.arange(len(d)), 100, block, exclude)
    assert_same(got, full_ranking(q, d, 100, exclude))


def test_random_shards_merge_to_the_float64_ranking():
    q, d, exclude = near_ties(seed=1)
    ref = full_ranking(q, d, 100, exclude)
    g = torch.Generator().manual_seed(2)
    for world in (2, 3, 5):
        rank_of = torch.randint(0, world, (len(d),), generator=g)  # uneven, interleaved shards
        merged = topk.empty(len(q), 100, torch.device("cpu"))
        for r in range(world):
            rows = (rank_of == r).nonzero().squeeze(1)
            block = int(torch.randint(16, 400, (1,), generator=g))
            merged = topk.merge(merged, topk.search(q, d[rows], rows, 100, block, exclude), 100)
        assert_same(merged, ref)


def test_float32_scores_alone_misorder_the_near_ties(monkeypatch):
    """Without the float64 scores the near-tie checks above fail: they are strict enough."""
    q, d, exclude = near_ties()
    ref = full_ranking(q, d, 100, exclude)
    spread = ref[0][:8, 0] - ref[0][:8, 99]
    assert (spread < topk.score_error(q.shape[1])).all()  # the top 100 lie within float32's error

    monkeypatch.setattr(topk, "_rescore", lambda queries, docs, pos, budget:
                        torch.bmm(docs[pos.clamp(min=0)], queries.unsqueeze(2)).squeeze(2))
    got = topk.search(q, d, torch.arange(len(d)), 100, 64, exclude)
    assert not torch.equal(got[1], ref[1])


def test_float32_error_stays_within_the_bound():
    q, d, _ = near_ties()
    gap = ((q @ d.T).double() - (q.double() @ d.double().T).float().double()).abs()
    assert 0 < gap.max() <= topk.score_error(q.shape[1])


def test_ties_break_by_document_index_whatever_the_sharding():
    q = torch.ones(2, 4)
    d = torch.ones(50, 4)  # every score ties
    d[10] *= 2             # one clear winner
    shards = [torch.tensor([i for i in range(50) if i % 3 == r]) for r in range(3)]
    merged = topk.empty(2, 8, torch.device("cpu"))
    for s in shards:
        merged = topk.merge(merged, topk.search(q, d[s], s, 8, block_size=4), 8)
    assert merged[1][0].tolist() == [10, 0, 1, 2, 3, 4, 5, 6]


def test_excluded_document_is_never_returned():
    q, d = torch.eye(4), torch.eye(4)
    got = topk.search(q, d, torch.arange(4), 2, 2, exclude=torch.tensor([0, -1, 2, -1]))
    assert 0 not in got[1][0].tolist() and got[1][1][0] == 1 and 2 not in got[1][2].tolist()


def test_excluded_near_tie_is_never_returned_but_the_rest_are():
    q, d, _ = near_ties()
    ref = full_ranking(q, d, 101)
    exclude = ref[1][:, 0]  # each query's best document
    got = topk.search(q, d, torch.arange(len(d)), 100, 128, exclude)
    assert (got[1] != exclude.unsqueeze(1)).all()
    assert torch.equal(got[1], ref[1][:, 1:])


def test_fewer_documents_than_k_pads_with_no_doc():
    got = topk.search(torch.randn(3, 4), torch.randn(2, 4), torch.arange(2), 5, 8)
    assert (got[1][:, 2:] == topk.NO_DOC).all() and torch.isinf(got[0][:, 2:]).all()


def test_matmul_precision_is_full_float32_inside_and_restored_after():
    backends = torch.backends.cuda.matmul, torch.backends.mkldnn.matmul
    before = [b.fp32_precision for b in backends]
    try:
        for b in backends:
            b.fp32_precision = "tf32"
        with devices.ieee_fp32_matmul():
            assert [b.fp32_precision for b in backends] == ["ieee", "ieee"]
        assert [b.fp32_precision for b in backends] == ["tf32", "tf32"]
    finally:
        for b, value in zip(backends, before):
            b.fp32_precision = value


@pytest.mark.gpu
def test_near_ties_on_gpu_with_tf32_allowed():
    q, d, exclude = near_ties()
    before = torch.backends.cuda.matmul.fp32_precision
    torch.backends.cuda.matmul.fp32_precision = "tf32"
    try:
        got = topk.search(q.cuda(), d.cuda(), torch.arange(len(d)), 100, 256, exclude.cuda())
    finally:
        torch.backends.cuda.matmul.fp32_precision = before
    assert_same((got[0].cpu(), got[1].cpu()), full_ranking(q, d, 100, exclude))


def test_batches_do_not_depend_on_world_size_and_cover_every_item_once():
    lengths = [5, 3, 9, 9, 1, 7, 2, 8, 4, 6, 3]
    batches = sharding.plan_batches(lengths, 3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for world in (1, 2, 3, 4, 8):
        shares = sharding.deal(batches, lengths, world)
        dealt = sorted(b for s in shares for b in s)
        assert dealt == list(range(len(batches))), world


def test_dealing_balances_tokens():
    lengths = list(range(1, 401))
    batches = sharding.plan_batches(lengths, 16)
    shares = sharding.deal(batches, lengths, 4)
    loads = [sum(sharding.batch_cost(batches[b], lengths) for b in s) for s in shares]
    assert max(loads) - min(loads) <= max(sharding.batch_cost(b, lengths) for b in batches)
