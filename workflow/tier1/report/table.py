"""performance.md and performance.csv from the collected results."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tier1 import layout
from tier1.config import DEFAULT_MODEL, PARALLELISM_NAMES, ConfigError
from tier1.encoder import random_models
from tier1.report import analysis, bound, instruments, noise, overhead, prediction, quality, sweep
from tier1.report.analysis import fmt, pct
from tier1.report.collect import CARD_EXPECTATION, Results, second_strategy, strategy
from tier1.training.decomposition import LABELS, TERMS

GB = 1e9


def machine_line(r: Results) -> str:
    any_train = next(iter(r.train.values()))
    hw = any_train.hardware
    if hw.get("gpus"):
        dev = f"{len(hw['gpus'])}x {hw['gpus'][0]} (driver {hw.get('driver') or 'unknown'}, CUDA {hw.get('cuda')})"
    else:
        dev = f"no GPU: a CPU rehearsal on {hw['cpu']}, {hw['cores']} cores (ranks are CPU processes)"
    counts = r.manifest.counts
    return (f"- Machine: {dev}\n- Model: {model_name(r)}\n- Encoder: {encoder_line(r)}\n"
            f"- Dataset: {dataset_name(r.manifest.dataset)} ({counts['train_pairs']} training pairs, "
            f"{counts['test_queries']} queries, {counts['corpus_documents']} documents)\n"
            f"- Training pairs: {pairs_line(r)}\n- {card_line()}")


# what each implementation tier1.encoder.model.identity names runs
IMPLEMENTATIONS = {"tier1-bert": "tier1's own BERT (tier1.encoder.bert) and tokenizer front",
                   "transformers": "transformers' AutoModel"}


def encoder_line(r: Results) -> str:
    """Whose code ran the model, its version and its attention path, from the train records'
    `encoder` block (tier1.encoder.model.identity); one clause per distinct block."""
    blocks = [tm.encoder for tm in r.train.values()]
    distinct = {(b["implementation"], b["version"], b["attention"]): None for b in blocks}
    return "; ".join(f"{impl} {version}, {IMPLEMENTATIONS.get(impl, impl)}; attention: {attention}"
                     for impl, version, attention in distinct)


def provenance_lines(r: Results) -> list[str]:
    any_train = next(iter(r.train.values()))
    lib = ", ".join(f"{k} {v}" for k, v in any_train.libraries.items())
    # the run's hash (its whole resolved config: the one `tier1 compare` and the history folder
    # name), and the training stage's own hash of the keys it reads
    run_hash = any_train.run_config_hash or "n/a (a stage run by hand)"
    return ["## Provenance", "", f"- Libraries: {lib}",
            f"- Git revision: {any_train.git_revision}; run config hash: {run_hash} (training's own keys: "
            f"{any_train.config_hash})"]


def model_spec(r: Results) -> str:
    """The `model` the run was configured with (the packaged name, a folder or a hub id)."""
    for record in (*r.train.values(), *r.eval_base.values()):
        spec = record.config.get("model")
        if spec:
            return str(spec)
    return "unknown"


def _random_folder(spec: str) -> Path | None:
    """The folder of a random-weight model: `random:<name>` (built in this run) or a folder with
    the mark; None for any other model."""
    try:
        folder = random_models.folder_of(spec) if random_models.spec_name(spec) else Path(spec)
    except ConfigError:
        return None
    return folder if folder.exists() and random_models.is_random(folder) else None


def model_name(r: Results) -> str:
    spec = model_spec(r)
    if spec == DEFAULT_MODEL:
        return f"all-MiniLM-L6-v2 (the packaged `{spec}`), fine-tuned from its published weights"
    folder = _random_folder(spec)
    if folder is not None:
        facts = json.loads((folder / random_models.RANDOM_MARK).read_text())
        return (f"the model `{spec}`: **random weights**, a {facts.get('architecture')}-sized model built "
                f"from a config ({facts.get('parameters', 0) / 1e6:.0f}M parameters, {facts.get('pooling')} pooling); "
                "its times and memory are those of its size, its retrieval scores mean nothing")
    if Path(spec).exists() or spec.startswith(("/", ".", "~")):
        return f"the model folder `{spec}`, fine-tuned from the weights found there"
    return f"the Hugging Face model `{spec}`, fine-tuned from its published weights"


def base_label(r: Results) -> str:
    """What the base rows are: the configured model before this run trained it (never 'untrained':
    the packaged model is pre-trained, and a folder may hold an already fine-tuned model)."""
    spec = model_spec(r)
    short = "all-MiniLM-L6-v2" if spec == DEFAULT_MODEL else Path(spec).name or spec
    return f"base: {short}, before this run's training"


def dataset_name(d: dict) -> str:
    """The dataset with where it was read from, e.g. "file `/data/pairs.jsonl`"."""
    src = d.get("source")
    if src == "file":
        return f"the pair file `{d.get('path')}`"
    if src == "beir":
        return f"the BEIR folder `{d.get('path')}`"
    if src == "huggingface":
        return f"the Hugging Face dataset `{d.get('id')}`"
    # the embedded datasets by their config names (`dataset: stdlib`), not the manifest's source tag
    if src == "python-stdlib":
        return f"stdlib: docstring -> function pairs from `{d.get('root')}` (Python {d.get('python_version')})"
    if src == "python-source":
        return (f"python-source: docstring -> function pairs from `{d.get('root')}` and `{d.get('site_packages')}` "
                f"({d.get('distributions')} distributions, fingerprint {d.get('distributions_sha256')})")
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "unknown"


def pairs_line(r: Results) -> str:
    """Requested, prepared and trained pairs: training takes whole global batches, so up to one
    global batch minus one of the prepared pairs is left out of every epoch."""
    asked = r.manifest.config.get("train_samples")
    prepared = r.manifest.counts["train_pairs"]
    batches = sorted({tm.objective["global_batch"] for tm in r.train.values()})
    text = f"{asked} asked for (`train_samples`), " if asked is not None else ""
    text += f"{prepared} prepared" + (f" (only {prepared} available)" if asked is not None and prepared < asked else "")
    parts = []
    for gb in batches:
        trained = prepared // gb * gb
        where = "" if len(batches) == 1 else f" at global batch {gb}"
        if trained == prepared:
            parts.append(f"all {trained} trained per epoch{where} ({trained // gb} whole global batches of {gb})")
        else:
            parts.append(f"{trained} trained per epoch{where}: {prepared - trained} left out so that every step "
                         f"has a whole global batch of {gb}")
    return text + ("; " + "; ".join(parts) if parts else "")


def card_line() -> str:
    """What "the card" is, said where the report first names it."""
    c = CARD_EXPECTATION
    eff = c["training_speedup"] / c["gpus"]
    return (f"The card: the expectation card this benchmark started from (the original `tier_1.py` script's "
            f"card), which promised, on {c['device']}, training ~{c['training_s'][1]:.0f} s -> "
            f"~{c['training_s'][4]:.0f} s ({c['training_speedup']:.1f}x, {pct(eff)} efficiency at {c['gpus']} GPUs) "
            f"and evaluation ~{c['evaluation_s'][1]:.0f} s -> ~{c['evaluation_s'][4]:.0f} s "
            f"({c['evaluation_speedup']:.1f}x). Its values are shown beside the measurements as expectations; "
            f"none was measured here.")


def csv_rows(r: Results) -> list[dict]:
    """Long form: one measured value per row, with the file it came from."""
    out = []
    # On a CPU the ranks share cores: the ratio of times is not a speedup, and not named one
    ratio_name = "time_ratio" if analysis.cpu_rehearsal(r) else "speedup"

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
                add(f"{stage}_{ratio_name}", n, row[f"{prefix}_speedup"], "x", src)
                add(f"{stage}_efficiency", n, row[f"{prefix}_efficiency"], "fraction", src)
        if n in r.train:
            src = r.source("train", n)
            add("peak_memory_per_device", n, row["peak_memory_per_device_bytes"], "bytes", src)
            add("memory_capacity", n, row["memory_capacity_bytes"], "bytes", src)
        if n in r.probe:
            add("max_batch_size_per_device", n, row["max_batch_per_device"], "pairs", r.source("probe", n))
    for n, m in sorted(r.eval_trained.items()):
        for k, v in m.metrics.items():
            add(f"trained_{k}", n, v, "", r.source("eval_trained", n))
    if r.eval_base:
        w = min(r.eval_base)
        for k, v in r.eval_base[w].metrics.items():
            add(f"base_{k}", w, v, "", r.source("eval_base", w))
    for n, tm in sorted(r.train.items()):
        for term, v in ((tm.decomposition or {}).get("seconds") or {}).items():
            add(f"step_{term}", n, v, "s", r.source("train", n))
    for x in prediction.world_size_rows(r):
        # derived from the 1-rank and n-rank records and the commbench record; sourced to the n-rank record
        add("predicted_training_speedup", x["world_size"], x["predicted_speedup"], "x", r.source("train", x["world_size"]))
    return out + overhead.csv_rows(r)


def to_csv(r: Results) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["metric", "world_size", "value", "unit", "source"])
    writer.writeheader()
    writer.writerows(csv_rows(r))
    return buf.getvalue()


def _gb(x) -> str:
    return "n/a (no GPU)" if x is None else f"{x / GB:.1f} GB"


def _gb_model(x: dict | None) -> str:
    return "n/a (not recorded)" if x is None else f"{x['total'] / GB:.3f} GB"


def strategy_names(r: Results) -> list[str]:
    """The strategies' names as the report prints them: the main table's, then the second's."""
    from tier1.config import PARALLELISM_NAMES as NAMES

    runs = [r.train] + ([r.second_train] if r.second_train else [])
    return [NAMES.get(strategy(t[max(t)]), "?") for t in runs]


