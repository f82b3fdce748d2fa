"""Length buckets: fewer padded positions, the same embeddings, loss and gradients as one padded batch."""

import torch

from tier1 import model
from tier1.token_cache import collate, pair_tokens
from tier1.training.buckets import MIN_ROWS, bucket, embed
from tier1.training.loss import in_batch_negatives_loss

from helpers import real_pairs


def _ids(tiny_model, n):
    _, tokenizer = model.load(str(tiny_model))
    return pair_tokens(tokenizer, real_pairs(n), 32)


def test_parts_are_sorted_whole_and_smaller(tiny_model):
    ids = _ids(tiny_model, 40).anchor
    batch = list(range(3, 35))  # 32 rows
    b = bucket(ids, batch, 0, 4)
    assert [rows for rows, _ in b.shapes] == [8, 8, 8, 8]
    widths = [w for _, w in b.shapes]
    assert widths == sorted(widths)
    assert sorted(b.inverse.tolist()) == list(range(32))
    one = collate(ids, batch, 0)
    assert b.real_tokens == int(one["attention_mask"].sum())
    assert sum(r * w for r, w in b.shapes) < one["attention_mask"].numel()
    # each batch row is found, unpadded, at its inverse position in the parts' concatenation
    rows = [r for part in b.parts for r in zip(part["input_ids"].tolist(), part["attention_mask"].tolist())]
    for i, item in enumerate(batch):
        tokens, mask = rows[int(b.inverse[i])]
        assert [t for t, m in zip(tokens, mask) if m] == ids[item]


def test_small_batches_stay_whole(tiny_model):
    ids = _ids(tiny_model, 32).anchor
    assert len(bucket(ids, list(range(2 * MIN_ROWS - 1)), 0, 4).parts) == 1
    assert len(bucket(ids, list(range(2 * MIN_ROWS)), 0, 4).parts) == 2
    assert len(bucket(ids, list(range(32)), 0, 1).parts) == 1


def test_same_embeddings_loss_and_gradients(tiny_model):
    tokens = _ids(tiny_model, 32)
    batch = list(range(32))
    results = []
    for parts in (1, 4):
        torch.manual_seed(0)
        encoder, _ = model.load(str(tiny_model))
        encoder.train()  # the tiny model has no dropout: train mode changes nothing else
        a = embed(encoder, bucket(tokens.anchor, batch, tokens.pad_id, parts))
        p = embed(encoder, bucket(tokens.positive, batch, tokens.pad_id, parts))
        loss = in_batch_negatives_loss(a, p, 20.0, gather=False)
        loss.backward()
        results.append((a.detach(), loss.item(), [q.grad.clone() for q in encoder.parameters() if q.grad is not None]))
    (a1, l1, g1), (a4, l4, g4) = results
    torch.testing.assert_close(a4, a1, atol=1e-6, rtol=1e-5)
    assert abs(l4 - l1) < 1e-5
    assert len(g1) == len(g4)
    for x, y in zip(g1, g4):
        torch.testing.assert_close(y, x, atol=1e-6, rtol=1e-4)
    # and the padded batch itself gives the same embeddings
    encoder, _ = model.load(str(tiny_model))
    with torch.no_grad():
        torch.testing.assert_close(encoder(**collate(tokens.anchor, batch, tokens.pad_id)), a1, atol=1e-6, rtol=1e-5)
