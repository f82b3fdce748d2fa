"""The one-GPU check's summary (tier1.tools.gpu_plan): one table from the files the stages wrote.

    python -m tier1.tools.gpu_summary table --run gpu-check --fp32-run gpu-check-fp32 \\
        --md summary.md --json summary.json
    python -m tier1.tools.gpu_summary cosine --model MODEL --corpus CORPUS.jsonl \\
        --queries QUERIES.jsonl --max-seq-length 256 --out COSINE.json
    python -m tier1.tools.gpu_summary files --run gpu-check --run gpu-check-fp32 --out files.tar.gz

`table` finds each run's files where the workflow puts them (tier1.layout, under --results): the
1-rank training, evaluation and probe, the fp32 run's training and evaluation, the cosine
measurement and each run's job times (the check's steps file). `files` packs those runs' records,
logs and reports, without weights, token ids, checkpoints or run files.

Every value is read through the record classes (tier1.records): a file that is absent (its step did
not run or failed) prints "n/a"; a file that is not the record it should be is an error naming it.
`cosine` measures how far bf16 autocast moves the embeddings from plain fp32 on the same device.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tier1 import layout
from tier1.records import CosineRecord, EvaluationRecord, ProbeRecord, Record, TrainRecord

NA = "n/a"
GIB = 2**30


def read(kind: type[Record], path: Path | None) -> Record | None:
    """The record at `path`, or None when there is no such file (its step did not run)."""
    if path is None or not Path(path).is_file():
        return None
    return kind.read(path)


def number(value: Any, fmt: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return NA if value is None else str(value)
    return format(value, fmt)


def seconds(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1:
        return number(value * 1000, ".2f") + " ms"
    return number(value, ".2f") + (" s" if isinstance(value, (int, float)) else "")


def rate(value: Any) -> str:
    """Whole numbers with thousands separators; three significant digits below 100."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < 100:
        return number(value, ".3g")
    return number(value, ",.0f")


def gib(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value / GIB:.2f} GiB"
    return number(value, "")


def fraction_as_percent(value: Any) -> str:
    """MFU as a percentage; a value above 1 is taken to be a percentage already."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value * 100 if value <= 1 else value:.1f}%"
    return number(value, "")


def plain(value: Any) -> str:
    return NA if value is None else str(value)


@dataclass(frozen=True)
class Row:
    label: str
    record: str  # the input it reads: train, train_fp32, eval_base, eval_trained, probe or cosine ("*": all)
    value: Callable[[Any], Any]  # the value, from that record (never called without one)
    show: Callable[[Any], str] = lambda value: plain(value)


def versions(record: TrainRecord) -> str:
    return f"{plain(record.libraries.get('torch'))} / {plain(record.libraries.get('transformers'))}"


def steps_and_batch(record: TrainRecord) -> str:
    return f"{record.steps} ({record.objective['global_batch']})"


def shape_counts(record: TrainRecord | EvaluationRecord) -> str:
    met, warmed = record.shapes.get("met"), record.shapes.get("warmed")
    if met is None:
        return NA
    return (f"{len(met)} met, {len(warmed or [])} warmed, "
            f"{plain(record.shapes.get('first_met_in_window'))} first met in the timed window")


def encoder_text(record: TrainRecord) -> str:
    e = record.encoder
    return f"{e['implementation']} {e['version']}, attention: {e['attention']}"


def peak(record: TrainRecord | EvaluationRecord) -> Any:
    """Rank 0's peak: memory allocated on a GPU, the process RSS on a CPU."""
    memory = record.ranks[0]["peak_memory"]
    return memory.get("max_memory_allocated", memory.get("peak_rss"))


def bf16_speedup(records: dict[str, Any]) -> str:
    """fp32's steady step over bf16's (above 1: bf16 is faster)."""
    a, b = records.get("train"), records.get("train_fp32")
    if not (a and b and a.steady_step_s and b.steady_step_s):
        return NA
    return number(b.steady_step_s / a.steady_step_s, ".2f") + "x"