def second_verdicts(r: Results, second: Results | None) -> list[tuple[str, bool | None, str]]:
    """The same-model verdict of the second strategy's runs, judged as the first's is."""
    if second is None:
        return []
    name = strategy_names(r)[1]
    return [(f"{v[0]} ({name})", v[1], v[2]) for v in analysis.verdicts(second) if v[0] == "same model"]


def strategies_section(r: Results, second: Results | None) -> list[str]:
    """Both strategies at every world size, side by side: time, step, memory per rank, the model."""
    if second is None:
        return []
    names = strategy_names(r)
    kind = analysis.peak_kind(r)
    peak, measured = analysis.peak_label(kind)
    lines = ["", "## Strategies side by side", "",
             f"Each world size trained under {names[0]} and under {names[1]} (one rank is one plain process, "
             "trained once for both). Model states are the bytes of the tensors each rank holds (the largest rank); the peak is "
             f"{measured}. The first step's gradient norm is that of the whole gradient after its all-reduce or "
             "reduce-scatter: a strategy that summed where it should average would show it N times larger, which the "
             "losses would not (AdamW's update hardly depends on the gradient's scale).",
             "", "| World size | Strategy | Train time | Steady step | Step vs first strategy | Parameters | Gradients "
             f"| Optimizer state | Model states per rank | {peak} per rank | First-step gradient norm | Final loss "
             "| Checksums equal | nDCG@10 |",
             "|---" * 14 + "|"]
    for n in sorted(r.train):
        # one rank is one plain process under both (never wrapped): one row, trained once
        for name, runs in ([(" = ".join(names), r)] if n == 1 else zip(names, (r, second))):
            tm = runs.train.get(n)
            if tm is None:
                continue
            x = next(row for row in analysis.scaling_rows(runs, kind) if row["world_size"] == n)
            ms = x["model_state_per_rank_bytes"] or {}
            base = r.train.get(n)
            ratio = tm.steady_step_s / base.steady_step_s if base and base.steady_step_s and tm.steady_step_s else None
            ev = runs.eval_trained.get(n)
            ndcg = f"{ev.metrics['ndcg@10']:.4f}" if ev else "n/a"
            lines.append(
                f"| {n} | {name} | {fmt(tm.wall_time_s, ' s', 1)}{_marked(tm.marks)} | {fmt(tm.steady_step_s, ' s', 3)} "
                f"| {fmt(ratio, 'x')} | {fmt(ms.get('parameters', 0) / GB, ' GB', 3)} "
                f"| {fmt(ms.get('gradients', 0) / GB, ' GB', 3)} | {fmt(ms.get('optimizer', 0) / GB, ' GB', 3)} "
                f"| {fmt(ms.get('total', 0) / GB, ' GB', 3)} | {fmt((x['peak_memory_per_device_bytes'] or 0) / GB, ' GB', 2)} "
                f"| {_norm(analysis.first_gradient_norm(tm))} "
                f"| {fmt(tm.final_loss, '', 4)} | {'yes' if tm.checksums_equal else 'NO'} "
                f"| {ndcg} |")
    return lines


