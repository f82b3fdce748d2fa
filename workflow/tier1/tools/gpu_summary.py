"""The one-GPU check's summary (scripts/gpu_check.sh): one table from the files the stages wrote.

    python -m tier1.tools.gpu_summary table --train WORK/train/train_metrics.json \\
        --train-fp32 WORK/train_fp32/train_metrics.json --eval-base WORK/eval_base/metrics.json \\
        --eval-trained WORK/eval_trained/metrics.json --probe WORK/probe/gpus1.json \\
        --cosine WORK/cosine.json --steps WORK/steps.tsv --md summary.md --json summary.json
    python -m tier1.tools.gpu_summary cosine --model MODEL --corpus WORK/data/test/corpus.jsonl \\
        --queries WORK/data/test/queries.jsonl --max-seq-length 256 --out WORK/cosine.json

Every value is read with .get() from the file that holds it; a missing file or key prints "n/a",
so the table also works on files written before a key existed (throughput.*, steady_step_s).
`cosine` measures how far bf16 autocast moves the embeddings from plain fp32 on the same device.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NA = "n/a"
GIB = 2**30


def read(path: Path | None) -> dict:
    """A stage's JSON, or {} when the file is absent or unreadable (its values then print n/a)."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def dig(record: Any, dotted: str) -> Any:
    """record["a"]["b"] for "a.b"; list items by index ("ranks.0.samples"); None if any step is missing."""
    for key in dotted.split("."):
        if isinstance(record, dict):
            record = record.get(key)
        elif isinstance(record, list) and key.isdigit() and int(key) < len(record):
            record = record[int(key)]
        else:
            return None
    return record


def first(record: dict, *paths: str) -> Any:
    """The first of several keys that is present (a new name, then the older ones)."""
    for path in paths:
        value = dig(record, path)
        if value is not None:
            return value
    return None


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
    record: str  # the input it reads: train, train_fp32, eval_base, eval_trained, probe or cosine
    value: Callable[[dict], str]


def key(*paths: str, show: Callable[[Any], str] = plain) -> Callable[[dict], str]:
    """The first present of `paths` (newest name first), formatted by `show`."""
    return lambda record: show(first(record, *paths))


def versions(record: dict) -> str:
    return f"{plain(dig(record, 'libraries.torch'))} / {plain(dig(record, 'libraries.transformers'))}"


def steps_and_batch(record: dict) -> str:
    return f"{plain(dig(record, 'steps'))} ({plain(dig(record, 'objective.global_batch'))})"


def four(value: Any) -> str:
    return number(value, ".4f")


def six(value: Any) -> str:
    return number(value, ".6f")


def shape_counts(record: dict) -> str:
    met, warmed = dig(record, "shapes.met"), dig(record, "shapes.warmed")
    if met is None:
        return NA
    return (f"{len(met)} met, {len(warmed or [])} warmed, "
            f"{plain(dig(record, 'shapes.first_met_in_window'))} first met in the timed window")


def bf16_speedup(records: dict) -> str:
    """fp32's steady step over bf16's (above 1: bf16 is faster)."""
    a, b = first(records.get("train", {}), *STEP_TIME), first(records.get("train_fp32", {}), *STEP_TIME)
    return number(b / a, ".2f") + "x" if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a else NA


STEP_TIME = ("steady_step_s", "time_split_median_s.step", "ranks.0.median_step_s")
PEAK = ("ranks.0.peak_memory.max_memory_allocated", "ranks.0.peak_memory.peak_rss")

