"""The one-GPU check's summary (tier1.tools.gpu_plan): one table from the files the stages wrote.

    python -m tier1.tools.gpu_summary table --run gpu-check --fp32-run gpu-check-fp32 \\
        --parts-run gpu-check-parts2 --fsdp-run gpu-check-fsdp --md summary.md --json summary.json
    python -m tier1.tools.gpu_summary cosine --model MODEL --corpus CORPUS.jsonl \\
        --queries QUERIES.jsonl --max-seq-length 256 --out COSINE.json
    python -m tier1.tools.gpu_summary files --run gpu-check --run gpu-check-fp32 --out files.tar.gz

`table` finds each run's files where the workflow puts them (tier1.layout, under --results): the
1-rank training, evaluation and probe, 2 ranks sharing the GPU against 1 rank (the same-model
verdict on the per-step losses, as the report judges it), the bench against sentence-transformers,
the fp32 run's training and evaluation, the 2-length-part run's training, the FSDP2 run's 2 shared
ranks against DDP's (per-step losses, step, memory per rank), the cosine measurement
and each run's job times (the check's steps file). `files` packs those runs' records,
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
from tier1.records import BenchRecord, CosineRecord, EvaluationRecord, ProbeRecord, Record, TrainRecord
from tier1.report import analysis
from tier1.report.collect import Results, read_loss

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
    """Rank 0's peak allocated: on a GPU its memory, on a CPU (the rehearsal) the host memory
    allocated (tier1.measure.host_allocated); the process RSS only for a record without either."""
    return analysis.peak_bytes(record.ranks[0]["peak_memory"]) or None


def step_ratio(a: TrainRecord | None, b: TrainRecord | None) -> str:
    """`b`'s steady step over `a`'s (above 1: `a` is faster)."""
    if not (a and b and a.steady_step_s and b.steady_step_s):
        return NA
    return number(b.steady_step_s / a.steady_step_s, ".2f") + "x"


def bf16_speedup(records: dict[str, Any]) -> str:
    """fp32's steady step over bf16's (above 1: bf16 is faster)."""
    a, b = records.get("train"), records.get("train_fp32")
    if a and b and a.steady_step_s and b.steady_step_s and a.precision == b.precision:
        return f"n/a (both ran in {a.precision})"  # a CPU's auto precision is fp32 too: nothing to compare
    return step_ratio(a, b)


def parts_ratio(records: dict[str, Any]) -> str:
    """The 2-length-part step over the 1-part step (above 1: one part is faster)."""
    return step_ratio(records.get("train"), records.get("train_parts2"))


def fsdp_against_ddp_losses(records: dict[str, Any]) -> str:
    """FSDP2's per-step losses at 2 shared ranks against DDP's: the largest relative difference
    (the same batches, seeds and dropout masks; only the strategy differs)."""
    ddp, fsdp = (records.get("losses") or {}).get(2), records.get("fsdp_losses")
    if not (ddp and fsdp):
        return NA
    theirs = {row["step"]: row["loss"] for row in ddp}
    diffs = [abs(row["loss"] - theirs[row["step"]]) / abs(theirs[row["step"]])
             for row in fsdp if row["step"] in theirs and theirs[row["step"]]]
    return f"{max(diffs):.3g} over {len(diffs)} steps" if diffs else "n/a (no step in common)"


def fsdp_step_ratio(records: dict[str, Any]) -> str:
    """FSDP2's steady step over DDP's, 2 ranks sharing the GPU (over gloo: no speedup figure)."""
    return step_ratio(records.get("train_2"), records.get("train_fsdp2"))


def first_gradient_norms(records: dict[str, Any]) -> str:
    """The first step's whole-gradient norm at 1 rank, and at 2 shared ranks under each strategy
    beside it: N times 1 rank's where a gradient is summed that should be averaged (the losses
    would not show it: AdamW's update hardly depends on the gradient's scale)."""
    base = analysis.first_gradient_norm(records.get("train"))
    parts = []
    for label, key in (("1 rank", "train"), ("DDP 2 ranks", "train_2"), ("FSDP2 2 ranks", "train_fsdp2")):
        norm = analysis.first_gradient_norm(records.get(key))
        if norm is not None:
            parts.append(f"{label} {norm:.4g}" + (f" ({norm / base:.3f}x)" if base and key != "train" else ""))
    return "; ".join(parts) or NA


def model_states(record: TrainRecord) -> Any:
    held = analysis.model_state_per_rank(record)
    return held["total"] if held else None


def same_model(records: dict[str, Any]) -> str:
    """2 ranks against 1 on the per-step losses, held to the report's tolerance (the dropout
    reference's RMS difference from 1 rank, times the report's factor)."""
    losses = records.get("losses") or {}
    if not (losses.get(1) and losses.get(2)):
        return NA
    agree = analysis.loss_agreement(Results(loss={1: losses[1], 2: losses[2]},
                                            reference_loss=losses.get("reference") or []))
    rms, tolerance = agree["rms"].get(2), agree["tolerance"]
    verdict = ("PASS" if rms is not None and rms <= tolerance else "FAIL") if agree["judged"] else \
        f"not judged ({agree['steps']} steps, under {analysis.DROPOUT_MIN_STEPS})"
    yardstick = "dropout reference" if agree["dropout_rms"] is not None else "float noise, no dropout reference"
    shown = "n/a (no step in common)" if rms is None else f"{rms:.3g}"
    return f"{verdict}: per-step loss RMS difference {shown}, tolerance {tolerance:.3g} ({yardstick})"


def recipe(name: str, value: Callable[[dict], Any], show: Callable[[Any], str]) -> Callable[[BenchRecord], str]:
    """A bench recipe's figure; where that recipe did not run (a CPU runs only the matched ones),
    the first that did, named."""
    def cell(bench: BenchRecord) -> str:
        if name in bench.recipes:
            return show(value(bench.recipes[name]))
        if not bench.recipes:
            return NA
        other, measured = next(iter(bench.recipes.items()))
        return f"{show(value(measured))} ({other} recipe; {name} did not run)"
    return cell


def ratio_marked(key: str, noise_key: str) -> Callable[[dict], str]:
    """A tier1/sentence-transformers ratio, said to be within noise or marked where it is."""
    def text(measured: dict) -> str:
        ratio = measured.get(key)
        if ratio is None:
            return NA
        marks = sorted({m for side in measured.get("sides", {}).values() for m in side.get("marks", [])})
        notes = (["within noise"] if measured.get("within_noise", {}).get(noise_key) else []) + marks
        return f"{ratio:.2f}x" + (f" ({'; '.join(notes)})" if notes else "")
    return text


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
    Row("Same model, 2 ranks sharing the GPU vs 1 rank", "*", same_model),
    Row("Train step time, median (2 ranks sharing the GPU)", "train_2", lambda t: t.steady_step_s, seconds),
    Row("Train step time, median (2 ranks sharing the GPU, FSDP2)", "train_fsdp2", lambda t: t.steady_step_s, seconds),
    Row("FSDP2 step / DDP step (2 ranks sharing the GPU)", "*", fsdp_step_ratio),
    Row("FSDP2 against DDP, 2 ranks: per-step loss, largest relative difference", "*", fsdp_against_ddp_losses),
    Row("First-step gradient norm (2 ranks against 1)", "*", first_gradient_norms),
    Row("Model states per rank, DDP (2 ranks)", "train_2", model_states, gib),
    Row("Model states per rank, FSDP2 (2 ranks)", "train_fsdp2", model_states, gib),
    Row("Train peak memory allocated, DDP (2 ranks, rank 0)", "train_2", peak, gib),
    Row("Train peak memory allocated, FSDP2 (2 ranks, rank 0)", "train_fsdp2", peak, gib),
    Row("Bench training, tier1 / sentence-transformers (defaults)", "bench", lambda b: b,
        recipe("defaults", ratio_marked("train_steps_ratio", "train_steps_ratio"), str)),
    Row("Bench encoding, tier1 / sentence-transformers (defaults)", "bench", lambda b: b,
        recipe("defaults", ratio_marked("encode_texts_ratio", "encode_texts_ratio"), str)),
    Row("Bench repeats per side", "bench", lambda b: b.repeats),
    Row("Training precision (fp32 run)", "train_fp32", lambda t: t.precision),
    Row("Train step time, median (fp32 run)", "train_fp32", lambda t: t.steady_step_s, seconds),
    Row("Train samples/s (fp32 run)", "train_fp32", lambda t: t.samples_per_s, rate),
    Row("Train tokens/s (fp32 run)", "train_fp32", lambda t: t.throughput.get("tokens_per_s"), rate),
    Row("Train MFU (fp32 run)", "train_fp32", lambda t: t.throughput.get("mfu"), fraction_as_percent),
    Row("Train peak memory allocated (fp32 run)", "train_fp32", peak, gib),
    Row("bf16 speed-up per step (fp32 step / bf16 step)", "*", bf16_speedup),
    Row("Train step time, median (2 length parts)", "train_parts2", lambda t: t.steady_step_s, seconds),
    Row("Train shapes (2 length parts)", "train_parts2", shape_counts),
    Row("2 length parts step / 1 part step", "*", parts_ratio),
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
# What the check must show on an H100 or H200 (the GPU half's acceptance): each a row "Target: ..."
# with PASS, FAIL, or n/a and why (a CPU rehearsal, a step that did not run).
STEP_TARGET_S = 0.025    # bf16 steady step at 128 pairs x 256 tokens
MFU_TARGET = 0.15        # counted on the FLOPs the step really ran
EVENNESS_TARGET = 0.10   # wall-average step within this of the median
BF16_TARGET = 2.0        # bf16 at least this much faster per step than fp32
BENCH_TARGETS = {"train_steps_ratio": 1.5, "encode_texts_ratio": 2.0}  # against sentence-transformers' defaults


def on_gpu(record: TrainRecord | None) -> bool:
    return bool(record and record.hardware.get("gpus"))


def judged(ok: bool | None, text: str) -> str:
    return f"{'n/a' if ok is None else 'PASS' if ok else 'FAIL'}: {text}"


def target_rows(records: dict[str, Any]) -> list[tuple[str, str]]:
    train, fp32, bench = records.get("train"), records.get("train_fp32"), records.get("bench")
    gpu = on_gpu(train)
    why_not = "no GPU (a CPU rehearsal)" if train and not gpu else "the 1-rank training did not run"
    out = []
    if gpu and train.steady_step_s:
        mfu = train.throughput.get("mfu")
        out.append((f"Target: bf16 step <= {STEP_TARGET_S * 1000:.0f} ms, MFU >= {MFU_TARGET:.0%}",
                    judged(train.steady_step_s <= STEP_TARGET_S and (mfu or 0) >= MFU_TARGET,
                           f"{train.steady_step_s * 1000:.2f} ms, MFU {fraction_as_percent(mfu)}")))
        wall = train.step_evenness.get("wall_average_step_s")
        out.append((f"Target: wall-average step within {EVENNESS_TARGET:.0%} of the median",
                    judged(None if wall is None else abs(wall / train.steady_step_s - 1) <= EVENNESS_TARGET,
                           NA if wall is None else f"{(wall / train.steady_step_s - 1) * 100:+.1f}%")))
        if fp32 and fp32.steady_step_s:
            speedup = fp32.steady_step_s / train.steady_step_s
            out.append((f"Target: bf16 >= {BF16_TARGET:g}x fp32 per step", judged(speedup >= BF16_TARGET, f"{speedup:.2f}x")))
        own = [m for t in (train, records.get("train_2")) if t for m in t.marks]
        out.append(("Target: no window marked", judged(not own, "; ".join(own) or "none marked")))
    else:
        out.append(("Target: bf16 step, MFU, evenness, bf16 against fp32", f"n/a: {why_not}"))
    for key, floor in BENCH_TARGETS.items():
        what = "training" if key.startswith("train") else "encoding"
        measured = bench.recipes.get("defaults") if bench else None
        why = ("the bench did not run" if bench is None else "not on a GPU" if bench.device.startswith("cpu")
               else "its defaults recipe did not run" if measured is None else None)
        if why:
            out.append((f"Target: bench {what} >= {floor:g}x sentence-transformers", f"n/a: {why}"))
            continue
        marks = sorted({m for side in measured["sides"].values() for m in side.get("marks", [])})
        clean = bench.repeats >= 3 and not marks
        out.append((f"Target: bench {what} >= {floor:g}x sentence-transformers, 3 clean repeats",
                    judged(measured[key] >= floor and clean,
                           f"{measured[key]:.2f}x in {bench.repeats} repeats" + (f", marked: {'; '.join(marks)}" if marks else ""))))
    return out


# the record class each input is read through
KINDS = {"train": TrainRecord, "train_2": TrainRecord, "train_fp32": TrainRecord, "train_parts2": TrainRecord,
         "train_fsdp2": TrainRecord,
         "eval_base": EvaluationRecord, "eval_trained": EvaluationRecord, "eval_base_fp32": EvaluationRecord,
         "probe": ProbeRecord, "cosine": CosineRecord, "bench": BenchRecord}


def record_paths(results: Path, run: str, fp32_run: str | None,
                 parts_run: str | None = None, fsdp_run: str | None = None) -> dict[str, Path | None]:
    """Where each input of the table lies: the check's runs in the standard layout."""
    main, one = layout.Run(run, results), layout.trained_on(1)
    fp32 = layout.Run(fp32_run, results) if fp32_run else None
    parts = layout.Run(parts_run, results) if parts_run else None
    fsdp = layout.Run(fsdp_run, results) if fsdp_run else None
    return {"train": main.path(layout.train_record(one)),
            "train_2": main.path(layout.train_record(layout.trained_on(2))),
            "train_fp32": fp32.path(layout.train_record(one)) if fp32 else None,
            "train_parts2": parts.path(layout.train_record(one)) if parts else None,
            "train_fsdp2": fsdp.path(layout.train_record(layout.trained_on(2, "fsdp"))) if fsdp else None,
            "bench": main.path(layout.BENCH_JSON),
            "eval_base": main.path(layout.eval_metrics(layout.BASE, 1)),
            "eval_trained": main.path(layout.eval_metrics(one, 1)),
            "eval_base_fp32": fp32.path(layout.eval_metrics(layout.BASE, 1)) if fp32 else None,
            "probe": main.path(layout.probe(1)),
            "cosine": main.path(layout.GPU_COSINE)}