def _norm(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4g}"


def _params(projection: dict | None) -> str:
    """A projected parameter count, as model cards write it (110M, 1.3B)."""
    if not projection:
        return "n/a"
    p = projection["parameters"]
    return f"{p / 1e9:.1f}B" if p >= 1e9 else f"{p / 1e6:.0f}M"


def _marked(marks: list[str]) -> str:
    return f" ⚠ {'; '.join(marks)}" if marks else ""


def _gathers(fits: dict[str, dict[int, dict | None]]) -> bool:
    """Whether a projection counts parameters gathered for the step: FSDP2's above one rank
    (analysis.largest_model), never a DDP run's."""
    return any(n > 1 and x for n, x in fits.get(PARALLELISM_NAMES["fsdp"], {}).items())


def _device_used(x) -> str:
    return "" if x is None else f" (device {x / GB:.2f} GB)"


def to_markdown(r: Results) -> str:
    rows = {row["world_size"]: row for row in analysis.scaling_rows(r)}
    sizes = sorted(rows)
    on_gpu = bool(next(iter(r.train.values())).hardware.get("gpus"))
    unit = "GPU" if on_gpu else "rank"
    largest = max(sizes)
    cpu = analysis.cpu_rehearsal(r)
    # On a CPU the ranks share cores: the ratio of times is shown, never called a speedup.
    ratio = (lambda x: fmt(x)) if cpu else (lambda x: fmt(x, "x"))
    ratio_head = (f"Wall-time ratio (1 / {largest} ranks), CPU rehearsal" if cpu
                  else f"Wall-time ratio (1 / {largest} ranks), shared-GPU rehearsal: not a speedup"
                  if analysis.shared_gpu(r) else f"Wall-time speedup ({largest} vs 1)")
    second = second_strategy(r)
    names = strategy_names(r)
    lines = ["# tier1 performance report", "", machine_line(r), "", "## Verdicts", ""]
    for name, ok, text in analysis.verdicts(r) + second_verdicts(r, second):
        mark = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        lines.append(f"- **{name}: {mark}** — {text}")
    notes = analysis.oversubscription(r)
    lines += [""] + [f"> {n}" for n in notes] + ([""] if notes else [])

    head = [f"{n} {unit}{'s' if n > 1 else ''}" + (f" ({names[0]})" if n > 1 else "") for n in sizes]
    lines += ["## The table (measured)", "",
              "| Metric | " + " | ".join(head) + f" | {ratio_head} | Card expectation, 4x A40 (not measured here) |",
              "|---" * (len(sizes) + 3) + "|"]

    def row(label, cells, speed, card):
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {speed} | {card} |")

    c = CARD_EXPECTATION
    row("Training", [fmt(rows[n]["train_wall_s"], " s", 1) + _marked(rows[n]["train_marks"]) for n in sizes],
        ratio(rows[largest]["train_speedup"]), f"~{c['training_s'][1]:.0f} s -> ~{c['training_s'][4]:.0f} s (3.0x)")
    row("Evaluation", [fmt(rows[n]["eval_wall_s"], " s", 1) + _marked(rows[n]["eval_marks"]) for n in sizes],
        ratio(rows[largest]["eval_speedup"]), f"~{c['evaluation_s'][1]:.0f} s -> ~{c['evaluation_s'][4]:.0f} s (2.7x)")
    # model states per rank, measured from the tensors each rank holds: what grows with the world
    # size is the model that fits (FSDP2), not the memory each rank needs for it (DDP)
    per_rank = [(names[0], rows)] + ([(names[1], {x["world_size"]: x
                                                  for x in analysis.scaling_rows(second, analysis.peak_kind(r))})]
                                     if second else [])
    cells, gains = [], []
    for n in sizes:
        held = [(name, by[n]["model_state_per_rank_bytes"]) for name, by in per_rank if n in by]
        cells.append("; ".join(f"{name} {_gb_model(x)}" if len(per_rank) > 1 else _gb_model(x) for name, x in held))
    for name, by in per_rank:
        first, last = by.get(1, {}).get("model_state_per_rank_bytes"), by.get(largest, {}).get("model_state_per_rank_bytes")
        if first and last:
            less = first["total"] / last["total"]
            said = "the same per rank (a whole copy each)" if abs(less - 1) < 0.02 else f"{fmt(less, 'x')} less per rank"
            gains.append(f"{name} {said}" if len(per_rank) > 1 else said)
    row(f"Memory capacity: model states per {unit} (parameters, gradients, optimizer state; measured)", cells,
        "; ".join(gains) if gains else "n/a", "46 GB -> 184 GB (4.0x: the 4 GPUs' memory together)")
    cells, fits = [], {}
    for n in sizes:
        held = [(name, by[n]["largest_model"]) for name, by in per_rank if n in by]
        cells.append("; ".join(f"{name} {_params(x)}" if len(per_rank) > 1 else _params(x) for name, x in held))
        for name, x in held:
            fits.setdefault(name, {})[n] = x
    gains = [(f"{name} " if len(per_rank) > 1 else "") + fmt(by[largest]['parameters'] / by[1]['parameters'], 'x')
             for name, by in fits.items() if by.get(1) and by.get(largest) and by[1]["parameters"]]
    gains = [f"{largest} {unit}s' over 1 {unit}'s: " + "; ".join(gains)] if gains else []
    against = next((x["of"] for by in fits.values() for x in by.values() if x), None)
    row(f"Largest model one {unit} could train (projection{f', against its {against}' if against else ''})", cells,
        "; ".join(gains) if gains else "n/a", "n/a")
    mb = [rows[n]["max_batch_global"] for n in sizes]
    row("Max batch size", ["n/a (no GPU)" if x is None else str(x) for x in mb],
        fmt(mb[-1] / mb[0], "x") if mb[0] and mb[-1] else "n/a", "32 -> 128 (4.0x)")

    example = next((x for by in fits.values() for x in (by.get(largest), by.get(1)) if x), None)
    if example:
        per_param = "; ".join(f"{name} {by[n]['bytes_per_parameter']:.1f} at {n}"
                              for name, by in fits.items() for n in sorted({1, largest}) if by.get(n))
        lines += ["", f"The largest model is a projection, not a run: the {unit}'s "
                  f"{'GPU memory' if example['of'] == 'GPU memory' else 'share of the host memory'} "
                  f"({example['capacity_bytes'] / GB:.1f} GB) less what the peak held besides the model states "
                  "(activations, buffers: as measured for this model, though a larger model's grow with its width "
                  "and depth), divided by the bytes per parameter: the measured model states"
                  f"{', under FSDP2 plus the whole parameters it gathers for a step' if _gathers(fits) else ''} "
                  f"({per_param})."]
    speed_head = "time ratio (1 / N ranks)" if cpu else "speedup"
    lines += ["", "## Scaling detail", "",
              "| World size | Train time (median, min-max) | Samples/s | Tokens/s | Steady step | MFU "
              f"| Train {speed_head}, wall | Train efficiency | Gradient all-reduce per step "
              f"| Eval time (median, min-max) | Documents/s | Eval {speed_head} | Eval efficiency "
              "| Peak memory per device | Global batch | Per-device batch | Negatives per anchor | Gathered | LR | Accum |",
              "|---" * 20 + "|"]
    def eff(x):
        return "n/a (CPU rehearsal)" if cpu else pct(x)

    def strategy_of(n):
        return f" ({names[0]})" if n > 1 else ""

    # which peak the column holds, where it is not a GPU's allocated bytes
    peak_suffix = {"peak_allocated": " (host)", "peak_rss": " (RSS)"}.get(analysis.peak_kind(r), "")
    for n in sizes:
        x, o = rows[n], rows[n]["objective"]
        lines.append(
            f"| {n}{strategy_of(n)} | {fmt(x['train_wall_s'], ' s', 1)} "
            f"({fmt(x['train_wall_min_s'], '', 1)}-{fmt(x['train_wall_max_s'], '', 1)}) "
            f"| {fmt(x['train_samples_per_s'], '', 1)} | {fmt(x['tokens_per_s'], '', 0)} | {fmt(x['steady_step_s'], ' s', 3)} "
            f"| {pct(x['mfu'])} | {ratio(x['train_speedup'])} | {eff(x['train_efficiency'])} "
            f"| {fmt(x['allreduce_span_s'], ' s', 3)} "
            f"| {fmt(x['eval_wall_s'], ' s', 1)} ({fmt(x['eval_wall_min_s'], '', 1)}-{fmt(x['eval_wall_max_s'], '', 1)}) "
            f"| {fmt(x['eval_documents_per_s'], '', 0)} | {ratio(x['eval_speedup'])} | {eff(x['eval_efficiency'])} "
            f"| {fmt((x['peak_memory_per_device_bytes'] or 0) / GB, ' GB', 2)}{peak_suffix}"
            f"{_device_used(x['peak_device_used_bytes'])} "
            f"| {o.get('global_batch', 'n/a')} | {o.get('per_device_batch', 'n/a')} | {o.get('negatives_per_anchor', 'n/a')} "
            f"| {o.get('gathered_embeddings', 'n/a')} | {o.get('learning_rate', 'n/a')} | {o.get('grad_accum_steps', 'n/a')} |")

    lines += ["", "Steps, wall-average against the steady median, and the shapes met (rows x padded width):", ""]
    for n in sizes:
        e, sh = rows[n].get("step_evenness") or {}, rows[n].get("shapes") or {}
        if e.get("wall_average_step_s") is None:
            continue
        lines.append(f"- {n} rank(s): wall-average {fmt(e['wall_average_step_s'], ' s', 3)} against "
                     f"{fmt(e['steady_step_s'], ' s', 3)} ({round(e['excess'], 2) + 0.0:+.0%}): "  # -0.4% reads +0%, not -0%
                     + (f"**{e['note']}**" if e.get("note") else "within 10%")
                     + (f"; {len(sh.get('met', []))} shapes met, {len(sh.get('warmed', []))} warmed, "
                        f"{sh.get('first_met_in_window')} first met in the timed window" if sh else ""))
    lines += ["", "Tokens/s counts text tokens (padding left out); the steady step is the median step time after "
              "the first tenth of the steps; MFU is model FLOPs (6 x non-embedding parameters per padded token plus "
              "the attention term) per second over the device's dense peak for the training precision.", "",
              "The all-reduce column is the median per step of the time from the first gradient bucket's "
              "launch to the last one's completion; it overlaps the backward pass, so it bounds the "
              "communication a step can expose rather than adding to the step time."]
    lines += strategies_section(r, second)
    lines += [""] + instruments.lines(r) + why_sections(r)
    proj = analysis.projection(r)
    if proj:
        lines += ["## Projection (not measured)", "",
                  f"Training speedup projected with the model of \"Predicted vs measured\" from the 1-rank step, one "
                  f"GPU per rank, and the bus bandwidth measured at {proj[0]['from_world_size']} ranks or stated in the "
                  f"config (`internode_busbw_gbps`) for world sizes past this machine's GPUs. A projection, not a "
                  f"measurement.", "",
                  "| World size | Projected speedup | Bus bandwidth | From |", "|---|---|---|---|"]
        lines += [f"| {p['world_size']} | {p['speedup']:.2f}x | {p['bus_bandwidth_GBps']:.2f} GB/s | {p['source']} |"
                  for p in proj]

    lines += ["", "## Retrieval quality", "", "| Model | Evaluated on | nDCG@10 | MRR@10 | Recall@1 | Recall@10 | Recall@100 | MAP@100 |",
              "|---|---|---|---|---|---|---|---|"]
    models = [(base_label(r), r.eval_base[w]) for w in sorted(r.eval_base)]
    models += [(f"trained on {n} {unit}{'s' if n > 1 else ''}", m) for n, m in sorted(r.eval_trained.items())]
    for name, m in models:
        v = m.metrics
        lines.append(f"| {name} | {m.world_size} rank(s) | {v['ndcg@10']:.4f} | {v['mrr@10']:.4f} | {v['recall@1']:.4f} "
                     f"| {v['recall@10']:.4f} | {v['recall@100']:.4f} | {v['map@100']:.4f} |")
    lines += [""] + quality.change_lines(r, unit) + [""] + quality.model_lines(r) + [""]
    lines += overhead.markdown(r)
    lines += ["Every number above is read from the files listed in `performance.csv` (column `source`).", ""]
    lines += provenance_lines(r) + [""]
    return "\n".join(lines)


