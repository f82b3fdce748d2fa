"""performance.md and performance.csv from the collected results."""

from __future__ import annotations

import csv
import io

from tier1.report import analysis
from tier1.report.analysis import fmt, pct
from tier1.report.collect import CARD_EXPECTATION, Results

GB = 1e9


def machine_line(r: Results) -> str:
    any_train = next(iter(r.train.values()))
    hw, libs = any_train["hardware"], any_train["libraries"]
    if hw.get("gpus"):
        dev = f"{len(hw['gpus'])}x {hw['gpus'][0]} (driver {hw.get('driver') or 'unknown'}, CUDA {hw.get('cuda')})"
    else:
        dev = f"no GPU: a CPU rehearsal on {hw['cpu']}, {hw['cores']} cores (ranks are CPU processes)"
    lib = ", ".join(f"{k} {v}" for k, v in libs.items())
    return (f"- Machine: {dev}\n- Libraries: {lib}\n- Git revision: {any_train['git_revision']}; "
            f"config hash: {any_train['config_hash']}\n- Dataset: {r.manifest['dataset'].get('source')} "
            f"({r.manifest['counts']['train_pairs']} training pairs, {r.manifest['counts']['test_queries']} queries, "
            f"{r.manifest['counts']['corpus_documents']} documents)")


def csv_rows(r: Results) -> list[dict]:
    """Long form: one measured value per row, with the file it came from."""
    out = []

    def add(metric, n, value, unit, source):
        out.append({"metric": metric, "world_size": n, "value": value, "unit": unit, "source": source})

    for row in analysis.scaling_rows(r):
        n = row["world_size"]
        for kind, prefix, stage, rate_unit in (("train", "train", "training", "samples/s"),
                                               ("eval_base", "eval", "evaluation", "documents/s")):
            if n in getattr(r, kind):
                src = r.source(kind, n)
                rate = "train_samples_per_s" if prefix == "train" else "eval_documents_per_s"
                add(f"{stage}_time", n, row[f"{prefix}_wall_s"], "s", src)
                add(f"{stage}_throughput", n, row[rate], rate_unit, src)
                add(f"{stage}_speedup", n, row[f"{prefix}_speedup"], "x", src)
                add(f"{stage}_efficiency", n, row[f"{prefix}_efficiency"], "fraction", src)
        if n in r.train:
            src = r.source("train", n)
            add("peak_memory_per_device", n, row["peak_memory_per_device_bytes"], "bytes", src)
            add("memory_capacity", n, row["memory_capacity_bytes"], "bytes", src)
        if n in r.probe:
            add("max_batch_size_per_device", n, row["max_batch_per_device"], "pairs", r.source("probe", n))
    for n, m in sorted(r.eval_trained.items()):
        for k, v in m["metrics"].items():
            add(f"trained_{k}", n, v, "", r.source("eval_trained", n))
    if r.eval_base:
        w = min(r.eval_base)
        for k, v in r.eval_base[w]["metrics"].items():
            add(f"base_{k}", w, v, "", r.source("eval_base", w))
    return out


def to_csv(r: Results) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["metric", "world_size", "value", "unit", "source"])
    writer.writeheader()
    writer.writerows(csv_rows(r))
    return buf.getvalue()


def _gb(x) -> str:
    return "n/a (no GPU)" if x is None else f"{x / GB:.1f} GB"


def _marked(marks: list[str]) -> str:
    return f" ⚠ {'; '.join(marks)}" if marks else ""


def _device_used(x) -> str:
    return "" if x is None else f" (device {x / GB:.2f} GB)"


