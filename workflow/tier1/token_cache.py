"""Stage 1b, tokenize: token ids of every text, computed once for all later stages and ranks.

    python -m tier1.token_cache --config '{"model": ..., "max_seq_length": 64}' \\
        --train results/data/train.jsonl --corpus results/data/test/corpus.jsonl \\
        --queries results/data/test/queries.jsonl --qrels results/data/test/qrels/test.tsv \\
        --out results/data/tokens.pt

Training and evaluation read these ids instead of re-tokenising on every rank and every run.
Trained models keep the base model's tokenizer, so one cache serves all of them. Batches are
padded here too (`collate`), to their own longest text.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from tier1.atomic import atomic_path
from tier1.cli import parse_stage_config, quiet_transformers, run_main, setup_logging
from tier1.config import TokenizeConfig
from tier1.data.sources import BeirSet, read_beir_files, read_jsonl

log = logging.getLogger("tier1.token_cache")


def token_ids(tokenizer, texts: list[str], max_seq_length: int) -> list[list[int]]:
    """Unpadded, truncated ids; batches pad them to their own longest text."""
    return tokenizer(texts, truncation=True, max_length=max_seq_length, padding=False)["input_ids"]


def doc_text(doc: dict[str, str]) -> str:
    return f"{doc['title']} {doc['text']}".strip()


def collate(ids: list[list[int]], batch: list[int], pad_id: int) -> dict[str, torch.Tensor]:
    """The rows `batch` of `ids`, right-padded to the longest of them, with their attention mask."""
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


def save(cache: dict, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(cache, tmp)


def load(path: Path, max_seq_length: int) -> dict:
    cache = torch.load(path, weights_only=False)
    if cache["max_seq_length"] != max_seq_length:
        raise ValueError(f"{path} holds ids cut at {cache['max_seq_length']} tokens, not {max_seq_length}: "
                         f"rerun the tokenize stage")
    return cache


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON of the tokenize stage's config keys")
    parser.add_argument("--train", type=Path, required=True, help="training pairs (jsonl)")
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--queries", type=Path, required=True)
    parser.add_argument("--qrels", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    setup_logging()
    quiet_transformers()
    cfg: TokenizeConfig = parse_stage_config(args.config, "tokenize")
    from tier1 import model

    _, tokenizer = model.load(cfg.model)
    beir = read_beir_files(args.corpus, args.queries, args.qrels)
    cache = build(tokenizer, read_jsonl(args.train), beir, cfg.max_seq_length)
    save(cache, args.out)
    log.info("token ids of %d pairs, %d documents and %d queries -> %s", len(cache["anchor"]),
             len(cache["corpus"]), len(cache["queries"]), args.out)


if __name__ == "__main__":
    run_main(main)