# -- why it scales, or why not: the machine, the collectives, the step, the prediction -----------

def _s(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f} s"


def machine_section(r: Results) -> list[str]:
    """The preflight, in a few lines: what the ranks had to share."""
    p = r.preflight
    if not p:
        return []
    cpu = p.cpu
    threads = ", ".join(f"{n} rank{'s' if n != '1' else ''}: {t}" for n, t in (cpu.get("threads_per_rank") or {}).items())
    shared = [n for n, v in (cpu.get("ranks_share_cores") or {}).items() if v]
    lines = ["## Machine", "", f"From `{r.paths.get(('preflight', 0), 'preflight.json')}`.", "",
             f"- CPU: {cpu.get('model') or 'unknown'}; {cpu.get('cores_available')} cores available to the jobs "
             f"({cpu.get('logical_cpus')} logical CPUs), {cpu.get('sockets') or '?'} socket(s), "
             f"{cpu.get('numa_node_count') or '?'} NUMA node(s)",
             f"- Threads per rank: {threads or 'n/a'}" + (f"; more ranks than cores at {', '.join(shared)}: they time-slice"
                                                          if shared else "")]
    gpu = p.gpu
    if not gpu:
        lines.append(f"- GPUs: none; collectives use {p.backend} between CPU processes")
    else:
        for d in gpu.get("devices", []):
            pcie, clocks = d.get("pcie") or {}, d.get("clocks_mhz") or {}
            lines.append(
                f"- GPU {d.get('nvml_index')}{'' if d.get('used_by_jobs', True) else ' (not used)'}: {d.get('name')}, "
                f"{(d.get('memory_total_bytes') or 0) / GB:.0f} GB, SM clock max {clocks.get('sm_max')} MHz, PCIe gen "
                f"{pcie.get('generation_max')} x{pcie.get('width_max')} ({fmt(pcie.get('gbps_per_direction_max'), ' GB/s', 1)} "
                f"per direction), NVLink links up {d.get('nvlink_links_up')}, NUMA node {d.get('numa_node')}")
        peer = (gpu.get("peer_access") or {}).get("matrix")
        pairs = [v for row in peer or [] for v in row if v is not None]
        lines.append(f"- NCCL {gpu.get('nccl_version')}, driver {gpu.get('driver_version')}, CUDA driver "
                     f"{gpu.get('cuda_driver_version')} / runtime {gpu.get('cuda_runtime_version')}; peer access: "
                     + (f"{sum(pairs)} of {len(pairs)} GPU pairs" if pairs else "unknown"))
    if p.nccl_env:
        lines.append("- NCCL settings: " + ", ".join(f"`{k}={v}`" for k, v in p.nccl_env.items()))
    if p.unavailable:
        lines.append(f"- Not readable here: {', '.join(sorted(p.unavailable))}")
    for n, tm in sorted(r.train.items(), key=lambda item: int(item[0])):  # a training across nodes (nodes > 1)
        if tm.hardware.get("nodes"):
            lines.append(f"- Nodes: the {n}-rank training ran on {tm.hardware['nodes']['summary']}")
    return lines + [""]


