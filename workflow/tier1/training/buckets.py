"""Length buckets: one side of a batch encoded in length-sorted parts, each padded only to the
ladder's rung above its own longest text.

A batch padded to its longest text computes on every padding position. Docstring anchors are short
and uneven (on the default data, 32% of an anchor batch's positions are text), so most of that
work is wasted. Cut into parts of similar length, the same texts cost far fewer positions (72% text
in four parts). The batch itself, its loss and its negatives are unchanged: the parts' embeddings
are put back in batch order before the loss, and with the attention mask a text's embedding does
not depend on the padding around it. Widths come from a short ladder (tier1.encoder.shapes), so a run
meets a small, known set of shapes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tier1.encoder import shapes
from tier1.encoder.bert import Bert
from tier1.encoder.packed_ids import PackedIds
from tier1.runtime import device as devices

MIN_ROWS = 8  # below this many texts a part costs more in per-call overhead than padding saves


@dataclass(frozen=True)
class LengthBuckets:
    """Parts in ascending length; `inverse[i]` is the row of batch item i in the parts' concatenation.
    `padded[j]`: whether part j holds any padding (known from the lengths, never asked of a tensor)."""

    parts: tuple[dict[str, torch.Tensor], ...]
    inverse: torch.Tensor
    padded: tuple[bool, ...]
    real_tokens: int

    def to(self, device: torch.device) -> LengthBuckets:
        """On `device` (devices.to_device: on a GPU without blocking the host)."""
        if device.type == "cpu":
            return self
        move = devices.to_device
        return LengthBuckets(tuple({k: move(v, device) for k, v in p.items()} for p in self.parts),
                             move(self.inverse, device), self.padded, self.real_tokens)

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """(texts, padded width) of each part."""
        return [tuple(p["input_ids"].shape) for p in self.parts]


def part_bounds(n_rows: int, n_parts: int) -> list[int]:
    k = max(1, min(n_parts, n_rows // MIN_ROWS))
    return [round(i * n_rows / k) for i in range(k + 1)]


def ranked(lengths: np.ndarray) -> np.ndarray:
    """Batch rows by (length, position): the parts are the same on every call."""
    return np.argsort(lengths, kind="stable")


def planned_parts(lengths: np.ndarray, n_parts: int, rungs: tuple[int, ...]) -> list[tuple[int, int, bool]]:
    """(rows, width, padded) of each part `bucket` makes of a batch with these text lengths, from
    the lengths alone (the parts a timed window will meet, listed before it opens)."""
    sorted_lengths = lengths[ranked(lengths)]
    bounds = part_bounds(len(lengths), n_parts)
    out = []
    for a, b in zip(bounds, bounds[1:]):
        w = shapes.width(int(sorted_lengths[b - 1]), rungs)
        out.append((b - a, w, bool(int(sorted_lengths[a]) < w)))
    return out


def planned_shapes(lengths: np.ndarray, n_parts: int, rungs: tuple[int, ...]) -> list[tuple[int, int]]:
    """The (rows, width) of each part `bucket` makes of a batch with these text lengths."""
    return [(rows, w) for rows, w, _ in planned_parts(lengths, n_parts, rungs)]


def masked(padded: bool, device: torch.device) -> bool:
    """Whether a part runs with its attention mask: always on a GPU; on a CPU only when it holds
    padding (unmasked attention is faster there, and the answer comes from the lengths)."""
    return padded or device.type != "cpu"


def bucket(ids: PackedIds, batch, pad_id: int, n_parts: int, rungs: tuple[int, ...]) -> LengthBuckets:
    """The rows `batch` of `ids` in up to `n_parts` length-sorted parts of at least MIN_ROWS
    texts, each padded to the lowest rung of `rungs` that holds its longest text."""
    batch = np.asarray(batch, dtype=np.int64)
    lengths = ids.lengths[batch]
    order = ranked(lengths)
    bounds = part_bounds(len(batch), n_parts)
    parts, padded = [], []
    for a, b in zip(bounds, bounds[1:]):
        rows = order[a:b]
        w = shapes.width(int(lengths[rows[-1]]), rungs)
        input_ids, mask = ids.pad(batch[rows], w, pad_id)
        parts.append({"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask)})
        padded.append(bool(int(lengths[rows].min()) < w))
    inverse = np.empty(len(batch), dtype=np.int64)
    inverse[order] = np.arange(len(batch))
    return LengthBuckets(tuple(parts), torch.from_numpy(inverse), tuple(padded),
                         int(np.minimum(lengths, rungs[-1]).sum()))


def encode(encoder: torch.nn.Module, part: dict[str, torch.Tensor], padded: bool,
           words: torch.Tensor | None = None) -> torch.Tensor:
    """One part's embeddings. On a CPU a part without padding goes without its mask: attention
    runs faster unmasked there, and the answer came from the lengths, not from the device.
    `words`: the part's word vectors, already looked up (`embed`)."""
    mask = part["attention_mask"] if masked(padded, part["input_ids"].device) else None
    if words is None:
        return encoder(input_ids=part["input_ids"], attention_mask=mask)
    return encoder(input_ids=None, attention_mask=mask, inputs_embeds=words)


