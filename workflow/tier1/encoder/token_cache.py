"""The token cache: token ids of every text, computed once (stage tier1.stages.tokenize) for all
later stages and ranks, and the batches padded from them.

Trained models keep the base model's tokenizer, so one cache serves all of them. Batches are
padded here too (`collate`), to their own longest text.

The cache is a safetensors file, a format that holds only numbers and JSON, so reading it cannot
run code (see `save`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from tier1.config import InputError
from tier1.data.sources import BeirSet, read_jsonl
from tier1.encoder.packed_ids import PackedIds
from tier1.runtime import checksum
from tier1.runtime.atomic import atomic_path

if TYPE_CHECKING:
    import torch

log = logging.getLogger("tier1.encoder.token_cache")


def token_ids(tokenizer, texts: list[str], max_seq_length: int) -> list[list[int]]:
    """Unpadded, truncated ids; batches pad them to their own longest text."""
    return tokenizer(texts, truncation=True, max_length=max_seq_length, padding=False)["input_ids"]


def doc_text(doc: dict[str, str]) -> str:
    return f"{doc['title']} {doc['text']}".strip()


def collate(ids: list[list[int]], batch: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """The rows `batch` of `ids`, right-padded to the longest of them, with their attention mask."""
    import torch  # here, not above: the tokenize stage writes the cache without torch (seconds of import)

    width = max(len(ids[i]) for i in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, i in enumerate(batch):
        input_ids[row, : len(ids[i])] = torch.tensor(ids[i])
        mask[row, : len(ids[i])] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


@dataclass(frozen=True)
class PairTokens:
    """The training pairs' ids, row i of each list belonging to pair i."""

    anchor: list[list[int]]
    positive: list[list[int]]
    pad_id: int


def pair_tokens(tokenizer, pairs: list[dict[str, str]], max_seq_length: int, cache: dict | None = None) -> PairTokens:
    """The pairs' ids from the cache the tokenize stage wrote, or tokenised here when there is none."""
    if cache is None:
        return PairTokens(token_ids(tokenizer, [p["anchor"] for p in pairs], max_seq_length),
                          token_ids(tokenizer, [p["positive"] for p in pairs], max_seq_length),
                          tokenizer.pad_token_id)
    if cache.get("train_ids") != [p["id"] for p in pairs]:
        raise ValueError("the token cache was built from other training pairs: rerun the tokenize stage")
    return PairTokens(cache["anchor"], cache["positive"], tokenizer.pad_token_id)


def training_pairs(tokenizer, data: Path, tokens_path: Path | None, max_seq_length: int) -> PairTokens:
    """The training pairs' token ids: from the tokenize stage's cache where one is given (checked
    on load), else tokenised here."""
    cache = load(tokens_path, max_seq_length) if tokens_path else None
    return pair_tokens(tokenizer, read_jsonl(data), max_seq_length, cache)


def build(tokenizer, pairs: list[dict[str, str]], beir: BeirSet, max_seq_length: int) -> dict:
    doc_ids, query_ids = sorted(beir.corpus), sorted(beir.queries)
    return {
        "max_seq_length": max_seq_length,
        "vocab_size": len(tokenizer),
        "train_ids": [p["id"] for p in pairs],
        "anchor": token_ids(tokenizer, [p["anchor"] for p in pairs], max_seq_length),
        "positive": token_ids(tokenizer, [p["positive"] for p in pairs], max_seq_length),
        "doc_ids": doc_ids,
        "corpus": token_ids(tokenizer, [doc_text(beir.corpus[d]) for d in doc_ids], max_seq_length),
        "query_ids": query_ids,
        "queries": token_ids(tokenizer, [beir.queries[q] for q in query_ids], max_seq_length),
    }


def count_truncated(tokenizer, cache: dict, pairs: list[dict[str, str]], beir: BeirSet, max_seq_length: int
                    ) -> dict[str, int]:
    """Texts cut at max_seq_length, per field: only a row at the limit can have been cut, so only
    those are tokenised again in full."""
    texts = {"anchor": [p["anchor"] for p in pairs], "positive": [p["positive"] for p in pairs],
             "corpus": [doc_text(beir.corpus[d]) for d in cache["doc_ids"]],
             "queries": [beir.queries[q] for q in cache["query_ids"]]}
    truncated = {}
    for name, rows in texts.items():
        full = [t for t, ids in zip(rows, cache[name]) if len(ids) >= max_seq_length]
        lengths = [len(ids) for ids in tokenizer(full, truncation=False)["input_ids"]] if full else []
        truncated[name] = sum(n > max_seq_length for n in lengths)
        if truncated[name]:
            log.info("%d of %d %s texts are longer than max_seq_length (%d tokens) and were cut", truncated[name],
                     len(rows), name, max_seq_length)
    return truncated


