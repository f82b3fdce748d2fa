"""Reading a dataset spec into pairs and, where the source has one, a ready-made test set.

`dataset` in the config is one of:
  - "stdlib": code-search pairs from the Python standard library (offline default);
  - "python-source": the same from the standard library plus the environment's site-packages
    (offline, tens of thousands of pairs; which ones depends on the installed packages);
  - a local pair file (.jsonl, .json, .csv, .parquet) with an anchor and a positive column;
  - a local BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv, optional qrels/train.tsv);
  - otherwise a Hugging Face dataset id, loaded through `datasets` (needs the network).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from tier1.config import ConfigError

ANCHOR_COLUMNS = ("anchor", "query", "question", "sentence1", "text1")
POSITIVE_COLUMNS = ("positive", "text", "answer", "document", "sentence2", "text2")


@dataclass
class Source:
    pairs: list[dict[str, str]]
    description: dict[str, str]
    # A BEIR folder brings its own evaluation set; otherwise one is cut from the pairs.
    beir_test: BeirSet | None = None


@dataclass
class BeirSet:
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)


def load(spec: str) -> Source:
    path = Path(spec)
    if spec == "stdlib":
        from tier1.data import stdlib_pairs

        return Source(stdlib_pairs.extract(), stdlib_pairs.describe())
    if spec == "python-source":
        from tier1.data import stdlib_pairs

        return Source(stdlib_pairs.extract_python_source(), stdlib_pairs.describe_python_source())
    if path.is_dir():
        return _beir_source(path)
    if path.suffix in (".jsonl", ".json", ".csv", ".parquet"):
        if not path.exists():
            raise ConfigError(f"dataset: file {spec!r} does not exist")
        return Source(_pairs_from_rows(_read_rows(path), spec), {"source": "file", "path": str(path.resolve())})
    if path.exists():
        raise ConfigError(f"dataset: {spec!r} is neither a BEIR folder nor a .jsonl/.json/.csv/.parquet file")
    return _hub_source(spec)


def _read_rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return data if isinstance(data, list) else data.get("data", [])
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return list(csv.DictReader(f))
    import pandas as pd

    return pd.read_parquet(path).to_dict("records")


def _pick(columns: list[str], wanted: tuple[str, ...], role: str, where: str) -> str:
    for name in wanted:
        if name in columns:
            return name
    raise ConfigError(
        f"dataset: {where} has no {role} column; expected one of {list(wanted)}, found {columns}"
    )


def _pairs_from_rows(rows: list[dict], where: str) -> list[dict[str, str]]:
    if not rows:
        raise ConfigError(f"dataset: {where} holds no rows")
    columns = list(rows[0].keys())
    a = _pick(columns, ANCHOR_COLUMNS, "anchor", where)
    p = _pick([c for c in columns if c != a], POSITIVE_COLUMNS, "positive", where)
    pairs = []
    for i, row in enumerate(rows):
        anchor, positive = str(row.get(a) or "").strip(), str(row.get(p) or "").strip()
        if anchor and positive:
            pairs.append({"id": str(row.get("id", i)), "anchor": anchor, "positive": positive})
    return pairs


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def read_beir(folder: Path, split: str = "test") -> BeirSet:
    """A BEIR folder: corpus.jsonl, queries.jsonl and qrels/<split>.tsv."""
    for name in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (folder / name).exists():
            raise ConfigError(f"dataset: BEIR folder {str(folder)!r} has no {name}")
    return read_beir_files(folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv")


def read_beir_files(corpus_path: Path, queries_path: Path, qrels_path: Path) -> BeirSet:
    corpus = {}
    for doc in read_jsonl(corpus_path):
        corpus[str(doc["_id"])] = {"title": doc.get("title", ""), "text": doc.get("text", "")}
    queries = {str(q["_id"]): q["text"] for q in read_jsonl(queries_path)}
    return BeirSet(corpus, queries, read_qrels(qrels_path))


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open() as f:
        rows = csv.reader(f, delimiter="\t")
        header = next(rows, None)
        if header and header[0] != "query-id":  # headerless file: the first row is data
            rows = [header, *rows]
        for qid, did, score in rows:
            qrels.setdefault(qid, {})[did] = int(score)
    return qrels


def _beir_source(folder: Path) -> Source:
    test = read_beir(folder, "test")
    pairs = []
    if (folder / "qrels" / "train.tsv").exists():
        train = read_beir(folder, "train")
        for qid, docs in sorted(train.qrels.items()):
            for did, score in sorted(docs.items()):
                if score > 0 and qid in train.queries and did in train.corpus:
                    doc = train.corpus[did]
                    text = f"{doc['title']} {doc['text']}".strip()
                    pairs.append({"id": f"{qid}-{did}", "anchor": train.queries[qid], "positive": text})
    return Source(pairs, {"source": "beir", "path": str(folder.resolve())}, beir_test=test)


def _hub_source(spec: str) -> Source:
    try:
        import datasets
    except ImportError as err:  # pragma: no cover - datasets is a pinned dependency
        raise ConfigError("dataset: hub ids need the `datasets` package") from err
    try:
        ds = datasets.load_dataset(spec, split="train")
    except Exception as err:
        raise ConfigError(
            f"dataset: {spec!r} is not a local file or folder, and loading it as a Hugging Face "
            f"dataset id failed ({type(err).__name__}: {err}). Offline, use 'stdlib' or a local path."
        ) from err
    return Source(_pairs_from_rows(list(ds), spec), {"source": "huggingface", "id": spec})