def warm_shapes(encoder: torch.nn.Module, todo, pad_id: int, device: torch.device, dtype: torch.dtype | None,
                backward: bool) -> None:
    """One untimed forward (and with `backward`, backward) of each (rows, width) shape in `todo`
    on a batch of padding, its last column masked as a ladder-padded part may be (the masked
    path): on a GPU each shape's kernel choice and set-up, paid before a timed window."""
    for rows, width in todo:
        ids = torch.full((rows, width), pad_id, dtype=torch.long, device=device)
        mask = torch.ones((rows, width), dtype=torch.long, device=device)
        mask[:, -1] = 0
        with devices.autocast(device, dtype):
            out = encoder(input_ids=ids, attention_mask=mask)
        if backward:
            out.float().sum().backward()


def warm_parts(encoder: torch.nn.Module, todo, pad_id: int, device: torch.device, dtype: torch.dtype | None,
               grad_modes: tuple[bool, ...] = (True,), root: torch.nn.Module | None = None) -> None:
    """One untimed pass of each (rows, width, padded) part in `todo` through the training step's
    own path (`embed`: the shared word lookup, then the encoder on word vectors, masked as
    `masked` says), on a batch of padding: with grad, forward and backward; without, the forward
    a cached accumulation step runs first. Under torch.compile each of these is a graph of its
    own, compiled here rather than inside the timed window; on a GPU, each shape's kernel set-up.
    `root`: the pair encoder to enter through instead of the bare encoder (a sharded model gathers
    its parameters in its root's hooks; every rank then passes the same `todo`)."""
    for rows, width, padded in todo:
        ids = torch.full((rows, width), pad_id, dtype=torch.long, device=device)
        mask = torch.ones((rows, width), dtype=torch.long, device=device)
        if padded:
            mask[:, -1] = 0
        side = LengthBuckets(({"input_ids": ids, "attention_mask": mask},), torch.arange(rows, device=device),
                             (padded,), 0)
        for grad in grad_modes:
            with torch.set_grad_enabled(grad), devices.autocast(device, dtype):
                (out,) = embed(encoder, side) if root is None else root(side)
            if grad:
                out.float().sum().backward()


def embed(encoder: torch.nn.Module, *sides: LengthBuckets | dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """Each side's embeddings in batch order, from length buckets or from one padded batch.

    With tier1's BERT every part of every side looks its words up in one call: the word
    embeddings' gradient is then one dense (vocabulary x hidden) tensor per step, not one per part,
    each zero-filled and summed (8 parts on MiniLM's 30522 x 384 table: 153 ms of lookups and their
    backward against 16 ms in one call on this CPU, docs/reproduce/step_memory.py lookups). The vectors are those each part's own lookup
    gives. transformers' models look up per part: some derive positions from the ids
    (RoBERTa's skip the padding), which word vectors alone do not carry."""
    parts = [(part, padded) for side in sides for part, padded in _parts(side)]
    words = [None] * len(parts)
    if isinstance(getattr(encoder, "transformer", None), Bert):
        ids = [part["input_ids"] for part, _ in parts]
        table = encoder.transformer.get_input_embeddings()
        vectors = table(torch.cat([i.reshape(-1) for i in ids])).split([i.numel() for i in ids])
        words = [v.view(*i.shape, -1) for v, i in zip(vectors, ids)]
    rows = [encode(encoder, part, padded, w) for (part, padded), w in zip(parts, words)]
    out = []
    for side in sides:
        n = len(side.parts) if isinstance(side, LengthBuckets) else 1
        side_rows, rows = rows[:n], rows[n:]
        if not isinstance(side, LengthBuckets):
            out.append(side_rows[0])
            continue
        # One part is length-sorted too, so its gather stays: in batch order the texts would draw
        # other rows' dropout masks and the losses would change. Only the copy a cat of one makes goes.
        joined = side_rows[0] if n == 1 else torch.cat(side_rows)
        out.append(joined[side.inverse])
    return out


def _parts(side: LengthBuckets | dict[str, torch.Tensor]) -> list[tuple[dict[str, torch.Tensor], bool]]:
    if isinstance(side, dict):
        return [(side, True)]
    return list(zip(side.parts, side.padded))
