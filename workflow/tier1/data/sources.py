"""Reading a dataset spec into pairs and, where the source has one, a ready-made test set.

`dataset` in the config is one of:
  - "stdlib": code-search pairs from the Python standard library (offline default);
  - "python-source": the same from the standard library plus the environment's site-packages
    (offline, tens of thousands of pairs; which ones depends on the installed packages);
  - a local pair file (.jsonl, .json, .csv, .parquet) with an anchor and a positive column (other
    columns are not read; a label or score column is refused);
  - a local BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv, and qrels/train.tsv to train on);
  - otherwise a Hugging Face dataset id, loaded through `datasets` (needs the network).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from tier1.config import ConfigError

ANCHOR_COLUMNS = ("anchor", "query", "question", "sentence1", "text1")
POSITIVE_COLUMNS = ("positive", "passage", "document", "text", "answer", "sentence2", "text2")
PAIR_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
# A column that says whether (or how well) a row's texts match: tier1 trains every row as a match,
# and cannot tell which values mean "no" (SNLI's label 0 is entailment, STS's score 5 is the best).
LABEL_COLUMNS = ("label", "labels", "gold_label", "score", "scores", "similarity", "similarity_score",
                 "relevance", "relevant", "is_duplicate", "is_positive")


@dataclass
class Source:
    pairs: list[dict[str, str]]
    description: dict[str, str]
    # A BEIR folder brings its own evaluation set; otherwise one is cut from the pairs.
    beir_test: BeirSet | None = None
    # Rows left out while reading: {"dropped_empty": n, "dropped_duplicates": n}.
    dropped: dict[str, int] = field(default_factory=lambda: {"dropped_empty": 0, "dropped_duplicates": 0})
    # What the source holds that training does not read (one line, or ""), e.g. a negative column.
    unused: str = ""


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
    if path.suffix in PAIR_SUFFIXES:
        if not path.exists():
            raise ConfigError(f"dataset: file {spec!r} does not exist; check the path (relative to the run folder)")
        rows = read_rows(path)
        pairs, dropped = clean_pairs(rows, spec)
        return Source(pairs, {"source": "file", "path": str(path.resolve())}, dropped=dropped,
                      unused=unused_columns(rows, spec))
    if path.exists():
        raise ConfigError(
            f"dataset: {spec!r} has suffix {path.suffix!r}; give a BEIR folder or a "
            f"{'/'.join(PAIR_SUFFIXES)} file"
        )
    return _hub_source(spec)


def read_text(path: Path) -> str:
    """The file as UTF-8 text; anything else is refused naming the first bad byte's offset."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"dataset: {path} is not UTF-8 (byte {err.start}: {data[err.start:err.start + 1]!r}); "
            f"re-encode it as UTF-8, e.g. iconv -f latin1 -t utf-8"
        ) from None


