"""Length buckets and the width ladder: fewer padded positions, few shapes, and the same
embeddings, loss and gradients as one batch padded to its longest text."""

import numpy as np
import pytest
import torch

from tier1.encoder import model, shapes
from tier1.encoder.packed_ids import PackedIds
from tier1.encoder.token_cache import collate, pair_tokens
from tier1.training.buckets import MIN_ROWS, bucket, embed, encode, planned_shapes
from tier1.training.loss import in_batch_negatives_loss

from helpers import real_pairs

LONGEST = tuple(range(1, 33))  # a rung at every width: each part padded to its own longest text


def _ids(tiny_model, n):
    _, tokenizer = model.load(str(tiny_model))
    return pair_tokens(tokenizer, real_pairs(n), 32)


def test_packed_padding_equals_the_row_by_row_collation(tiny_model):
    rows = _ids(tiny_model, 40).anchor
    packed = PackedIds.from_rows(rows)
    batch = [5, 0, 39, 17]
    ids, mask = packed.pad(np.array(batch), 40, 0)
    one = collate(rows, batch, 0)
    w = one["input_ids"].shape[1]
    assert (ids[:, :w] == one["input_ids"].numpy()).all() and (mask[:, :w] == one["attention_mask"].numpy()).all()
    assert (ids[:, w:] == 0).all() and (mask[:, w:] == 0).all()
    assert PackedIds.from_rows([]).pad(np.zeros(0, dtype=np.int64), 8, 0)[0].shape == (0, 8)


def test_parts_are_sorted_whole_and_smaller(tiny_model):
    ids = _ids(tiny_model, 40).anchor
    packed = PackedIds.from_rows(ids)
    batch = list(range(3, 35))  # 32 rows
    b = bucket(packed, batch, 0, 4, LONGEST)
    assert [rows for rows, _ in b.shapes] == [8, 8, 8, 8]
    widths = [w for _, w in b.shapes]
    assert widths == sorted(widths)
    assert sorted(b.inverse.tolist()) == list(range(32))
    one = collate(ids, batch, 0)
    assert b.real_tokens == int(one["attention_mask"].sum())
    assert sum(r * w for r, w in b.shapes) < one["attention_mask"].numel()
    assert b.padded == tuple(bool((p["attention_mask"] == 0).any()) for p in b.parts)
    # each batch row is found, unpadded, at its inverse position in the parts' concatenation
    rows = [r for part in b.parts for r in zip(part["input_ids"].tolist(), part["attention_mask"].tolist())]
    for i, item in enumerate(batch):
        tokens, mask = rows[int(b.inverse[i])]
        assert [t for t, m in zip(tokens, mask) if m] == ids[item]


def test_widths_come_from_the_ladder_and_are_known_ahead(tiny_model):
    packed = PackedIds.from_rows(_ids(tiny_model, 64).anchor)
    rungs = shapes.ladder("auto", 32, "cpu")
    assert rungs == (16, 32)
    assert shapes.ladder([8, 24, 64], 32, "cuda") == (8, 24, 32) and shapes.ladder("auto", 256, "cuda") == (64, 128, 192, 256)
    met = set()
    for start in range(0, 64, 16):
        batch = list(range(start, start + 16))
        b = bucket(packed, batch, 0, 2, rungs)
        assert b.shapes == planned_shapes(packed.lengths[batch], 2, rungs)
        met.update(b.shapes)
    assert {w for _, w in met} <= set(rungs) and {r for r, _ in met} == {8}


def test_small_batches_stay_whole(tiny_model):
    ids = PackedIds.from_rows(_ids(tiny_model, 32).anchor)
    assert len(bucket(ids, list(range(2 * MIN_ROWS - 1)), 0, 4, LONGEST).parts) == 1
    assert len(bucket(ids, list(range(2 * MIN_ROWS)), 0, 4, LONGEST).parts) == 2
    assert len(bucket(ids, list(range(32)), 0, 1, LONGEST).parts) == 1


def _step(tiny_model, tokens, batch, parts, rungs):
    torch.manual_seed(0)
    encoder, _ = model.load(str(tiny_model))
    encoder.train()  # the tiny model has no dropout: train mode changes nothing else
    a, p = embed(encoder, bucket(PackedIds.from_rows(tokens.anchor), batch, tokens.pad_id, parts, rungs),
                 bucket(PackedIds.from_rows(tokens.positive), batch, tokens.pad_id, parts, rungs))
    loss = in_batch_negatives_loss(a, p, 20.0, gather=False)
    loss.backward()
    return a.detach(), loss.item(), [q.grad.clone() for q in encoder.parameters() if q.grad is not None]