def to_markdown(r: Results) -> str:
    rows = {row["world_size"]: row for row in analysis.scaling_rows(r)}
    sizes = sorted(rows)
    on_gpu = bool(next(iter(r.train.values()))["hardware"].get("gpus"))
    unit = "GPU" if on_gpu else "rank"
    largest = max(sizes)
    lines = ["# tier1 performance report", "", machine_line(r), "", "## Verdicts", ""]
    for name, ok, text in analysis.verdicts(r):
        mark = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        lines.append(f"- **{name}: {mark}** — {text}")
    notes = analysis.oversubscription(r)
    lines += [""] + [f"> {n}" for n in notes] + ([""] if notes else [])

    head = [f"{n} {unit}{'s' if n > 1 else ''}" for n in sizes]
    lines += ["## The table (measured)", "",
              "| Metric | " + " | ".join(head) + f" | Speedup ({largest} vs 1) | Card expectation, 4x A40 (not measured here) |",
              "|---" * (len(sizes) + 3) + "|"]

    def row(label, cells, speed, card):
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {speed} | {card} |")

    c = CARD_EXPECTATION
    row("Training", [fmt(rows[n]["train_wall_s"], " s", 1) + _marked(rows[n]["train_marks"]) for n in sizes],
        fmt(rows[largest]["train_speedup"], "x"), f"~{c['training_s'][1]:.0f} s -> ~{c['training_s'][4]:.0f} s (3.0x)")
    row("Evaluation", [fmt(rows[n]["eval_wall_s"], " s", 1) + _marked(rows[n]["eval_marks"]) for n in sizes],
        fmt(rows[largest]["eval_speedup"], "x"), f"~{c['evaluation_s'][1]:.0f} s -> ~{c['evaluation_s'][4]:.0f} s (2.7x)")
    cap = [rows[n]["memory_capacity_bytes"] for n in sizes]
    row("Memory capacity", [_gb(x) for x in cap],
        fmt(cap[-1] / cap[0], "x") if cap[0] and cap[-1] else "n/a", "46 GB -> 184 GB (4.0x)")
    mb = [rows[n]["max_batch_global"] for n in sizes]
    row("Max batch size", ["n/a (no GPU)" if x is None else str(x) for x in mb],
        fmt(mb[-1] / mb[0], "x") if mb[0] and mb[-1] else "n/a", "32 -> 128 (4.0x)")

    lines += ["", "## Scaling detail", "",
              "| World size | Train time (median, min-max) | Samples/s | Tokens/s | Steady step | MFU "
              "| Train speedup | Train efficiency | Gradient all-reduce per step "
              "| Eval time (median, min-max) | Documents/s | Eval speedup | Eval efficiency "
              "| Peak memory per device | Global batch | Per-device batch | Negatives per anchor | Gathered | LR | Accum |",
              "|---" * 20 + "|"]
    for n in sizes:
        x, o = rows[n], rows[n]["objective"]
        lines.append(
            f"| {n} | {fmt(x['train_wall_s'], ' s', 1)} ({fmt(x['train_wall_min_s'], '', 1)}-{fmt(x['train_wall_max_s'], '', 1)}) "
            f"| {fmt(x['train_samples_per_s'], '', 1)} | {fmt(x['tokens_per_s'], '', 0)} | {fmt(x['steady_step_s'], ' s', 3)} "
            f"| {pct(x['mfu'])} | {fmt(x['train_speedup'], 'x')} | {pct(x['train_efficiency'])} "
            f"| {fmt(x['allreduce_span_s'], ' s', 3)} "
            f"| {fmt(x['eval_wall_s'], ' s', 1)} ({fmt(x['eval_wall_min_s'], '', 1)}-{fmt(x['eval_wall_max_s'], '', 1)}) "
            f"| {fmt(x['eval_documents_per_s'], '', 0)} | {fmt(x['eval_speedup'], 'x')} | {pct(x['eval_efficiency'])} "
            f"| {fmt((x['peak_memory_per_device_bytes'] or 0) / GB, ' GB', 2)}{'' if on_gpu else ' (RSS)'}"
            f"{_device_used(x['peak_device_used_bytes'])} "
            f"| {o.get('global_batch', 'n/a')} | {o.get('per_device_batch', 'n/a')} | {o.get('negatives_per_anchor', 'n/a')} "
            f"| {o.get('gathered_embeddings', 'n/a')} | {o.get('learning_rate', 'n/a')} | {o.get('grad_accum_steps', 'n/a')} |")

    lines += ["", "Tokens/s counts text tokens (padding left out); the steady step is the median step time after "
              "the first tenth of the steps; MFU is model FLOPs (6 x non-embedding parameters per padded token plus "
              "the attention term) per second over the device's dense peak for the training precision.", "",
              "The all-reduce column is the median per step of the time from the first gradient bucket's "
              "launch to the last one's completion; it overlaps the backward pass, so it bounds the "
              "communication a step can expose rather than adding to the step time."]
    proj = analysis.projection(r)
    if proj:
        lines += ["", "## Projection (not measured)", "",
                  f"Training speedup projected from the 1-rank step time and the gradient all-reduce measured at "
                  f"{proj[0]['from_world_size']} ranks (bus bandwidth {proj[0]['bus_bandwidth_GBps']:.2f} GB/s), "
                  f"assuming one device per rank and no overlap of communication with compute.", "",
                  "| World size | Projected speedup |", "|---|---|"]
        lines += [f"| {p['world_size']} | {p['speedup']:.2f}x |" for p in proj]

    lines += ["", "## Retrieval quality", "", "| Model | Evaluated on | nDCG@10 | MRR@10 | Recall@1 | Recall@10 | Recall@100 | MAP@100 |",
              "|---|---|---|---|---|---|---|---|"]
    models = [("base (untrained)", r.eval_base[w]) for w in sorted(r.eval_base)]
    models += [(f"trained on {n} {unit}{'s' if n > 1 else ''}", m) for n, m in sorted(r.eval_trained.items())]
    for name, m in models:
        v = m["metrics"]
        lines.append(f"| {name} | {m['world_size']} rank(s) | {v['ndcg@10']:.4f} | {v['mrr@10']:.4f} | {v['recall@1']:.4f} "
                     f"| {v['recall@10']:.4f} | {v['recall@100']:.4f} | {v['map@100']:.4f} |")
    lines += ["", "Every number above is read from the files listed in `performance.csv` (column `source`).", ""]
    return "\n".join(lines)