def collectives_section(r: Results) -> list[str]:
    """The commbench sweeps at the sizes training uses, per world size."""
    if not r.comm:
        return []
    lines = ["## Collectives", "",
             "Measured as nccl-tests does (algbw = bytes / time; busbw = algbw x 2(n-1)/n for all-reduce, "
             "x (n-1)/n for all-gather), median of timed calls; the full sweeps are in `" + layout.comm() + "` and the "
             "collectives plot.", "",
             "| World size | Backend | Gradient all-reduce | Time | algbw | busbw | Best busbw in sweep "
             "| Loss all-gather | Time | busbw | Matmul per rank |", "|---" * 11 + "|"]
    for n, c in sorted(r.comm.items()):
        s = c.summary
        g, a = s.get("gradient_all_reduce", {}), s.get("loss_all_gather", {})
        mm = c.matmul or {}
        frac = f" ({pct(mm['fraction_of_peak'])} of peak)" if mm.get("fraction_of_peak") else ""
        frac += ", one rank at a time on the shared GPU" if mm.get("ranks_in_turn") else ""
        lines.append(
            f"| {n} | {c.backend} | {(g.get('bytes') or 0) / 1e6:.1f} MB | {_s(g.get('time_s', {}).get('median'), 4)} "
            f"| {fmt(g.get('algbw_gbps'), ' GB/s')} | {fmt(g.get('busbw_gbps'), ' GB/s')} "
            f"| {fmt(s.get('all_reduce_busbw_max_gbps'), ' GB/s')} | {(a.get('bytes') or 0) / 1e3:.0f} kB "
            f"| {_s(a.get('time_s', {}).get('median'), 4)} | {fmt(a.get('busbw_gbps'), ' GB/s', 3)} "
            f"| {fmt(mm.get('achieved_tflops_median'), ' TFLOP/s', 3)} {mm.get('dtype', '')}{frac}"
            f"{_marked(c.marks)} |")
    return lines + [""]


