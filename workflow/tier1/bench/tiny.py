"""A tiny BERT (hidden 32, 2 layers) with the real model's tokenizer: the bench's host-overhead
recipe, the CPU's proxy of a launch-bound GPU step. Its arithmetic is small, though not negligible
on a 2-core CPU at the real batch and sequence length (77% of tier1's step there), so the bench
also times each side's arithmetic floor (tier1.bench.floor) and counts the host's cost as the step
less that floor."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import torch

from tier1.encoder import bert
from tier1.encoder.model import SentenceEncoder, load_tokenizer, save

# no dropout: with it SDPA leaves its fused kernel for the math path on both sides, which at batch
# 32 x 64 tokens is arithmetic again on a 2-core CPU
SIZE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def make(base: str, folder: Path, max_seq_length: int, seed: int = 0) -> Path:
    """`folder`: random weights of SIZE, `base`'s vocabulary and tokenizer, loadable by tier1 and
    sentence-transformers (mean pooling, normalised) alike."""
    config = SimpleNamespace(**{**vars(bert.read_config(Path(base))), **SIZE,
                                "max_position_embeddings": max(512, max_seq_length)})
    torch.manual_seed(seed)
    save(SentenceEncoder(bert.Bert(config)), load_tokenizer(base), Path(folder), max_seq_length)
    return Path(folder)
