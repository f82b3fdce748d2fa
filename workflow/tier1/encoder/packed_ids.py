"""Token ids packed in one flat array, and batches padded from it in a few numpy operations.

A batch of ids lists padded row by row in Python costs a loop per row on the step's critical
path; packed once (every id in one array, row i at values[offsets[i]:offsets[i+1]]), any batch is
one gather and one comparison, at any padded width. numpy only: the tokenize stage imports this
without torch.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PackedIds:
    values: np.ndarray  # every id, row after row (int64)
    offsets: np.ndarray  # int64, len(rows) + 1

    @classmethod
    def from_rows(cls, rows: list[list[int]] | list[bytes], dtype: np.dtype = np.int64) -> PackedIds:
        """Rows of ints (or bytes) packed as `dtype` values; numpy refuses a value that overflows
        the dtype (OverflowError) rather than wrapping it."""
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(r) for r in rows], dtype=np.int64)
        values = np.fromiter(itertools.chain.from_iterable(rows), dtype=dtype, count=int(offsets[-1]))
        return cls(values, offsets)

    @functools.cached_property
    def lengths(self) -> np.ndarray:  # read several times per batch: computed once
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def pad(self, rows: np.ndarray, width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids, mask), each (len(rows), width) int64: the rows right-padded (or cut) to `width`."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, lengths = self.offsets[rows], self.lengths[rows]
        cols = np.arange(width, dtype=np.int64)
        mask = cols[None, :] < lengths[:, None]
        if len(self.values) == 0:
            return np.full(mask.shape, pad_id, dtype=np.int64), mask.astype(np.int64)
        where = np.minimum(starts[:, None] + cols[None, :], len(self.values) - 1)
        ids = np.where(mask, self.values[where], pad_id)
        return ids, mask.astype(np.int64)