def decimals(digits: int) -> Callable[[Any], str]:
    return lambda value: number(value, f".{digits}f")


ROWS = [
    Row("Device", "train", lambda t: t.ranks[0]["device_name"]),
    Row("torch / transformers", "train", versions),
    Row("Training precision", "train", lambda t: t.precision),
    Row("Training steps (global batch)", "train", steps_and_batch),
    Row("Train step time, median", "train", lambda t: t.steady_step_s, seconds),
    Row("Train step time, wall-average", "train", lambda t: t.step_evenness.get("wall_average_step_s"), seconds),
    Row("Train shapes (rows x width)", "train", shape_counts),
    Row("Encoder", "train", encoder_text),
    Row("Train samples/s", "train", lambda t: t.samples_per_s, rate),
    Row("Train tokens/s", "train", lambda t: t.throughput.get("tokens_per_s"), rate),
    Row("Train padded tokens/s", "train", lambda t: t.throughput.get("padded_tokens_per_s"), rate),
    Row("Train MFU", "train", lambda t: t.throughput.get("mfu"), fraction_as_percent),
    Row("Train peak memory allocated", "train", peak, gib),
    Row("Train wall time", "train", lambda t: t.wall_time_s, seconds),
    Row("Final loss", "train", lambda t: t.final_loss, decimals(4)),
    Row("Training precision (fp32 run)", "train_fp32", lambda t: t.precision),
    Row("Train step time, median (fp32 run)", "train_fp32", lambda t: t.steady_step_s, seconds),
    Row("Train samples/s (fp32 run)", "train_fp32", lambda t: t.samples_per_s, rate),
    Row("Train tokens/s (fp32 run)", "train_fp32", lambda t: t.throughput.get("tokens_per_s"), rate),
    Row("Train MFU (fp32 run)", "train_fp32", lambda t: t.throughput.get("mfu"), fraction_as_percent),
    Row("Train peak memory allocated (fp32 run)", "train_fp32", peak, gib),
    Row("bf16 speed-up per step (fp32 step / bf16 step)", "*", bf16_speedup),
    Row("Encode documents/s (base model)", "eval_base", lambda e: e.documents_per_s, rate),
    Row("Evaluation shapes (rows x width)", "eval_trained", shape_counts),
    Row("Encode documents/s (trained model)", "eval_trained", lambda e: e.documents_per_s, rate),
    Row("Evaluation wall time, median (trained)", "eval_trained", lambda e: e.wall_time_s, seconds),
    Row("Evaluation peak memory allocated", "eval_trained", peak, gib),
    Row("nDCG@10 before training", "eval_base", lambda e: e.metrics["ndcg@10"], decimals(4)),
    Row("nDCG@10 after training", "eval_trained", lambda e: e.metrics["ndcg@10"], decimals(4)),
    Row("nDCG@10 before training (fp32 run)", "eval_base_fp32", lambda e: e.metrics["ndcg@10"], decimals(4)),
    Row("Max train batch per device (probe)", "probe", lambda p: p.max_train_batch_per_device, rate),
    Row("Max encode batch per device (probe)", "probe", lambda p: p.max_encode_batch_per_device, rate),
    Row("Device memory (probe)", "probe", lambda p: p.device_capacity_bytes, gib),
    Row("bf16 vs fp32 embedding cosine, min", "cosine", lambda c: c.min_cosine, decimals(6)),
    Row("bf16 vs fp32 embedding cosine, mean", "cosine", lambda c: c.mean_cosine, decimals(6)),
]
# the record class each input is read through
KINDS = {"train": TrainRecord, "train_fp32": TrainRecord, "eval_base": EvaluationRecord,
         "eval_trained": EvaluationRecord, "eval_base_fp32": EvaluationRecord, "probe": ProbeRecord,
         "cosine": CosineRecord}


