"""Bad input is refused while Snakemake plans: each case builds one bad model, dataset or setting
and checks that tier1.input_checks names the file or field and the fix (no torch, no Snakemake); a few
go end to end through `snakemake -n` and must leave an earlier result untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tier1.config import ConfigError, PrepareConfig, Tier1Config
from tier1.data import sources
from tier1.input_checks import check_inputs
from tier1.records import TokensRecord
from tier1.stages.prepare import Outputs, prepare

from helpers import REPO

BERT = {"model_type": "bert", "max_position_embeddings": 128, "hidden_size": 32}


def model_folder(root: Path, config: dict | str | None = BERT, weights: str | None = "model.safetensors",
                 tokenizer: bool = True) -> Path:
    """A model folder as far as the checks look: config.json, weights and tokenizer files by name."""
    folder = root / "model"
    folder.mkdir(parents=True)
    if config is not None:
        (folder / "config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if weights:
        (folder / weights).write_bytes(b"\0" * 8)
    if tokenizer:
        (folder / "tokenizer.json").write_text("{}")
    return folder


def st_modules(folder: Path, *extra: dict, pooling: dict | None = None) -> Path:
    """`folder` with sentence-transformers modules: Transformer, Pooling, then `extra`."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    modules += [{"idx": i, "name": str(i), **m} for i, m in enumerate(extra, start=2)]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling or {"pooling_mode_cls_token": True}))
    return folder


DENSE = {"path": "2_Dense", "type": "sentence_transformers.models.Dense"}


def pair_rows(n: int, start: int = 0) -> list[dict]:
    return [{"anchor": f"question number {i}", "positive": f"answer text {i}"} for i in range(start, start + n)]


def jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def beir(root: Path, docs: int = 40, qrels: str | None = None, corpus_extra: str = "", queries_extra: str = "",
         skip: str = "") -> Path:
    folder = root / "beir"
    (folder / "qrels").mkdir(parents=True)
    if skip != "corpus.jsonl":
        (folder / "corpus.jsonl").write_text(
            "".join(json.dumps({"_id": f"d{i}", "text": f"document {i}"}) + "\n" for i in range(docs)) + corpus_extra)
    if skip != "queries.jsonl":
        (folder / "queries.jsonl").write_text(
            "".join(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n" for i in range(docs)) + queries_extra)
    (folder / "qrels" / "test.tsv").write_text(
        qrels if qrels is not None else "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(docs)))
    return folder


# Each case: (what to build in tmp_path -> config overrides, words the message must hold).
def _hub_offline(tmp):
    return {"model": "someone/some-model"}


def _empty_model(tmp):
    return {"model": str(model_folder(tmp, config=None, weights=None, tokenizer=False))}


def _bad_model_json(tmp):
    return {"model": str(model_folder(tmp, config="{not json"))}


def _t5(tmp):
    return {"model": str(model_folder(tmp, config={"model_type": "t5", "d_model": 32}))}


def _gpt2(tmp):
    return {"model": str(model_folder(tmp, config={"model_type": "gpt2", "n_positions": 1024}))}


def _remote_code(tmp):
    config = {**BERT, "auto_map": {"AutoModel": "modeling_x.XModel"}}
    return {"model": str(model_folder(tmp, config=config))}


def _pickle_weights(tmp):
    return {"model": str(model_folder(tmp, weights="pytorch_model.bin"))}


def _no_weights(tmp):
    return {"model": str(model_folder(tmp, weights=None))}


def _no_tokenizer(tmp):
    return {"model": str(model_folder(tmp, tokenizer=False))}


def _too_long(tmp):
    return {"model": str(model_folder(tmp)), "max_seq_length": 512}


def _dense_head(tmp):
    return {"model": str(st_modules(model_folder(tmp), DENSE))}


def _custom_module(tmp):
    return {"model": str(st_modules(model_folder(tmp), {"path": "2_Mine", "type": "my_package.Whitening"}))}


def _unknown_pooling(tmp):
    return {"model": str(st_modules(model_folder(tmp), pooling={"pooling_mode": "attention"}))}


def _normalize_before_pooling(tmp):
    folder = st_modules(model_folder(tmp))
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(1, {"idx": 1, "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "modules.json").write_text(json.dumps(modules))
    return {"model": str(folder)}


def _module_outside(tmp):
    folder = st_modules(model_folder(tmp))
    modules = json.loads((folder / "modules.json").read_text())
    modules[1]["path"] = "../../elsewhere"
    (folder / "modules.json").write_text(json.dumps(modules))
    return {"model": str(folder)}


def _euclidean(tmp):
    folder = st_modules(model_folder(tmp))
    (folder / "config_sentence_transformers.json").write_text(json.dumps({"similarity_fn_name": "euclidean"}))
    return {"model": str(folder)}


def _model_in_results(tmp):
    folder = model_folder(tmp / "results" / "default" / "train" / "gpus1")
    return {"model": str(folder.relative_to(tmp))}


def _model_in_other_run(tmp):
    folder = model_folder(tmp / "results" / "mine" / "train" / "gpus1")
    return {"model": str(folder.relative_to(tmp)), "run_name": "x2"}


def _model_path_missing(tmp):
    return {"model": str(tmp / "nonexistent" / "model")}


def _model_dot_path_missing(tmp):
    return {"model": "./models/mine"}


def _model_hub_or_folder_missing(tmp):
    return {"model": "models/mine"}


def _model_is_a_file(tmp):
    (tmp / "model.safetensors").write_bytes(b"\0")
    return {"model": str(tmp / "model.safetensors")}


def _bad_suffix(tmp):
    (tmp / "pairs.txt").write_text("a\tb\n")
    return {"dataset": str(tmp / "pairs.txt")}


def _missing_file(tmp):
    return {"dataset": str(tmp / "nowhere.jsonl")}


def _not_utf8(tmp):
    path = jsonl(tmp / "pairs.jsonl", pair_rows(3))
    path.write_bytes(path.read_bytes() + "caf\u00e9".encode("latin-1"))
    return {"dataset": str(path)}


def _bad_json_line(tmp):
    path = jsonl(tmp / "pairs.jsonl", pair_rows(2))
    path.write_text(path.read_text() + '{"anchor": "x", "positive": \n')
    return {"dataset": str(path)}


def _no_anchor(tmp):
    return {"dataset": str(jsonl(tmp / "pairs.jsonl", [{"title": "x", "positive": "y"}]))}


def _no_positive(tmp):
    return {"dataset": str(jsonl(tmp / "pairs.jsonl", [{"question": "x", "body": "y"}]))}


def _parquet_ints(tmp):
    table = pa.table({"anchor": [f"q{i}" for i in range(10)], "positive": list(range(10))})
    pq.write_table(table, tmp / "pairs.parquet")
    return {"dataset": str(tmp / "pairs.parquet")}


def _json_number(tmp):
    (tmp / "pairs.json").write_text(json.dumps([{"query": "q", "passage": 3.5}]))
    return {"dataset": str(tmp / "pairs.json")}


def _all_empty(tmp):
    return {"dataset": str(jsonl(tmp / "pairs.jsonl", [{"anchor": " ", "positive": "x"}] * 40))}


def _duplicate_ids(tmp):
    rows = [{"id": f"p{i % 3}", **r} for i, r in enumerate(pair_rows(60))]
    return {"dataset": str(jsonl(tmp / "pairs.jsonl", rows)), "test_samples": 50, "batch_size": 8}


def _duplicate_texts(tmp):
    rows = [{"anchor": "The SAME  question", "positive": f"answer {i}"} for i in range(60)]
    return {"dataset": str(jsonl(tmp / "pairs.jsonl", rows)), "test_samples": 50, "batch_size": 8}


def _too_few(tmp):
    return {"dataset": str(jsonl(tmp / "pairs.jsonl", pair_rows(100)))}


def _empty_file(tmp):
    (tmp / "pairs.csv").write_text("")
    return {"dataset": str(tmp / "pairs.csv")}


def _json_not_rows(tmp):
    (tmp / "pairs.json").write_text('"just a string"')
    return {"dataset": str(tmp / "pairs.json")}


def _label_column(tmp):
    (tmp / "pairs.csv").write_text("sentence1,sentence2,label\n" + "".join(
        f"sentence {i},other sentence {i},{i % 2}\n" for i in range(400)))
    return {"dataset": str(tmp / "pairs.csv")}


def _score_column(tmp):
    rows = [{**r, "Score": 4.5} for r in pair_rows(400)]
    return {"dataset": str(jsonl(tmp / "pairs.jsonl", rows))}


def _beir_no_train(tmp):
    return {"dataset": str(beir(tmp))}


def _beir_train_all_zero(tmp):
    folder = beir(tmp)
    (folder / "qrels" / "train.tsv").write_text("".join(f"q{i}\td{i}\t0\n" for i in range(30, 40)))
    return {"dataset": str(folder)}


def _beir_train_only_test_queries(tmp):
    folder = beir(tmp)
    (folder / "qrels" / "train.tsv").write_text("".join(f"q{i}\td{i + 1}\t1\n" for i in range(10)))
    return {"dataset": str(folder)}


def _beir_missing(tmp):
    return {"dataset": str(beir(tmp, skip="queries.jsonl"))}


def _corpus_without_id(tmp):
    return {"dataset": str(beir(tmp, corpus_extra=json.dumps({"text": "no id"}) + "\n"))}


def _queries_without_id(tmp):
    return {"dataset": str(beir(tmp, queries_extra=json.dumps({"id": "q99", "text": "x"}) + "\n"))}


def _qrels_fields(tmp):
    return {"dataset": str(beir(tmp, qrels="query-id\tcorpus-id\tscore\nq1 d1 1\n"))}


def _qrels_score(tmp):
    return {"dataset": str(beir(tmp, qrels="q1\td1\t1\nq2\td2\thigh\n"))}


def _qrels_unknown_doc(tmp):
    return {"dataset": str(beir(tmp, qrels="q1\td1\t1\nq2\tghost\t1\n"))}


def _qrels_unknown_query(tmp):
    return {"dataset": str(beir(tmp, qrels="q1\td1\t1\nnobody\td2\t1\n"))}


def _beir_batch(tmp):
    folder = beir(tmp)
    (folder / "qrels" / "train.tsv").write_text("".join(f"q{i}\td{i}\t1\n" for i in range(3)))
    (folder / "qrels" / "test.tsv").write_text("".join(f"q{i}\td{i}\t1\n" for i in range(10, 20)))
    return {"dataset": str(folder)}


CASES = {
    "hub id offline": (_hub_offline, ["model: 'someone/some-model'", "HF_HUB_OFFLINE=1", "local folder"]),
    "empty model folder": (_empty_model, ["model:", "has no config.json", "save_pretrained"]),
    "config.json not JSON": (_bad_model_json, ["config.json does not parse as JSON", "replace it"]),
    "T5 is not an encoder": (_t5, ["is a t5 model, not an encoder", "use an encoder"]),
    "GPT-2 is not an encoder": (_gpt2, ["is a gpt2 model, not an encoder"]),
    "remote code": (_remote_code, ["auto_map", "trust_remote_code: true"]),
    "pytorch_model.bin only": (_pickle_weights, ["only pytorch_model.bin", "convert it to safetensors"]),
    "no weights": (_no_weights, ["has no model.safetensors", "safe_serialization=True"]),
    "no tokenizer": (_no_tokenizer, ["has no tokenizer files", "tokenizer.save_pretrained"]),
    "max_seq_length over positions": (_too_long, ["max_seq_length: 512 is more than the 128 positions",
                                                  "at most 128"]),
    "Dense module": (_dense_head, ["has a sentence_transformers.models.Dense module ('2_Dense' in modules.json)",
                                   "/model has a", "cannot reproduce", "remove the module"]),
    "custom module": (_custom_module, ["has a my_package.Whitening module ('2_Mine'"]),
    "unknown pooling": (_unknown_pooling, ["1_Pooling/config.json asks for pooling attention", "cls, max, mean"]),
    "Normalize before Pooling": (_normalize_before_pooling, ["Transformer -> Normalize -> Pooling",
                                                             "Transformer -> Pooling (-> Normalize)"]),
    "module outside the folder": (_module_outside, ["places the Pooling module at '../../elsewhere'",
                                                    "not in a folder inside"]),
    "euclidean similarity": (_euclidean, ["similarity function 'euclidean'", "cosine"]),
    "model inside results/": (_model_in_results, ["inside this run's results folder (results/default)",
                                                  "copy it out (e.g. cp -r results/default/train/gpus1/model "
                                                  "models/default)"]),
    "model inside another run's results/": (_model_in_other_run, [
        "'results/mine/train/gpus1/model' lies inside the results folder of run 'mine' (results/mine)",
        "copy it out (e.g. cp -r results/mine/train/gpus1/model models/mine) and point model at the copy"]),
    "absolute model path missing": (_model_path_missing, ["model: folder /", "/nonexistent/model does not exist "
                                                          "(looked at /", "check the path"]),
    "./ model path missing": (_model_dot_path_missing, ["model: folder ./models/mine does not exist (looked at /",
                                                        "/models/mine)"]),
    "one-slash model missing offline": (_model_hub_or_folder_missing, ["model: 'models/mine' is not a local folder "
                                                                       "(nothing at /", "HF_HUB_OFFLINE=1"]),
    "model is a file": (_model_is_a_file, ["is a file, not a model folder"]),
    "unsupported suffix": (_bad_suffix, ["pairs.txt", "suffix '.txt'", ".jsonl/.json/.csv/.parquet"]),
    "missing pair file": (_missing_file, ["nowhere.jsonl", "does not exist", "check the path"]),
    "not UTF-8": (_not_utf8, ["pairs.jsonl is not UTF-8 (byte 1", "re-encode it as UTF-8"]),
    "bad JSON line": (_bad_json_line, ["pairs.jsonl line 3: not valid JSON", "fix or remove the line"]),
    "no anchor column": (_no_anchor, ["no anchor column", "anchor, query, question"]),
    "no positive column": (_no_positive, ["no positive column", "positive, passage, document, text"]),
    "parquet column of ints": (_parquet_ints, ["pairs.parquet column 'positive' holds int64, not strings",
                                               "store the texts as strings"]),
    "JSON number as text": (_json_number, ["pairs.json row 1 column 'passage' holds float, not a string"]),
    "all texts empty": (_all_empty, ["no usable pairs", "40 have an empty 'anchor'", "give rows with both texts"]),
    "duplicate ids": (_duplicate_ids, ["has 3 usable pairs", "57 repeating an earlier id or text",
                                       "test_samples (50)"]),
    "duplicate texts": (_duplicate_texts, ["has 1 usable pairs", "59 repeating an earlier id or text"]),
    "fewer pairs than test + batch": (_too_few, ["100 usable pairs", "test_samples (300)",
                                                 "global batch (32) = 332", "lower test_samples or batch_size"]),
    "empty file": (_empty_file, ["pairs.csv holds no rows"]),
    "JSON that is not rows": (_json_not_rows, ["pairs.json is not a list of objects"]),
    "label column": (_label_column, ["pairs.csv has a 'label' column", "trains every row as a positive pair",
                                     "keep only the matching rows and drop the 'label' column"]),
    "score column": (_score_column, ["pairs.jsonl has a 'Score' column", "drop the 'Score' column"]),
    "BEIR without train.tsv": (_beir_no_train, ["beir' has no qrels/train.tsv, so no training pairs",
                                                "add one", "or give a pair file"]),
    "BEIR train scores all 0": (_beir_train_all_zero, ["train.tsv judges no pair with a score above 0"]),
    "BEIR train queries all tested": (_beir_train_only_test_queries, ["every query of", "also asked in "
                                                                      "qrels/test.tsv", "no training pairs"]),
    "BEIR file missing": (_beir_missing, ["has no queries.jsonl", "corpus.jsonl, queries.jsonl and qrels/test.tsv"]),
    "corpus line without _id": (_corpus_without_id, ["corpus.jsonl line 41 has no \"_id\""]),
    "queries line without _id": (_queries_without_id, ["queries.jsonl line 41 has no \"_id\""]),
    "qrels row of 1 field": (_qrels_fields, ["test.tsv line 2 has 1 tab-separated fields, not 3"]),
    "qrels score not an integer": (_qrels_score, ["test.tsv line 2: score 'high' is not an integer"]),
    "qrels name unknown documents": (_qrels_unknown_doc, ["names 1 of 2 documents", "e.g. 'ghost'",
                                                          "remove those rows"]),
    "qrels name unknown queries": (_qrels_unknown_query, ["names 1 of 2 queries", "e.g. 'nobody'"]),
    "BEIR train pairs below one batch": (_beir_batch, ["batch_size: the global batch is 32",
                                                       "only 3 training pairs"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_naming_it_and_the_fix(tmp_path, monkeypatch, case):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    build, words = CASES[case]
    cfg = Tier1Config.from_dict({"gpu_counts": [1], **build(tmp_path)})
    with pytest.raises(ConfigError) as err:
        check_inputs(cfg, tmp_path)
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_good_inputs_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert check_inputs(Tier1Config(), tmp_path) == []
    rows = pair_rows(400) + [{"anchor": "", "positive": "x"}]
    cfg = Tier1Config(model=str(model_folder(tmp_path)), dataset=str(jsonl(tmp_path / "p.jsonl", rows)))
    assert check_inputs(cfg, tmp_path) == ["dataset: " + repr(cfg.dataset)
                                           + ": 1 rows with an empty text and 0 repeating an earlier id or text left out"]
    remote = Tier1Config(model=str(model_folder(tmp_path / "r", config={**BERT, "auto_map": {}})),
                         trust_remote_code=True)
    assert check_inputs(remote, tmp_path) == []


@pytest.mark.parametrize("online", ["0", "1"])
def test_a_model_path_that_is_not_there_is_never_sent_to_the_hub(tmp_path, monkeypatch, online):
    """A path with more than one '/' (or starting /, ./, ../, ~) cannot be a hub id: planning and the
    jobs' resolve_model_path both name the folder, whatever HF_HUB_OFFLINE says."""
    from tier1.encoder.tokenizer import resolve_model_path

    monkeypatch.setenv("HF_HUB_OFFLINE", online)
    monkeypatch.chdir(tmp_path)
    for spec in ("/nonexistent/model", "../models/mine", "./mine", "~/no-such-tier1-model", "models/mine/v2"):
        for refuse, arg in ((lambda s: check_inputs(Tier1Config(model=s), tmp_path), spec), (resolve_model_path, spec)):
            with pytest.raises(ConfigError, match=f"^model: folder {spec} does not exist \\(looked at /") as err:
                refuse(arg)
            assert "HF_HUB" not in str(err.value) and "hub" not in str(err.value)
    if online == "0":  # a spec that can be a hub id still goes to the hub
        assert resolve_model_path("someone/some-model") == "someone/some-model"


def test_columns_training_does_not_read_are_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rows = [{"anchor": a["anchor"], "positive": a["positive"], "negative": f"wrong {i}", "source": "web"}
            for i, a in enumerate(pair_rows(400))]
    path = jsonl(tmp_path / "triplets.jsonl", rows)
    assert check_inputs(Tier1Config(dataset=str(path)), tmp_path) == [
        f"dataset: {path}: the anchor is column 'anchor', the positive 'positive'; column 'negative' is not used: "
        f"tier1's negatives are the batch's other positives; column 'source' is not used"]
    # a second text column the synonyms could have picked is named too; an id is used (to drop repeats)
    rows = [{"id": i, "query": f"q {i}", "passage": f"p {i}", "text": "t", "neg_1": "n"} for i in range(400)]
    path = jsonl(tmp_path / "pairs.jsonl", rows)
    assert check_inputs(Tier1Config(dataset=str(path)), tmp_path) == [
        f"dataset: {path}: the anchor is column 'query', the positive 'passage'; columns 'text', 'neg_1' are not used"]
    assert check_inputs(Tier1Config(dataset=str(jsonl(tmp_path / "p.jsonl", pair_rows(400)))), tmp_path) == []


def test_a_beir_test_set_smaller_than_test_samples_is_said(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = beir(tmp_path, docs=80)
    (folder / "qrels" / "train.tsv").write_text("".join(f"q{i}\td{i}\t1\n" for i in range(40, 80)))
    (folder / "qrels" / "test.tsv").write_text("".join(f"q{i}\td{i}\t1\n" for i in range(40)))
    cfg = Tier1Config(dataset=str(folder), batch_size=8)
    assert check_inputs(cfg, tmp_path) == [f"dataset: {str(folder)!r} judges 40 test queries (qrels/test.tsv), "
                                           f"fewer than test_samples (300); all 40 are used"]
    assert check_inputs(Tier1Config(dataset=str(folder), batch_size=8, test_samples=40), tmp_path) == []


def test_prepare_counts_what_it_left_out(tmp_path):
    rows = pair_rows(50) + [{"anchor": "QUESTION number 3 ", "positive": "new"}, {"anchor": "x", "positive": " "}]
    manifest = prepare(PrepareConfig(dataset=str(jsonl(tmp_path / "p.jsonl", rows)), train_samples=20,
                                     test_samples=10, seed=1), Outputs.in_folder(tmp_path / "out"))
    assert manifest.counts["dropped_duplicates"] == 1 and manifest.counts["dropped_empty"] == 1
    assert manifest.counts["available_pairs"] == 50


def test_repeated_positive_is_dropped_case_and_space_insensitive():
    rows = [{"query": "a", "passage": "Same  text"}, {"query": "b", "passage": "same text"}]
    pairs, dropped = sources.clean_pairs(rows, "x")
    assert [p["anchor"] for p in pairs] == ["a"] and dropped == {"dropped_empty": 0, "dropped_duplicates": 1}


@pytest.mark.parametrize("key, value", [("num_epochs", 10**9), ("train_samples", 10**8), ("test_samples", 10**8),
                                        ("batch_size", 2**21), ("eval_batch_size", 2**21), ("repeats", 101),
                                        ("checkpoint_every", 10**8), ("corpus_chunk_size", 10**8)])
def test_the_schema_bounds_sizes(key, value):
    # imported here: the GPU machine has no Snakemake, and the module's other tests need none
    validate = pytest.importorskip("snakemake.utils").validate
    WorkflowError = pytest.importorskip("snakemake.exceptions").WorkflowError
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    validate(dict(config), str(REPO / "config" / "schema.yaml"))
    with pytest.raises(WorkflowError, match=key):
        validate({**config, key: value}, str(REPO / "config" / "schema.yaml"))


# End to end: refused while Snakemake plans, with the message on the console, nothing removed.
@pytest.fixture
def workdir(tmp_path):
    for name in ("Snakefile", "workflow", "config", "profiles", "envs"):
        (tmp_path / name).symlink_to(REPO / name)
    earlier = tmp_path / "results" / "default" / "data" / "manifest.json"
    earlier.parent.mkdir(parents=True)
    earlier.write_text('{"earlier": true}')
    return tmp_path


def plan(workdir: Path, *config: str, **env_vars: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TIER1_GPUS", "HF_HUB_OFFLINE")} | env_vars
    return subprocess.run([sys.executable, "-m", "snakemake", "-n", "all", "--config", *config], cwd=workdir,
                          capture_output=True, text=True, env=env)


@pytest.mark.parametrize("setting, words", [
    (lambda w: f"model={model_folder(w / 'm', config={'model_type': 't5'}).relative_to(w)}",
     "is a t5 model, not an encoder"),
    (lambda w: f"model={st_modules(model_folder(w / 'm'), DENSE).relative_to(w)}",
     "m/model has a sentence_transformers.models.Dense module ('2_Dense' in modules.json)"),
    (lambda w: "dataset=" + jsonl(w / "pairs.jsonl", [{"id": "same", **r} for r in pair_rows(60)]).name,
     "has 1 usable pairs (0 rows with an empty text and 59 repeating"),
    (lambda w: "dataset=" + _label_column(w)["dataset"],
     "pairs.csv has a 'label' column, but tier1 trains every row as a positive pair"),
    (lambda w: "dataset=" + _beir_no_train(w)["dataset"], "has no qrels/train.tsv, so no training pairs: add one"),
    (lambda w: "model=/nonexistent/model", "model: folder /nonexistent/model does not exist (looked at "
                                           "/nonexistent/model); check the path"),
    (lambda w: f"model={_model_in_other_run(w)['model']} run_name=x2",
     "lies inside the results folder of run 'mine' (results/mine)"),
    (lambda w: "num_epochs=1000000000", "num_epochs"),
    (lambda w: "encoder=bert", "'bert' is not one of ['auto', 'transformers']"),
    (lambda w: "batch_sise=16", "config: batch_sise: not a tier1 setting; did you mean batch_size? "
                                "(config/schema.yaml lists them)"),
    (lambda w: "gpu_counts=[0]", "config: gpu_counts[0]: 0 is less than the minimum of 1 (gpu_counts: world sizes"),
])
def test_snakemake_refuses_before_any_job_and_keeps_earlier_results(workdir, setting, words):
    proc = plan(workdir, *setting(workdir).split())
    console = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert words in console
    assert "$schema" not in console and len(console.splitlines()) < 12, console  # the line, not the schema around it
    assert "Job stats" not in console
    assert (workdir / "results" / "default" / "data" / "manifest.json").read_text() == '{"earlier": true}'


def test_unread_columns_are_said_while_planning_and_in_the_prepare_log(workdir):
    rows = [{**r, "negative": f"wrong answer {i}"} for i, r in enumerate(pair_rows(400))]
    jsonl(workdir / "triplets.jsonl", rows)
    proc = plan(workdir, "dataset=triplets.jsonl")
    line = ("triplets.jsonl: the anchor is column 'anchor', the positive 'positive'; column 'negative' is "
            "not used: tier1's negatives are the batch's other positives")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"\ndataset: {workdir / line}\n" in proc.stderr
    proc = prepare_command(workdir, {"dataset": "triplets.jsonl", "train_samples": 20, "test_samples": 10, "seed": 0})
    assert proc.returncode == 0 and f"dataset: {line}" in proc.stderr, proc.stderr


def prepare_command(workdir: Path, cfg: dict) -> subprocess.CompletedProcess:
    """The prepare rule's own command line, writing into workdir/out."""
    return subprocess.run([sys.executable, "-m", "tier1.stages.prepare", "--config", json.dumps(cfg),
                           *[a for name in ("train", "corpus", "queries", "qrels", "manifest")
                             for a in (f"--{name}", str(workdir / "out" / name))]],
                          cwd=workdir, capture_output=True, text=True)


def test_a_beir_folder_without_training_pairs_says_why_in_the_prepare_job_too(tmp_path):
    proc = prepare_command(tmp_path, {"dataset": _beir_no_train(tmp_path)["dataset"], "train_samples": 20,
                                      "test_samples": 10, "seed": 0})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert (f"configuration error: dataset: BEIR folder '{tmp_path / 'beir'}' has no qrels/train.tsv, so no training "
            f"pairs: add one") in proc.stderr


def test_a_missing_model_path_is_refused_online_too_while_planning_and_in_the_tokenize_job(workdir):
    """HF_HUB_OFFLINE=0 once let such a path pass planning, then transformers failed in the job with
    "Repo id must be in the form 'repo_name' or 'namespace/repo_name'"."""
    words = "model: folder /nonexistent/model does not exist (looked at /nonexistent/model); check the path"
    proc = plan(workdir, "model=/nonexistent/model", HF_HUB_OFFLINE="0")
    console = proc.stdout + proc.stderr
    assert proc.returncode != 0 and words in console and "HF_HUB" not in console
    cfg = {"model": "/nonexistent/model", "trust_remote_code": False, "encoder": "auto", "max_seq_length": 32}
    proc = subprocess.run([sys.executable, "-m", "tier1.stages.tokenize", "--config", json.dumps(cfg),
                           *[a for name in ("train", "corpus", "queries", "qrels", "out", "record-out")
                             for a in (f"--{name}", str(workdir / name))]],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "0"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert f"configuration error: {words}" in proc.stderr


def test_the_token_cache_counts_texts_cut_at_max_seq_length(tmp_path, tiny_model):
    from tier1.encoder import token_cache
    from tier1.stages import tokenize

    rows = pair_rows(30) + [{"anchor": "long " * 100, "positive": "short answer"},
                            {"anchor": "short question", "positive": "word " * 31}]
    prepare(PrepareConfig(dataset=str(jsonl(tmp_path / "p.jsonl", rows)), train_samples=32, test_samples=2, seed=3),
            out := Outputs.in_folder(tmp_path / "data"))
    tokenize.main(["--config", json.dumps({"model": str(tiny_model), "trust_remote_code": False, "encoder": "auto", "max_seq_length": 32}),
                      "--train", str(out.train), "--corpus", str(out.corpus), "--queries", str(out.queries),
                      "--qrels", str(out.qrels), "--out", str(tmp_path / "tokens.safetensors"),
                      "--record-out", str(tmp_path / "tokens.json")])
    truncated = token_cache.load(tmp_path / "tokens.safetensors", 32)["truncated"]
    assert set(truncated) == {"anchor", "positive", "corpus", "queries"}
    # "word " * 31 is 31 tokens plus [CLS] and [SEP]: cut; the long anchor is cut wherever it went
    assert sum(truncated.values()) == 2
    # the record beside the cache: what was tokenised, and the seconds it took
    record = TokensRecord.read(tmp_path / "tokens.json")
    assert record.stage == "tokenize" and record.truncated == truncated and 0 < record.work_s < 60
    assert record.counts == {"train_pairs": 30, "documents": 2, "queries": 2, "texts": 64}
    assert record.config_hash and record.hardware and record.libraries


def test_training_across_nodes_is_refused_outside_slurm_before_any_job(workdir):
    env = {k: v for k, v in os.environ.items() if k not in ("TIER1_GPUS", "HF_HUB_OFFLINE")}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "all", "--config", "nodes=2",
                           "gpu_counts=[1,2]"], cwd=workdir, capture_output=True, text=True, env=env)
    console = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "nodes: 2 trains across 2 machines, which this run can only do as SLURM jobs" in console, console[-3000:]
    assert "this run's executor is local. On one machine leave nodes: 1." in console
    assert (workdir / "results" / "default" / "data" / "manifest.json").read_text() == '{"earlier": true}'


@pytest.mark.parametrize("extra", ["config/quick.yaml", "config/full.yaml", "config/memory.yaml", ".test/config/config.yaml"])
def test_the_one_line_check_passes_every_shipped_config_and_names_a_bad_value(extra):
    """tier1.config_schema says a problem in one line before Snakemake's validation: silent on every
    config the project ships, and naming the setting, its bound and what it is for otherwise."""
    pytest.importorskip("jsonschema")
    from tier1.config_schema import first_problem

    schema = REPO / "config" / "schema.yaml"
    config = {**yaml.safe_load((REPO / "config" / "config.yaml").read_text()),
              **yaml.safe_load((REPO / extra).read_text())}
    assert first_problem(config, schema) is None
    assert first_problem({**config, "eval_batch_size": 0}, schema) == \
        "eval_batch_size: 0 is less than the minimum of 1"
    assert first_problem({**config, "parallelism": ["ddp", "zero"]}, schema) == \
        "parallelism[1]: 'zero' is not one of ['ddp', 'fsdp'] (parallelism: the data-parallel strategy of the N-rank training runs)"
    assert first_problem({**config, "modle": "x"}, schema) == \
        "modle: not a tier1 setting; did you mean model? (config/schema.yaml lists them)"