def decomposition_section(r: Results) -> list[str]:
    """Each world size's steady step split into compute, exposed communication, data, optimizer,
    stragglers and the rest."""
    blocks = {n: tm.decomposition for n, tm in sorted(r.train.items())}
    if not any(blocks.values()):
        return []
    lines = ["## Step decomposition", "",
             "Per step, median over ranks. Compute is the forward+backward with DDP's gradient sync skipped "
             "(`no_sync()`: the run's last steps again after training, same batches and dropout masks, untimed "
             "for the run); exposed communication is the synced forward+backward minus the slowest rank's compute; "
             "stragglers is the slowest rank's compute minus the median rank's; other is what remains of the step. "
             "When the steps the parts come from ran slower than the steady median, the parts are scaled to the step "
             "(marked *, with the factor) and other is 0. At 1 rank there is no sync: "
             "both are 0 by definition." + _fsdp_compute_note(r), "",
             "The steps used are the window's last ones whose shapes every rank had met before (a first-shape "
             "set-up in a synced step would otherwise be booked as communication); a short run with too few such "
             "steps fills in with cold ones, named in the last column but one.", "",
             "| World size | Step | " + " | ".join(LABELS[t].capitalize() for t in TERMS) + " | Steps used | GPU busy |",
             "|---" * (len(TERMS) + 4) + "|"]
    on_gpu = any(tm.hardware.get("gpus") for tm in r.train.values())
    for n, d in blocks.items():
        if not d:
            lines.append(f"| {n} | n/a (no decomposition in the record) |" + " |" * (len(TERMS) + 2))
            continue
        cells = [f"{_s(d['seconds'][t])} ({pct(d['fraction_of_step'][t])})" for t in TERMS]
        scaled = d.get("scaled_to_step", 1.0)
        mark = f" (parts x{scaled:.2f}*)" if scaled < 1.0 else ""
        busy = pct(bound.busy_share(r, n)) if on_gpu else "n/a (CPU)"
        used = ", ".join(str(i) for i in d.get("step_indices") or [])
        cold = d.get("cold_steps_used") or []
        rerun = f"{d['steps_rerun']} re-run" if n > 1 else "none re-run at 1 rank"
        which = f"steps {used} ({rerun}" + (f"; cold: {', '.join(map(str, cold))}" if cold else "") + ")"
        lines.append(f"| {n} | {_s(d['step_s'])}{mark} | " + " | ".join(cells) + f" | {which} | {busy} |")
    return lines + [""]