def record_paths(results: Path, run: str, fp32_run: str | None) -> dict[str, Path | None]:
    """Where each input of the table lies: the check's runs in the standard layout."""
    main, one = layout.Run(run, results), layout.trained_on(1)
    fp32 = layout.Run(fp32_run, results) if fp32_run else None
    return {"train": main.path(layout.train_record(one)),
            "train_fp32": fp32.path(layout.train_record(one)) if fp32 else None,
            "eval_base": main.path(layout.eval_metrics(layout.BASE, 1)),
            "eval_trained": main.path(layout.eval_metrics(one, 1)),
            "eval_base_fp32": fp32.path(layout.eval_metrics(layout.BASE, 1)) if fp32 else None,
            "probe": main.path(layout.probe(1)),
            "cosine": main.path(layout.GPU_COSINE)}


def read_steps(path: Path | None) -> list[tuple[str, float | None, int | None]]:
    """(step, seconds, exit status) rows of the check's steps.tsv; malformed fields become None."""
    if path is None or not Path(path).is_file():
        return []
    out = []
    with Path(path).open() as f:
        for fields in csv.reader(f, delimiter="\t"):
            if not fields or not fields[0]:
                continue
            secs = _parse(float, fields[1] if len(fields) > 1 else "")
            status = _parse(int, fields[2] if len(fields) > 2 else "")
            out.append((fields[0], secs, status))
    return out


def _parse(kind, text: str):
    try:
        return kind(text)
    except ValueError:
        return None


def check_steps(results: Path, run: str, fp32_run: str | None) -> list[tuple[str, float | None, int | None]]:
    """Each job's time and status, the fp32 run's jobs named with its run's name."""
    steps = read_steps(layout.Run(run, results).path(layout.GPU_CHECK_STEPS))
    if fp32_run:
        steps += [(f"{fp32_run} {name}", secs, status)
                  for name, secs, status in read_steps(layout.Run(fp32_run, results).path(layout.GPU_CHECK_STEPS))]
    return steps


