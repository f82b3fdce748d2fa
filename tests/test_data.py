"""Dataset preparation: the stdlib default, local files, BEIR folders, and the split."""

from __future__ import annotations

import ast
import json

import pandas as pd
import pytest

from tier1 import ConfigError
from tier1.config import PrepareConfig
from tier1.data import sources, split, stdlib_pairs
from tier1.stages.prepare import Outputs, prepare

from helpers import write_beir_folder


def test_stdlib_pairs_are_real_functions_without_their_docstring(pairs):
    for p in pairs[:50]:
        tree = ast.parse(p["positive"])
        fn = tree.body[0]
        assert isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
        assert ast.get_docstring(fn) is None
        assert len(p["anchor"].split()) >= stdlib_pairs.MIN_SUMMARY_WORDS


def test_repeated_texts_are_dropped():
    rows = [{"id": "a", "anchor": "Return x.", "positive": "def f(): pass"},
            {"id": "b", "anchor": "return X.", "positive": "def g(): pass"},
            {"id": "c", "anchor": "Other thing here.", "positive": "def h(): pass"}]
    assert [p["id"] for p in stdlib_pairs.drop_repeated(rows)] == ["c"]


def test_split_is_deterministic_disjoint_and_order_free(pairs):
    train, test = split.split_pairs(pairs, 100, 50, seed=7)
    train2, test2 = split.split_pairs(list(reversed(pairs)), 100, 50, seed=7)
    assert train == train2 and test == test2
    assert not {p["id"] for p in train} & {p["id"] for p in test}
    assert len(train) == 100 and len(test) == 50
    other, _ = split.split_pairs(pairs, 100, 50, seed=8)
    assert other != train


def test_too_few_pairs_is_a_named_error(pairs):
    with pytest.raises(ConfigError, match="test_samples"):
        split.split_pairs(pairs[:10], 5, 20, seed=0)


def test_beir_ids_keep_queries_and_documents_apart(pairs):
    beir = split.beir_from_pairs(pairs[:5])
    assert not set(beir.queries) & set(beir.corpus)
    for qid, docs in beir.qrels.items():
        assert qid in beir.queries and all(d in beir.corpus for d in docs)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_local_pair_files(tmp_path, pairs, suffix):
    rows = [{"query": p["anchor"], "positive": p["positive"]} for p in pairs[:30]]
    path = tmp_path / f"pairs{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)
    got = sources.load(str(path)).pairs
    assert [(p["anchor"], p["positive"]) for p in got] == [(r["query"], r["positive"]) for r in rows]


def test_pair_file_without_the_columns_says_which(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"foo": 1, "bar": 2}) + "\n")
    with pytest.raises(ConfigError, match="no anchor column"):
        sources.load(str(path))


def test_beir_folder_with_train_qrels(tmp_path, pairs):
    folder = tmp_path / "beir"
    write_beir_folder(split.beir_from_pairs(pairs[:40]), folder)
    # test judges the last 20 queries, train the first 20: a query in both would be dropped from training
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q:{p['id']}\t{p['id']}\t1\n" for p in pairs[20:40]))
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q:{p['id']}\t{p['id']}\t1\n" for p in pairs[:20]))
    manifest = prepare(PrepareConfig(dataset=str(folder), train_samples=15, test_samples=10, seed=1),
                       Outputs.in_folder(tmp_path / "out"))
    assert manifest.counts["train_pairs"] == 15 and manifest.counts["test_queries"] == 10
    assert manifest.counts["corpus_documents"] == 40  # a BEIR corpus is kept whole
    qrels = (tmp_path / "out" / "test" / "qrels" / "test.tsv").read_text().splitlines()
    assert qrels[0] == "query-id\tcorpus-id\tscore" and len(qrels) == 11


def test_beir_folder_missing_a_file(tmp_path):
    (tmp_path / "b").mkdir()
    with pytest.raises(ConfigError, match="corpus.jsonl"):
        sources.load(str(tmp_path / "b"))


def test_prepare_writes_manifest_and_beir_from_pairs(tmp_path, pairs):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    manifest = prepare(PrepareConfig(dataset=str(path), train_samples=60, test_samples=30, seed=42),
                       Outputs.in_folder(tmp_path / "data"))
    assert manifest.counts == {"available_pairs": len(pairs), "dropped_empty": 0, "dropped_duplicates": 0,
                               "train_pairs": 60, "test_queries": 30, "corpus_documents": 30}
    for key in ("config_hash", "git_revision", "hardware", "libraries"):
        assert getattr(manifest, key)
    assert 0 < manifest.work_s < 60  # reading and splitting, for the report's pipeline overhead
    beir = sources.read_beir(tmp_path / "data" / "test")
    train_ids = {json.loads(line)["id"] for line in (tmp_path / "data" / "train.jsonl").read_text().splitlines()}
    assert not train_ids & set(beir.corpus)