def _fsdp_compute_note(r: Results) -> str:
    """What the split means when the decomposed runs are FSDP2's: skipping its gradient sync skips
    only the reduce-scatter, so the parameters' all-gathers stay in compute."""
    from tier1.report.collect import strategy

    if not any(n > 1 and strategy(tm) == "fsdp" for n, tm in r.train.items()):
        return ""
    return (" Under FSDP2 skipping the sync (`set_requires_gradient_sync(False)`) skips only the gradients' "
            "reduce-scatter: the parameters are still all-gathered (each layer once a step, at its first forward), so "
            "compute includes those all-gathers and exposed communication is the reduce-scatter's alone.")


def prediction_section(r: Results) -> list[str]:
    """Measured speedup beside the predicted ceiling, flags, and the gap's largest term."""
    rows = prediction.world_size_rows(r)
    if len(rows) < 2:
        return []
    scaling = {x["world_size"]: x for x in analysis.scaling_rows(r)}
    first = rows[0]
    lines = ["## Predicted vs measured", "",
             f"The prediction (`tier1.report.prediction`) starts from the 1-rank step "
             f"({_s(prediction.baseline(r.train[1]).step_s)}) and scales its compute and data with each rank's share "
             f"of the global batch and of the hardware; backward ({prediction.BACKWARD_FRACTION:.0%} of forward+backward, "
             f"the FLOPs ratio) hides the gradient all-reduce, timed at the gradient size from the collectives "
             f"benchmark, except for DDP's last {prediction.DDP_BUCKET_BYTES // 2**20} MiB bucket; the loss's embedding "
             f"gather counts as compute; optimizer and other stay as at 1 rank; no stragglers. A world size under "
             f"{pct(prediction.FLAG_BELOW)} of its prediction is flagged, and only when the run's own spread puts it "
             f"clear of that line ({noise.NOISE_SIGMAS:g} standard errors of the steady-step medians, or the repeats' "
             f"spread, whichever is larger); within that it is not judged. Measured speedups here are from the "
             f"steady step (1-rank step / n-rank step x global-batch ratio), the one the prediction models; the "
             f"wall-time ratio (the table's) is beside them: it also counts the first steps and the set-up they pay.", ""]
    # On a CPU the ratios are time ratios of a rehearsal, never shown as speedups (no "x")
    what, x_unit = ("speedup", "x") if first["on_gpu"] else ("time ratio", "")
    if not first["on_gpu"]:
        lines += [f"> CPU: ranks share the machine's {first['cores']} cores, so the model gives each of n ranks "
                  f"min(threads, {first['cores']}/n) cores: 1/n of the batch on about 1/n of the cores, and compute "
                  f"does not shrink; the predicted time ratio (1 rank / n ranks) is then at most 1. Where the per-rank "
                  f"compute was measured (\"measured\" below), the prediction takes it instead, and the ratio follows "
                  f"what one thread really did at its share of the batch beside the 1-rank process (its threads may "
                  f"scale worse than linearly, or suffer more from other processes). This measures the distributed "
                  f"machinery, not GPU scaling.", ""]
    lines += [f"| World size | Measured {what} (step) | Measured {what} (wall) | Predicted {what} | Measured / predicted "
              "| Predicted step | Predicted exposed all-reduce (hidden) | Bus bandwidth used | Compute per rank vs 1 rank "
              "| Flag |", "|---" * 10 + "|"]
    for x in rows:
        n, comm = x["world_size"], x["comm"]
        flag = ("n/a" if n == 1 else f"not judged ⚠ {'; '.join(x['marks'])}" if x["marks"]
                else f"n/a ({x['judgement']})" if x["flagged"] is None
                else f"**BELOW** ({x['judgement']})" if x["flagged"] else f"ok ({x['judgement']})")
        p = x["predicted"]
        lines.append(
            f"| {n} | {fmt(x['measured_step_speedup'], x_unit)} | {fmt(scaling.get(n, {}).get('train_speedup'), x_unit)} "
            f"| {fmt(x['predicted_speedup'], x_unit)} | {pct(x['ratio'])} | {_s(p['step_s'])} "
            f"| {_s(p['seconds']['exposed_comm'])} ({_s(p['hidden_by_backward_s'])}) "
            f"| {fmt(comm.busbw_gbps, ' GB/s') if comm else 'n/a'} "
            f"| {pct(x['compute_factor'])} ({'measured' if x['rank_compute'] else 'modelled'}) | {flag} |")
    why = [x for x in rows if x["why"]]
    if why:
        lines += [""] + [f"- **{x['world_size']} ranks, largest term of the gap**: {x['why']}." for x in why]
    sources = sorted({x["comm"].source for x in rows if x["comm"]})
    if sources:
        lines += ["", "Bus bandwidth from: " + "; ".join(sources) + "."]
    return lines + [""]