@pytest.mark.parametrize("parts, rungs", [(4, LONGEST), (1, (16, 32)), (4, (16, 32)), (4, (32,)), (2, (8, 24, 32))])
def test_same_embeddings_loss_and_gradients(tiny_model, parts, rungs):
    """Against one batch padded to its longest text: length buckets and the ladder's padding
    change nothing but time."""
    tokens = _ids(tiny_model, 32)
    batch = list(range(32))
    a1, l1, g1 = _step(tiny_model, tokens, batch, 1, LONGEST)
    a2, l2, g2 = _step(tiny_model, tokens, batch, parts, rungs)
    torch.testing.assert_close(a2, a1, atol=1e-6, rtol=1e-5)
    assert abs(l2 - l1) < 1e-5
    assert len(g1) == len(g2)
    for x, y in zip(g1, g2):
        torch.testing.assert_close(y, x, atol=1e-6, rtol=1e-4)
    # and the padded batch itself gives the same embeddings
    encoder, _ = model.load(str(tiny_model))
    with torch.no_grad():
        torch.testing.assert_close(encoder(**collate(tokens.anchor, batch, tokens.pad_id)), a1, atol=1e-6, rtol=1e-5)


def test_one_word_lookup_per_step_with_the_same_embeddings_and_gradients(tiny_model):
    """Both sides' parts look their words up in one call (one dense word-embedding gradient per
    step, not one per part); embeddings and gradients equal those of a lookup per part."""
    tokens = _ids(tiny_model, 32)
    batch = list(range(32))
    sides = [bucket(PackedIds.from_rows(ids), batch, tokens.pad_id, 4, (16, 32)) for ids in (tokens.anchor, tokens.positive)]

    def step(joint: bool):
        torch.manual_seed(0)
        encoder, _ = model.load(str(tiny_model))
        table = encoder.transformer.get_input_embeddings()
        calls = []
        table.register_forward_hook(lambda *args: calls.append(1))
        if joint:
            a, p = embed(encoder, *sides)
        else:  # each part through the encoder on its own ids, as before
            a, p = ([encode(encoder, part, padded) for part, padded in zip(s.parts, s.padded)] for s in sides)
            a, p = (torch.cat(rows)[s.inverse] for rows, s in zip((a, p), sides))
        in_batch_negatives_loss(a, p, 20.0, gather=False).backward()
        return a.detach(), len(calls), [q.grad.clone() for q in encoder.parameters() if q.grad is not None]

    a1, calls1, g1 = step(joint=False)
    a2, calls2, g2 = step(joint=True)
    assert calls1 == 8 and calls2 == 1  # four parts per side
    assert torch.equal(a2, a1)  # the lookup is a gather: the forward is unchanged bit for bit
    assert len(g1) == len(g2)
    for x, y in zip(g1, g2):  # only the word table's summation order differs
        torch.testing.assert_close(y, x, atol=1e-7, rtol=1e-5)


def test_one_part_is_put_back_in_batch_order_without_a_copy(tiny_model, monkeypatch):
    """A single part is length-sorted as well (in batch order its texts would draw other rows'
    dropout masks), so it is gathered back, but not first copied by a cat of one tensor: the
    only cat left is the shared word lookup's."""
    tokens = _ids(tiny_model, 32)
    sides = [bucket(PackedIds.from_rows(ids), list(range(32)), tokens.pad_id, 1, (16, 32))
             for ids in (tokens.anchor, tokens.positive)]
    assert all(len(s.parts) == 1 and s.inverse.tolist() != list(range(32)) for s in sides)
    encoder, _ = model.load(str(tiny_model))
    with torch.no_grad():
        expected = [torch.cat([encode(encoder, s.parts[0], s.padded[0])])[s.inverse] for s in sides]
        cats = []
        real_cat = torch.cat
        monkeypatch.setattr(torch, "cat", lambda *a, **k: cats.append(1) or real_cat(*a, **k))
        got = embed(encoder, *sides)
    assert len(cats) == 1
    for x, y in zip(got, expected):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)