ROWS = [
    Row("Device", "train", key("ranks.0.device_name", "hardware.gpus.0")),
    Row("torch / transformers", "train", versions),
    Row("Training precision", "train", key("precision")),
    Row("Training steps (global batch)", "train", steps_and_batch),
    Row("Train step time, median", "train", key(*STEP_TIME, show=seconds)),
    Row("Train step time, wall-average", "train", key("step_evenness.wall_average_step_s", show=seconds)),
    Row("Train shapes (rows x width)", "train", shape_counts),
    Row("Attention kernel", "train", key("attention")),
    Row("Train samples/s", "train", key("samples_per_s", show=rate)),
    Row("Train tokens/s", "train", key("throughput.tokens_per_s", show=rate)),
    Row("Train padded tokens/s", "train", key("throughput.padded_tokens_per_s", show=rate)),
    Row("Train MFU", "train", key("throughput.mfu", show=fraction_as_percent)),
    Row("Train peak memory allocated", "train", key(*PEAK, show=gib)),
    Row("Train wall time", "train", key("wall_time_s", show=seconds)),
    Row("Final loss", "train", key("final_loss", show=four)),
    Row("Training precision (fp32 run)", "train_fp32", key("precision")),
    Row("Train step time, median (fp32 run)", "train_fp32", key(*STEP_TIME, show=seconds)),
    Row("Train samples/s (fp32 run)", "train_fp32", key("samples_per_s", show=rate)),
    Row("Train tokens/s (fp32 run)", "train_fp32", key("throughput.tokens_per_s", show=rate)),
    Row("Train MFU (fp32 run)", "train_fp32", key("throughput.mfu", show=fraction_as_percent)),
    Row("Train peak memory allocated (fp32 run)", "train_fp32", key(*PEAK, show=gib)),
    Row("bf16 speed-up per step (fp32 step / bf16 step)", "*", bf16_speedup),
    Row("Encode documents/s (base model)", "eval_base", key("documents_per_s", show=rate)),
    Row("Evaluation shapes (rows x width)", "eval_trained", shape_counts),
    Row("Encode documents/s (trained model)", "eval_trained", key("documents_per_s", show=rate)),
    Row("Evaluation wall time, median (trained)", "eval_trained", key("wall_time_s", show=seconds)),
    Row("Evaluation peak memory allocated", "eval_trained", key("ranks.0.peak_memory.max_memory_allocated", show=gib)),
    Row("nDCG@10 before training", "eval_base", key("metrics.ndcg@10", show=four)),
    Row("nDCG@10 after training", "eval_trained", key("metrics.ndcg@10", show=four)),
    Row("Max train batch per device (probe)", "probe", key("max_train_batch_per_device", show=rate)),
    Row("Max encode batch per device (probe)", "probe", key("max_encode_batch_per_device", show=rate)),
    Row("Device memory (probe)", "probe", key("device_capacity_bytes", show=gib)),
    Row("bf16 vs fp32 embedding cosine, min", "cosine", key("min_cosine", show=six)),
    Row("bf16 vs fp32 embedding cosine, mean", "cosine", key("mean_cosine", show=six)),
]


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


def step_text(secs: float | None, status: int | None) -> str:
    text = NA if secs is None else f"{secs:.1f} s"
    if status == 5 and secs is not None:
        return text + " (no tests collected)"
    if status not in (0, None):
        return text + f" (FAILED, exit {status})"
    return text


def rows(records: dict[str, dict], steps: list[tuple[str, float | None, int | None]]) -> list[tuple[str, str]]:
    """(label, value) of every row of the table, the check's step times last."""
    out = [(row.label, row.value(records if row.record == "*" else records.get(row.record, {}))) for row in ROWS]
    out.extend((f"Time: {name}", step_text(secs, status)) for name, secs, status in steps)
    if steps:
        out.append(("Time: all steps", f"{sum(s for _, s, _ in steps if s is not None):.1f} s"))
    return out


def markdown(table: list[tuple[str, str]], title: str) -> str:
    width = max([len("Metric"), *(len(label) for label, _ in table)])
    lines = [f"# {title}", "", f"| {'Metric'.ljust(width)} | Value |", f"|{'-' * (width + 2)}|-------|"]
    lines += [f"| {label.ljust(width)} | {value} |" for label, value in table]
    return "\n".join(lines) + "\n"


def cosine_agreement(model_spec: str, texts: list[str], max_seq_length: int, device, batch_size: int = 64) -> dict:
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
    return {"model": model_spec, "device": devices.device_name(device), "texts": len(texts),
            "max_seq_length": max_seq_length, "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean())}


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
    for name in ("train", "train-fp32", "eval-base", "eval-trained", "probe", "cosine", "steps"):
        t.add_argument(f"--{name}", type=Path, default=None)
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
    args = parser.parse_args(argv)

    if args.command == "cosine":
        import torch

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        result = cosine_agreement(args.model, sample_texts(args.corpus, args.queries, args.texts),
                                  args.max_seq_length, device)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(json.dumps(result))
        return

    records = {"train": read(args.train), "train_fp32": read(args.train_fp32), "eval_base": read(args.eval_base),
               "eval_trained": read(args.eval_trained), "probe": read(args.probe), "cosine": read(args.cosine)}
    table = rows(records, read_steps(args.steps))
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