def loss_logs(results: Path, run: str) -> dict[Any, list[dict]]:
    """The per-step losses at 1 and 2 ranks and the dropout reference's, where they were written."""
    main = layout.Run(run, results)
    paths = {1: layout.loss_csv(layout.trained_on(1)), 2: layout.loss_csv(layout.trained_on(2)),
             "reference": layout.loss_csv(layout.REFERENCE)}
    return {key: read_loss(main.path(p)) for key, p in paths.items() if main.path(p).is_file()}


def fsdp_losses(results: Path, run: str) -> list[dict] | None:
    """The FSDP2 run's per-step losses at 2 ranks, where written."""
    path = layout.Run(run, results).path(layout.loss_csv(layout.trained_on(2, "fsdp")))
    return read_loss(path) if path.is_file() else None


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


def check_steps(results: Path, run: str, *others: str | None) -> list[tuple[str, float | None, int | None]]:
    """Each job's time and status, the other runs' jobs named with their run's name."""
    steps = read_steps(layout.Run(run, results).path(layout.GPU_CHECK_STEPS))
    for other in filter(None, others):
        steps += [(f"{other} {name}", secs, status)
                  for name, secs, status in read_steps(layout.Run(other, results).path(layout.GPU_CHECK_STEPS))]
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
        # a run beside the main one holds its data as hard links (gpu_plan's reuse_data)
        if inside.parts[:1] == (layout.DATA,) and (member.isfile() or member.islnk()) and str(inside) not in data_kept:
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
    out = [(row.label, cell(row, records)) for row in ROWS] + target_rows(records)
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
    t.add_argument("--parts-run", default="gpu-check-parts2", help="its run in 2 length parts; '' for none")
    t.add_argument("--fsdp-run", default="gpu-check-fsdp", help="its run under FSDP2; '' for none")
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

    paths = record_paths(args.results, args.run, args.fp32_run or None, args.parts_run or None, args.fsdp_run or None)
    records = {name: read(kind, paths[name]) for name, kind in KINDS.items()}
    records["losses"] = loss_logs(args.results, args.run)
    records["fsdp_losses"] = fsdp_losses(args.results, args.fsdp_run) if args.fsdp_run else None
    table = rows(records, check_steps(args.results, args.run, args.fp32_run or None, args.parts_run or None,
                                      args.fsdp_run or None))
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