def read_rows(path: Path) -> list[dict]:
    """The rows of a pair file (.jsonl, .json, .csv, .parquet) as dicts."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return read_jsonl(path)
    if path.suffix == ".json":
        try:
            data = json.loads(read_text(path))
        except json.JSONDecodeError as err:
            raise ConfigError(f"dataset: {path} line {err.lineno}: not valid JSON ({err.msg}); fix the file") from None
        rows = data if isinstance(data, list) else data.get("data", []) if isinstance(data, dict) else None
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ConfigError(f"dataset: {path} is not a list of objects (or {{\"data\": [...]}}); write one object per pair")
        return rows
    if path.suffix == ".csv":
        return list(csv.DictReader(io.StringIO(read_text(path), newline="")))
    if path.suffix == ".parquet":
        return _parquet_rows(path)
    raise ConfigError(f"dataset: {path} has suffix {path.suffix!r}; use one of {'/'.join(PAIR_SUFFIXES)}")


def _parquet_rows(path: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise ConfigError(f"dataset: {path} is not a readable parquet file ({err}); rewrite it") from None
    for name, kind in zip(table.column_names, table.schema.types):
        if name in ANCHOR_COLUMNS + POSITIVE_COLUMNS and not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise ConfigError(
                f"dataset: {path} column {name!r} holds {kind}, not strings; store the texts as strings"
            )
    return table.to_pylist()


def _pick(columns: list[str], wanted: tuple[str, ...], role: str, where: str) -> str:
    for name in wanted:
        if name in columns:
            return name
    raise ConfigError(
        f"dataset: {where} has no {role} column (found {columns}); name it one of {', '.join(wanted)}"
    )


def _columns(rows: list[dict]) -> list[str]:
    """Every column of `rows`, in the order first seen (a JSON line may add one)."""
    return list(dict.fromkeys(key for row in rows for key in row))


def pair_columns(rows: list[dict], where: str) -> tuple[str, str]:
    """The anchor and positive columns of `rows`; a label or score column is refused."""
    columns = _columns(rows)
    for name in columns:
        if name.lower() in LABEL_COLUMNS:
            raise ConfigError(
                f"dataset: {where} has a {name!r} column, but tier1 trains every row as a positive pair (with the "
                f"batch's other rows as negatives), so a row marked as not matching would be learnt as a match; "
                f"keep only the matching rows and drop the {name!r} column"
            )
    a = _pick(columns, ANCHOR_COLUMNS, "anchor", where)
    return a, _pick([c for c in columns if c != a], POSITIVE_COLUMNS, "positive", where)


def unused_columns(rows: list[dict], where: str) -> str:
    """One line naming the columns training does not read ("" when none): a silently dropped
    column can change what the user thinks is trained."""
    anchor, positive = pair_columns(rows, where)
    unused = [c for c in _columns(rows) if c not in (anchor, positive, "id")]
    negatives = [c for c in unused if "negative" in c.lower()]
    others = [c for c in unused if c not in negatives]
    notes = []
    if negatives:
        notes.append(f"{_names(negatives)} not used: tier1's negatives are the batch's other positives")
    if others:
        notes.append(f"{_names(others)} not used")
    if not notes:
        return ""
    return f"dataset: {where}: the anchor is column {anchor!r}, the positive {positive!r}; " + "; ".join(notes)


def fewer_test_queries(spec: str, judged: int, asked: int) -> str:
    """The line for a BEIR folder judging fewer test queries than test_samples asks: its own test
    set is sampled, never filled up (planning and the prepare job say the same)."""
    return (f"dataset: {spec!r} judges {judged} test queries (qrels/test.tsv), fewer than test_samples "
            f"({asked}); all {judged} are used")


def _names(columns: list[str]) -> str:
    return f"column {columns[0]!r} is" if len(columns) == 1 else f"columns {', '.join(map(repr, columns))} are"


def _normalised(text: str) -> str:
    return " ".join(text.split()).lower()


def clean_pairs(rows: list[dict], where: str) -> tuple[list[dict[str, str]], dict[str, int]]:
    """The usable pairs of `rows`, and how many rows were left out.

    A row whose anchor or positive is empty (or only whitespace) is dropped; so is a later row that
    repeats an earlier one's id, anchor or positive (whitespace-normalised, case-insensitive), so no
    text is both trained on and tested with. Texts that are not strings, and a label column
    (`pair_columns`), are refused.
    """
    if not rows:
        raise ConfigError(f"dataset: {where} holds no rows; give a file with anchor/positive pairs")
    a, p = pair_columns(rows, where)
    pairs, ids, anchors, positives = [], set(), set(), set()
    dropped = {"dropped_empty": 0, "dropped_duplicates": 0}
    for i, row in enumerate(rows):
        texts = []
        for column in (a, p):
            value = row.get(column)
            if value is not None and not isinstance(value, str):
                raise ConfigError(
                    f"dataset: {where} row {i + 1} column {column!r} holds {type(value).__name__}, not a string; "
                    f"store the texts as strings"
                )
            texts.append((value or "").strip())
        anchor, positive = texts
        if not anchor or not positive:
            dropped["dropped_empty"] += 1
            continue
        pid = str(row["id"]) if row.get("id") is not None else str(i)
        keys = _normalised(anchor), _normalised(positive)
        if pid in ids or keys[0] in anchors or keys[1] in positives:
            dropped["dropped_duplicates"] += 1
            continue
        ids.add(pid)
        anchors.add(keys[0])
        positives.add(keys[1])
        pairs.append({"id": pid, "anchor": anchor, "positive": positive})
    if not pairs:
        raise ConfigError(
            f"dataset: {where} has no usable pairs: of {len(rows)} rows, {dropped['dropped_empty']} have an empty "
            f"{a!r} or {p!r} and {dropped['dropped_duplicates']} repeat an earlier row; give rows with both texts"
        )
    return pairs, dropped


def _json_lines(path: Path, label: str = "dataset"):
    """(line number, object) of every non-blank line of a JSON-lines file."""
    for number, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{label}: {path} line {number}: not valid JSON ({err.msg}); fix or remove the line") from None
        if not isinstance(obj, dict):
            raise ConfigError(f"{label}: {path} line {number}: a JSON object is expected, not {type(obj).__name__}")
        yield number, obj


def read_jsonl(path: Path) -> list[dict]:
    return [obj for _, obj in _json_lines(Path(path))]


def read_beir(folder: Path, split: str = "test") -> BeirSet:
    """A BEIR folder: corpus.jsonl, queries.jsonl and qrels/<split>.tsv."""
    for name in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (folder / name).is_file():
            raise ConfigError(
                f"dataset: BEIR folder {str(folder)!r} has no {name}; "
                f"a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/test.tsv"
            )
    return read_beir_files(folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv")


def _records(path: Path, text_key: str = "text"):
    """(id, object) of every line of a BEIR corpus or queries file; each must have `_id`."""
    seen = set()
    for number, obj in _json_lines(path):
        if obj.get("_id") in (None, ""):
            raise ConfigError(f"dataset: {path} line {number} has no \"_id\"; give every line an \"_id\"")
        rid = str(obj["_id"])
        if rid in seen:
            raise ConfigError(f"dataset: {path} line {number} repeats \"_id\" {rid!r}; ids must be unique")
        value = obj.get(text_key, "")
        if not isinstance(value, str):
            raise ConfigError(f"dataset: {path} line {number}: {text_key!r} is {type(value).__name__}, not a string")
        seen.add(rid)
        yield rid, obj


def read_beir_files(corpus_path: Path, queries_path: Path, qrels_path: Path) -> BeirSet:
    corpus = {rid: {"title": str(doc.get("title") or ""), "text": doc.get("text") or ""}
              for rid, doc in _records(corpus_path)}
    queries = {rid: q.get("text") or "" for rid, q in _records(queries_path)}
    qrels = read_qrels(qrels_path)
    check_qrels(qrels, corpus, queries, qrels_path)
    return BeirSet(corpus, queries, qrels)


def check_qrels(qrels: dict[str, dict[str, int]], corpus: dict, queries: dict, path: Path) -> None:
    """Every judged query and document must exist: a judgement of a missing one scores 0 silently."""
    for what, known, ids in (("documents", corpus, {d for docs in qrels.values() for d in docs}),
                             ("queries", queries, set(qrels))):
        unknown = sorted(ids - set(known))
        if unknown:
            raise ConfigError(
                f"dataset: {path} names {len(unknown)} of {len(ids)} {what} that are not in the "
                f"{'corpus' if what == 'documents' else 'queries'} file (e.g. {unknown[0]!r}); "
                f"remove those rows or add the {what}"
            )


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """qrels TSV rows `query-id corpus-id score` (an optional header first)."""
    qrels: dict[str, dict[str, int]] = {}
    rows = csv.reader(io.StringIO(read_text(path), newline=""), delimiter="\t")
    for number, row in enumerate(rows, 1):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if number == 1 and row[0] == "query-id":
            continue
        if len(row) != 3:
            raise ConfigError(
                f"dataset: {path} line {number} has {len(row)} tab-separated fields, not 3 "
                f"(query-id, corpus-id, score); fix the line"
            )
        qid, did, score = row
        try:
            qrels.setdefault(qid, {})[did] = int(score)
        except ValueError:
            raise ConfigError(f"dataset: {path} line {number}: score {score!r} is not an integer; fix the line") from None
    return qrels


def _beir_source(folder: Path) -> Source:
    """The folder's test set and its training pairs (qrels/train.tsv); every run trains, so a folder
    that gives none is refused here, where planning and the prepare job both read it."""
    test = read_beir(folder, "test")
    train_tsv = folder / "qrels" / "train.tsv"
    if not train_tsv.exists():
        raise ConfigError(
            f"dataset: BEIR folder {str(folder)!r} has no qrels/train.tsv, so no training pairs: "
            f"add one (query-id, corpus-id, score rows) or give a pair file"
        )
    train = read_beir(folder, "train")
    rows = []
    for qid, docs in sorted(train.qrels.items()):
        for did, score in sorted(docs.items()):
            if score > 0:
                doc = train.corpus[did]
                text = f"{doc['title']} {doc['text']}".strip()
                rows.append({"id": f"{qid}-{did}", "anchor": train.queries[qid], "positive": text})
    if not rows:
        raise ConfigError(
            f"dataset: {train_tsv} judges no pair with a score above 0, so no training pairs; "
            f"add rows with score 1 or more"
        )
    pairs, dropped = clean_pairs(rows, str(train_tsv))
    # A training query that is also a test query would be learnt before it is asked.
    tested = {_normalised(test.queries[q]) for q in test.qrels}
    kept = [p for p in pairs if _normalised(p["anchor"]) not in tested]
    if not kept:
        raise ConfigError(
            f"dataset: every query of {train_tsv} is also asked in qrels/test.tsv (same text), and a tested query "
            f"is not trained on, so no training pairs are left; give training pairs for other queries"
        )
    dropped["dropped_duplicates"] += len(pairs) - len(kept)
    return Source(kept, {"source": "beir", "path": str(folder.resolve())}, beir_test=test, dropped=dropped)


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
    rows = list(ds)
    pairs, dropped = clean_pairs(rows, spec)
    return Source(pairs, {"source": "huggingface", "id": spec}, dropped=dropped, unused=unused_columns(rows, spec))