def rank_compute_section(r: Results) -> list[str]:
    """One rank's compute at each world size's share of the batch, measured alone (tier1.stages.rank_compute)."""
    rc = r.rank_compute
    if rc is None:
        return []
    head = ["## Per-rank compute (measured)", "",
            f"From `{r.paths.get(('rank_compute', 0), 'rank_compute.json')}`: {rc.method}."]
    if rc.marks:  # measured beside other work: shown, marked, and not used
        lines = [*head, "", f"⚠ {'; '.join(rc.marks)}. Not used: the prediction models each rank's compute "
                 "instead (its share of the batch on its share of the hardware).", "",
                 "| World size | Per-rank batch | Threads | Compute (median, min-max) |", "|---" * 4 + "|"]
        for n, x in sorted(rc.world_sizes.items(), key=lambda kv: int(kv[0])):
            t = x["compute_s"]
            lines.append(f"| {n} | {x['per_rank_batch']} | {x['threads']} | ⚠ {_s(t['median'])} "
                         f"({fmt(t['min'], '', 3)}-{fmt(t['max'], '', 3)}) |")
        return lines + [""]
    rows = [x for x in bound.per_world_size(r) if x["rank_compute"]]
    if not rows:
        return []
    on_gpu = rows[0]["on_gpu"]
    lines = [*head[:-1], head[-1] + " The prediction uses these times for each rank's compute instead of assuming "
             "it shrinks with the rank's share of the batch.", ""]
    if not on_gpu:
        lines += [f"> CPU: each world size's rank ran with the threads an n-rank run gives each rank ({rc.cores} "
                  "cores / n), so the ratio mixes the smaller batch with fewer cores. GPU-busy share: not applicable "
                  "on a CPU.", ""]
    lines += ["| World size | Per-rank batch | Threads | Compute (median, min-max) | Relative to the full batch's "
              "| Ideal (batch share) | Fixed per-step share | GPU busy |", "|---" * 8 + "|"]
    for x in rows:
        k, n = x["rank_compute"], x["world_size"]
        times = rc.world_sizes[str(n)]["compute_s"]
        lines.append(
            f"| {n} | {k['per_rank_batch']} ({bound._share(k['share_of_global_batch'])} of the batch) | {k['threads']} "
            f"| {_s(times['median'])} ({fmt(times['min'], '', 3)}-{fmt(times['max'], '', 3)}) | {k['relative']:.2f} "
            f"| {x['work']:.2f} | {pct(x['fixed_share']) if on_gpu else 'n/a (CPU)'} "
            f"| {pct(x['busy_share']) if on_gpu else 'n/a (CPU)'} |")
    lines += [""] + [f"- Compute at {bound._share(x['rank_compute']['share_of_global_batch'])} of the batch: "
                     f"{x['rank_compute']['relative']:.2f} of the full batch's step"
                     + (f" on {x['rank_compute']['threads']} thread(s)" if not on_gpu else "") + "."
                     for x in rows if x["world_size"] > 1]
    return lines + [""]


def sweep_section(r: Results) -> list[str]:
    """The batch sweep's table: per global batch and world size, the steady step, speedup,
    efficiency and GPU-busy share."""
    rows = sweep.rows(r)
    if not rows:
        return []
    cpu = not any(x["on_gpu"] for x in rows)
    what = "Time ratio (1 rank / N), CPU rehearsal" if cpu else "Speedup"
    lines = ["## Where multi-GPU pays off (batch sweep)", "",
             "Short runs at each global batch of `batch_sweep`, strong scaling (the batch split over the ranks): the "
             "first batches once untimed so every shape is met, then the same batches as timed training steps; their "
             "steps count toward nothing else. Speedup is the 1-rank step over the N-rank step at the same global "
             "batch; efficiency is speedup / N. Plot `sweep.png`.", ""]
    lines += [f"| Global batch | World size | Per-{'rank' if cpu else 'GPU'} batch | Steady step | 1-rank step | {what} "
              "| Efficiency | GPU busy |", "|---" * 8 + "|"]
    for x in rows:
        lines.append(
            f"| {x['global_batch']} | {x['world_size']} | {x['per_rank_batch']} | {_s(x['step_s'])} "
            f"| {_s(x['one_rank_step_s'])} | {fmt(x['speedup'], '' if cpu else 'x')} "
            f"| {'n/a (CPU rehearsal)' if cpu else pct(x['efficiency'])} "
            f"| {'n/a (CPU)' if cpu else pct(x['busy_share'])} |")
    where = sweep.sentence(r)
    return lines + ([""] + [f"{where[0].upper()}{where[1:]}."] if where else []) + [""]


def why_sections(r: Results) -> list[str]:
    """Why it scales, or why not: every section that explains the scaling numbers above."""
    return (machine_section(r) + collectives_section(r) + decomposition_section(r) + rank_compute_section(r)
            + prediction_section(r) + sweep_section(r))
