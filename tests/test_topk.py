"""Blockwise top-k and the merge of shard top-k lists reproduce one full sort."""

from __future__ import annotations

import torch

from tier1.evaluation import sharding, topk


def full_ranking(q, d, k):
    scores = (q @ d.T).float()
    index = torch.arange(d.shape[0]).expand_as(scores)
    return topk.order_candidates(scores, index, k)


def test_blocks_give_the_one_block_result():
    torch.manual_seed(0)
    q, d = torch.randn(7, 16), torch.randn(301, 16)
    idx = torch.arange(301)
    one = topk.search(q, d, idx, 20, block_size=10_000)
    for block in (1, 7, 64, 300):
        got = topk.search(q, d, idx, 20, block_size=block)
        assert torch.equal(got[1], one[1]) and torch.equal(got[0], one[0]), block
    ref = full_ranking(q, d, 20)
    assert torch.equal(one[1], ref[1])


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


def test_fewer_documents_than_k_pads_with_no_doc():
    got = topk.search(torch.randn(3, 4), torch.randn(2, 4), torch.arange(2), 5, 8)
    assert (got[1][:, 2:] == topk.NO_DOC).all() and torch.isinf(got[0][:, 2:]).all()


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