FORMAT, FORMAT_VERSION = checksum.TOKEN_CACHE_FORMAT, checksum.TOKEN_CACHE_VERSION
_KINDS = {"ids": np.dtype(np.int32), "text": np.dtype(np.uint8)}  # what each list's values hold


class TokenCacheError(InputError):
    """A token cache that cannot be used; the message names the file and how to remake it."""


def save(cache: dict, path: Path) -> None:
    """Write `cache` as safetensors.

    A list of token-id lists becomes two tensors, `<key>.values` (every id, int32) and
    `<key>.offsets` (int64, row i is values[offsets[i]:offsets[i+1]]); a list of strings becomes
    the same pair over their UTF-8 bytes (uint8), so long id lists never swell the header. Other
    values (ints) go as JSON into the metadata, beside the format, its version and a sha256 over
    the JSON and every tensor's name, dtype, shape and bytes.
    """
    kinds, tensors, scalars = {}, {}, {}
    for key, value in cache.items():
        if _is_id_rows(value):
            kinds[key] = "ids"
            tensors.update(_pack(key, value, _KINDS["ids"]))
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            kinds[key] = "text"
            tensors.update(_pack(key, [v.encode() for v in value], _KINDS["text"]))
        else:
            scalars[key] = value
    kinds_json, scalars_json = json.dumps(kinds), json.dumps(scalars)
    metadata = {"format": FORMAT, "version": FORMAT_VERSION, "kinds": kinds_json, "scalars": scalars_json,
                "sha256": _digest(tensors, kinds_json, scalars_json)}
    with atomic_path(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)


def load(path: Path, max_seq_length: int) -> dict:
    """The cache at `path`, after its format, checksum and layout were checked; anything else is
    refused with a TokenCacheError (never unpickled: an old `.pt` cache is refused too)."""
    cache = _read(path)
    if not isinstance(cache.get("max_seq_length"), int):
        raise _refused(path, "it records no max_seq_length")
    if cache["max_seq_length"] != max_seq_length:
        raise _refused(path, f"it holds ids cut at {cache['max_seq_length']} tokens, not {max_seq_length}")
    return cache


def _is_id_rows(value) -> bool:
    return isinstance(value, list) and all(
        isinstance(row, list) and all(type(i) is int for i in row) for row in value)


def _pack(key: str, rows: list[list[int]] | list[bytes], dtype: np.dtype) -> dict[str, np.ndarray]:
    packed = PackedIds.from_rows(rows, dtype)
    return {f"{key}.values": packed.values, f"{key}.offsets": packed.offsets}


def _digest(tensors: dict[str, np.ndarray], *texts: str) -> str:
    return checksum.digest(tensors, *texts)


def _refused(path: Path, reason: str) -> TokenCacheError:
    return TokenCacheError(f"{path} cannot be used as the token cache: {reason}; "
                           f"rerun the tokenize stage: snakemake --cores 1 -f {path}")


def _read(path: Path) -> dict:
    """Check, in order: a safetensors file (its header parses and covers the file exactly), this
    format and version, the checksum, then the layout; only then build the lists."""
    try:
        with safe_open(path, framework="np") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError) as err:
        raise _refused(path, f"not a readable safetensors file ({err})") from None
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise _refused(path, f"written in another format ({meta.get('format')} version {meta.get('version')})")
    if meta.get("sha256") != _digest(tensors, meta.get("kinds", ""), meta.get("scalars", "")):
        raise _refused(path, "its checksum does not match: the file is damaged")
    try:
        kinds, scalars = json.loads(meta["kinds"]), json.loads(meta["scalars"])
        if not isinstance(kinds, dict) or not isinstance(scalars, dict):
            raise ValueError("kinds and scalars must be JSON objects")
        if set(tensors) != {f"{k}.{part}" for k in kinds for part in ("values", "offsets")}:
            raise ValueError("its tensors do not match its list of fields")
        cache = dict(scalars)
        for key, kind in kinds.items():
            if kind not in _KINDS:
                raise ValueError(f"unknown kind {kind!r} of {key}")
            values, offsets = tensors[f"{key}.values"], tensors[f"{key}.offsets"]
            _check_layout(values, offsets, _KINDS[kind])
            ends = offsets.tolist()
            flat = values.tolist() if kind == "ids" else values.tobytes()
            rows = [flat[a:b] for a, b in zip(ends, ends[1:])]
            cache[key] = rows if kind == "ids" else [r.decode() for r in rows]
    except (ValueError, KeyError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _refused(path, f"its layout is not a token cache's ({err})") from None
    return cache


def _check_layout(values: np.ndarray, offsets: np.ndarray, dtype: np.dtype) -> None:
    if values.dtype != dtype or values.ndim != 1 or offsets.dtype != np.int64 or offsets.ndim != 1:
        raise ValueError("unexpected tensor dtype or shape")
    if len(offsets) == 0 or offsets[0] != 0 or offsets[-1] != len(values) or bool((np.diff(offsets) < 0).any()):
        raise ValueError("offsets do not partition the values")
