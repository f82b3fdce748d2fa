"""FSDP2 trains the same model as one process, through the training stage's own command line.

CPU, gloo, the tiny random BERT, fp32. Dropout off: the loss of every step at 2 and 4 ranks under
FSDP2 equals the 1-rank loss to 1e-6 relative (measured: ~3e-7, the same as DDP's), the gathered
parameters agree with the 1-rank model, every rank's gathered checksum is the same, and each rank
holds a 1/N shard of the model states. AdamW's update barely depends on the gradient's scale, so
the gradient itself (its reduce-scatter's average, and its accumulation without sync) is proven
with plain SGD, where a wrong scale moves every parameter. A killed FSDP2 run resumes to the uninterrupted one's model,
and the saved folder is a plain sentence-transformers model with the full weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tier1.config import Tier1Config, stage_json

STEPS_RTOL = 1e-6


def command(cfg: str, data: Path, out: Path, ranks: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tier1.runtime.launch", "--ranks", str(ranks), "tier1.stages.train",
            "--config", cfg, "--data", str(data), "--model-out", str(out / "model"),
            "--metrics-out", str(out / "train_metrics.json"), "--loss-out", str(out / "loss.csv"), *extra]


def train(cfg: str, data: Path, out: Path, ranks: int, *extra: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(command(cfg, data, out, ranks, *extra), env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
                          capture_output=True, text=True, timeout=600)
    if ok:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


def config(tiny_model: Path, parallelism: str, **kw) -> str:
    settings = dict(model=str(tiny_model), batch_size=8, num_epochs=1, max_seq_length=32, learning_rate=1e-3,
                    warmup_ratio=0.0, gpu_counts=(1, 2, 4))
    return stage_json(Tier1Config(**(settings | kw)), "train", parallelism)


def losses(folder: Path) -> list[float]:
    return [float(row.split(",")[3]) for row in (folder / "loss.csv").read_text().splitlines()[1:]]


def same_losses(one: Path, other: Path) -> None:
    ref, got = losses(one), losses(other)
    assert len(got) == len(ref) == 5
    for step, (a, b) in enumerate(zip(got, ref)):
        assert abs(a - b) / abs(b) <= STEPS_RTOL, f"step {step}: {a} vs {b}"


@pytest.fixture(scope="module")
def data(tmp_path_factory, pairs) -> Path:
    path = tmp_path_factory.mktemp("fsdp-data") / "train.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs[:40]))
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model, data) -> dict[str, Path]:
    """One process, and FSDP2 at 2 and 4 ranks (AdamW, 5 steps of a global batch of 8)."""
    root = tmp_path_factory.mktemp("fsdp-runs")
    out = {}
    for name, strategy, ranks in (("one", "ddp", 1), ("fsdp2", "fsdp", 2), ("fsdp4", "fsdp", 4)):
        train(config(tiny_model, strategy), data, root / name, ranks)
        out[name] = root / name
    return out


@pytest.fixture(scope="module")
def sgd_runs(tmp_path_factory, tiny_model, data) -> dict[str, Path]:
    """Plain SGD: one process, and FSDP2 at 2 and 4 ranks accumulating over 2 micro-batches (the
    first backward without a reduce-scatter). One process does not accumulate: the DDP tests show
    that accumulation alone leaves the result as it is."""
    root = tmp_path_factory.mktemp("fsdp-sgd")
    out = {}
    for name, strategy, ranks, accum in (("one", "ddp", 1, 1), ("fsdp2", "fsdp", 2, 2), ("fsdp4", "fsdp", 4, 2)):
        train(config(tiny_model, strategy, optimizer="sgd", learning_rate=0.5, grad_accum_steps=accum),
              data, root / name, ranks)
        out[name] = root / name
    return out


@pytest.mark.parametrize("name", ["fsdp2", "fsdp4"])
def test_fsdp_sgd_trains_the_one_process_model_step_by_step(sgd_runs, name):
    same_losses(sgd_runs["one"], sgd_runs[name])
    a = load_file(sgd_runs["one"] / "model" / "model.safetensors")
    b = load_file(sgd_runs[name] / "model" / "model.safetensors")
    moved = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert moved <= 1e-5, f"largest parameter difference {moved:.2e}"


def first_gradient_norms(folder: Path) -> list[float]:
    return [r["first_step_gradient_norm"] for r in json.loads((folder / "train_metrics.json").read_text())["ranks"]]


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
@pytest.mark.parametrize("name", ["fsdp2", "fsdp4"])
def test_fsdp_first_gradient_has_the_one_process_norm_on_every_rank(runs, sgd_runs, optimizer, name):
    """The recorded norm of the first step's whole gradient: a reduce-scatter that summed where it
    should average would show here as a factor of the world size, whatever the optimizer."""
    folders = sgd_runs if optimizer == "sgd" else runs
    (ref,), got = first_gradient_norms(folders["one"]), first_gradient_norms(folders[name])
    assert ref > 0 and len(got) == int(name[-1])
    for norm in got:
        assert abs(norm - ref) / ref <= 1e-5, f"{norm} vs {ref}"


@pytest.mark.parametrize("name", ["fsdp2", "fsdp4"])
def test_fsdp_loss_equals_one_process_at_every_step(runs, name):
    same_losses(runs["one"], runs[name])


@pytest.mark.parametrize("name", ["fsdp2", "fsdp4"])
def test_fsdp_saves_the_whole_model_every_rank_gathered_alike(runs, name):
    record = json.loads((runs[name] / "train_metrics.json").read_text())
    assert record["config"]["parallelism"] == "fsdp" and record["checksums_equal"]
    a, b = load_file(runs["one"] / "model" / "model.safetensors"), load_file(runs[name] / "model" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:  # whole tensors, not shards; AdamW's 5 steps agree to float32 reduction noise
        assert a[k].shape == b[k].shape, k
        assert torch.allclose(a[k], b[k], rtol=0, atol=1e-4), k


def test_each_fsdp_rank_holds_a_shard_of_the_model_states(runs):
    whole = json.loads((runs["one"] / "train_metrics.json").read_text())["ranks"][0]["model_state_bytes"]
    assert whole["parameters"] > 0 and whole["gradients"] == whole["parameters"]
    assert whole["optimizer"] >= 2 * whole["parameters"]  # AdamW's two moments
    for name, n in (("fsdp2", 2), ("fsdp4", 4)):
        ranks = json.loads((runs[name] / "train_metrics.json").read_text())["ranks"]
        total = {k: sum(r["model_state_bytes"][k] for r in ranks) for k in whole}
        # the shards add up to the whole (up to the padding of a dimension that does not split evenly)
        assert whole["parameters"] <= total["parameters"] <= whole["parameters"] * 1.01, name
        assert max(r["model_state_bytes"]["parameters"] for r in ranks) <= whole["parameters"] / n * 1.05, name


def test_fsdp_model_loads_in_sentence_transformers_with_the_same_embeddings(runs):
    from sentence_transformers import SentenceTransformer

    from tier1.encoder import model

    folder = runs["fsdp2"] / "model"
    texts = ["return the sum of two numbers", "parse a JSON document from a string"]
    theirs = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_tensor=True)
    from transformers import AutoTokenizer

    encoder, _ = model.load(str(folder))
    batch = AutoTokenizer.from_pretrained(str(folder))(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = encoder.eval()(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(torch.nn.functional.normalize(theirs, dim=-1), ours, atol=1e-5)


def test_a_killed_fsdp_run_resumes_to_the_uninterrupted_model(runs, tiny_model, data, tmp_path):
    cfg = config(tiny_model, "fsdp", checkpoint_every=2)
    cut = tmp_path / "cut"
    stopped = train(cfg, data, cut, 2, "--stop-after-steps", "3", ok=False)
    assert stopped.returncode != 0 and (cut / "checkpoints" / "last.json").exists()
    assert not (cut / "train_metrics.json").exists()
    train(cfg, data, cut, 2)
    record = json.loads((cut / "train_metrics.json").read_text())
    assert record["resumed_from_step"] == 2
    full = tmp_path / "full"
    train(cfg, data, full, 2)
    assert losses(cut) == losses(full)
    a, b = load_file(full / "model" / "model.safetensors"), load_file(cut / "model" / "model.safetensors")
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory) -> Path:
    from tier1.encoder.random_models import build

    return build("qwen2-tiny", tmp_path_factory.mktemp("decoder") / "model", max_positions=64)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_the_tiny_decoder_embedder_trains_alike_on_two_ranks_and_reloads_with_last_token_pooling(
        tiny_decoder, data, tmp_path, strategy):
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from tier1.encoder import model

    cfg = config(tiny_decoder, strategy, encoder="transformers")
    train(cfg, data, tmp_path / "one", 1)
    train(cfg, data, tmp_path / "two", 2)
    for a, b in zip(losses(tmp_path / "two"), losses(tmp_path / "one")):
        assert abs(a - b) / abs(b) <= 1e-5
    folder = tmp_path / "two" / "model"
    assert json.loads((folder / "1_Pooling" / "config.json").read_text())["pooling_mode_lasttoken"]
    texts = ["return the sum of two numbers", "parse a JSON document"]
    theirs = SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_tensor=True)
    encoder, _ = model.load(str(folder), encoder="transformers")
    assert encoder.head.pooling == ("lasttoken",)
    batch = AutoTokenizer.from_pretrained(str(folder))(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = encoder.eval()(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(torch.nn.functional.normalize(theirs, dim=-1), ours, atol=1e-5)
