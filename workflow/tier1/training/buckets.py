"""Length buckets: one side of a batch encoded in length-sorted parts, each padded only to its own
longest text.

A batch padded to its longest text computes on every padding position. Docstring anchors are short
and uneven (on the default data, 32% of an anchor batch's positions are text), so most of that
work is wasted. Cut into parts of similar length, the same texts cost far fewer positions (72% text
in four parts). The batch itself, its loss and its negatives are unchanged: the parts' embeddings
are put back in batch order before the loss, and with the attention mask a text's embedding does
not depend on the padding around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tier1.token_cache import collate

MIN_ROWS = 8  # below this many texts a part costs more in per-call overhead than padding saves


@dataclass(frozen=True)
class LengthBuckets:
    """Parts in ascending length; `inverse[i]` is the row of batch item i in the parts' concatenation."""

    parts: tuple[dict[str, torch.Tensor], ...]
    inverse: torch.Tensor

    def to(self, device: torch.device) -> LengthBuckets:
        return LengthBuckets(tuple({k: v.to(device, non_blocking=True) for k, v in p.items()} for p in self.parts),
                             self.inverse.to(device, non_blocking=True))

    @property
    def shapes(self) -> list[tuple[int, int]]:
        """(texts, padded width) of each part."""
        return [tuple(p["attention_mask"].shape) for p in self.parts]

    @property
    def real_tokens(self) -> int:
        return sum(int(p["attention_mask"].sum()) for p in self.parts)


def bucket(ids: list[list[int]], batch: list[int], pad_id: int, n_parts: int) -> LengthBuckets:
    """The rows `batch` of `ids` in up to `n_parts` length-sorted parts of at least MIN_ROWS texts
    (ties by position, so the parts are the same on every call)."""
    k = max(1, min(n_parts, len(batch) // MIN_ROWS))
    ranked = sorted(range(len(batch)), key=lambda r: (len(ids[batch[r]]), r))
    bounds = [round(i * len(batch) / k) for i in range(k + 1)]
    chunks = [ranked[a:b] for a, b in zip(bounds, bounds[1:])]
    parts = tuple(collate(ids, [batch[r] for r in chunk], pad_id) for chunk in chunks)
    inverse = torch.empty(len(batch), dtype=torch.long)
    inverse[torch.tensor(ranked)] = torch.arange(len(batch))
    return LengthBuckets(parts, inverse)


def embed(encoder: torch.nn.Module, batch: LengthBuckets | dict[str, torch.Tensor]) -> torch.Tensor:
    """Embeddings in batch order, from length buckets or from one padded batch."""
    if isinstance(batch, dict):
        return encoder(**batch)
    rows = torch.cat([encoder(**part) for part in batch.parts])
    return rows[batch.inverse]