def pack(results: Path, runs: list[str], out: Path) -> None:
    """The runs' folders in one archive, without what is large or not a measurement: weights,
    checkpoints, run files, and of the data only its manifest and the tokenize record."""
    left_out = {layout.MODEL, layout.CHECKPOINTS}
    data_kept = {layout.MANIFEST, layout.TOKENS_RECORD}

    def keep(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        inside = Path(*Path(member.name).parts[1:])  # the path inside the run's folder
        if left_out & set(inside.parts) or inside.name.endswith(Path(layout.EVAL_RUN).suffix):
            return None
        if inside.parts[:1] == (layout.DATA,) and member.isfile() and str(inside) not in data_kept:
            return None
        return member

    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w:gz") as tar:
        for run in runs:
            folder = layout.Run(run, results).folder
            if folder.is_dir():
                tar.add(folder, arcname=run, filter=keep)


def step_text(secs: float | None, status: int | None) -> str:
    text = NA if secs is None else f"{secs:.1f} s"
    if status == 5 and secs is not None:
        return text + " (no tests collected)"
    if status not in (0, None):
        return text + f" (FAILED, exit {status})"
    return text


def cell(row: Row, records: dict[str, Any]) -> str:
    if row.record == "*":
        return row.value(records)
    record = records.get(row.record)
    return NA if record is None else row.show(row.value(record))


def rows(records: dict[str, Any], steps: list[tuple[str, float | None, int | None]]) -> list[tuple[str, str]]:
    """(label, value) of every row of the table, the check's step times last; `records` maps an
    input's name to its record, or None when its file is absent."""
    out = [(row.label, cell(row, records)) for row in ROWS]
    out.extend((f"Time: {name}", step_text(secs, status)) for name, secs, status in steps)
    if steps:
        out.append(("Time: all steps", f"{sum(s for _, s, _ in steps if s is not None):.1f} s"))
    return out


def markdown(table: list[tuple[str, str]], title: str) -> str:
    width = max([len("Metric"), *(len(label) for label, _ in table)])
    lines = [f"# {title}", "", f"| {'Metric'.ljust(width)} | Value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {label.ljust(width)} | {value} |" for label, value in table]
    return "\n".join(lines) + "\n"


def cosine_agreement(model_spec: str, texts: list[str], max_seq_length: int, device,
                     batch_size: int = 64) -> CosineRecord:
    """Embeddings of `texts` under bf16 autocast against plain fp32, on `device`: min and mean cosine."""
    import torch

    from tier1.encoder import model, token_cache
    from tier1.runtime import device as devices

    encoder, tokenizer = model.load(model_spec)
    encoder = encoder.to(device).eval()
    ids = token_cache.token_ids(tokenizer, texts, max_seq_length)

    def embed(dtype):
        outs = []
        with torch.inference_mode(), devices.autocast(device, dtype):
            for start in range(0, len(ids), batch_size):
                batch = token_cache.collate(ids, list(range(start, min(start + batch_size, len(ids)))),
                                            tokenizer.pad_token_id)
                outs.append(encoder(**{k: v.to(device) for k, v in batch.items()}).float())
        return torch.cat(outs)

    cos = torch.nn.functional.cosine_similarity(embed(torch.bfloat16), embed(None), dim=-1)
    return CosineRecord(model=model_spec, device=devices.device_name(device), texts=len(texts),
                        max_seq_length=max_seq_length, min_cosine=float(cos.min()), mean_cosine=float(cos.mean()))


def sample_texts(corpus: Path, queries: Path, n: int) -> list[str]:
    """Half documents, half queries of the prepared test set, in file order."""
    from tier1.data.sources import read_jsonl
    from tier1.encoder.token_cache import doc_text

    docs = [doc_text({"title": d.get("title", ""), "text": d.get("text", "")}) for d in read_jsonl(corpus)]
    qs = [q["text"] for q in read_jsonl(queries)]
    return docs[: n - n // 2] + qs[: n // 2]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("table", help="print the summary table and write it as Markdown and JSON")
    t.add_argument("--results", type=Path, default=Path(layout.RESULTS))
    t.add_argument("--run", default="gpu-check", help="the check's run (bf16, the 1-rank pipeline)")
    t.add_argument("--fp32-run", default="gpu-check-fp32", help="its fp32 run; '' for none")
    t.add_argument("--title", default="tier1 one-GPU check")
    t.add_argument("--md", type=Path, action="append", default=[], help="Markdown file(s) to write")
    t.add_argument("--json", type=Path, action="append", default=[], help="JSON file(s) to write")
    c = sub.add_parser("cosine", help="bf16 autocast vs fp32 embeddings of the prepared test texts")
    c.add_argument("--model", required=True)
    c.add_argument("--corpus", type=Path, required=True)
    c.add_argument("--queries", type=Path, required=True)
    c.add_argument("--max-seq-length", type=int, default=256)
    c.add_argument("--texts", type=int, default=300)
    c.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("files", help="pack the check's runs (records, logs, reports) into one archive")
    p.add_argument("--results", type=Path, default=Path(layout.RESULTS))
    p.add_argument("--run", action="append", required=True, help="a run to pack (repeat for more)")
    p.add_argument("--out", type=Path, required=True, help="the .tar.gz to write")
    args = parser.parse_args(argv)

    if args.command == "files":
        pack(args.results, args.run, args.out)
        return

    if args.command == "cosine":
        import torch

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        result = cosine_agreement(args.model, sample_texts(args.corpus, args.queries, args.texts),
                                  args.max_seq_length, device)
        result.write(args.out)
        print(json.dumps(result.to_json()))
        return

    paths = record_paths(args.results, args.run, args.fp32_run or None)
    records = {name: read(kind, paths[name]) for name, kind in KINDS.items()}
    table = rows(records, check_steps(args.results, args.run, args.fp32_run or None))
    text = markdown(table, args.title)
    print(text, end="")
    for path in args.md:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for path in args.json:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(table), indent=2) + "\n")


if __name__ == "__main__":
    main()
