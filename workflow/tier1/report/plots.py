"""The report's figures: PNG, labelled axes with units, distinguishable in grayscale."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tier1.measure.disturbance import mark_kinds  # noqa: E402
from tier1.report import analysis  # noqa: E402
from tier1.report.collect import Results  # noqa: E402
from tier1.runtime.atomic import atomic_path  # noqa: E402

MARKERS = ["o", "s", "^", "D", "v", "P"]
STYLES = ["-", "--", ":", "-."]


def hardware_text(r: Results, times: bool = True) -> str:
    """The run's hardware in a few words, for the figure itself; on a CPU, a figure of times also
    says what such times can and cannot tell (a figure of scores or memory has no such caveat)."""
    tm = r.train[max(r.train)]
    hw = tm.hardware
    if hw.get("gpus"):
        shared = "; shared-GPU rehearsal: not a speedup" if analysis.shared_gpu(r) else ""
        return f"{len(hw['gpus'])}x {hw['gpus'][0]}, {tm.precision}{shared}"
    where = f"CPU rehearsal on {hw['cpu']}, {hw['cores']} cores shared by all ranks"
    return f"{where}: these times measure the code path, not GPU scaling" if times else where


def _save(fig, path: Path, r: Results, times: bool = True):
    """Write the figure with its context in it: the run's hardware, and a CPU rehearsal mark."""
    cpu = analysis.cpu_rehearsal(r)
    width_in, height_in = fig.get_size_inches()
    text = textwrap.fill(hardware_text(r, times), width=int(width_in * 14))
    fig.text(0.01, 0.01, text, fontsize=7.5, ha="left", va="bottom", color="0.2",
             fontweight="bold" if cpu else "normal",
             bbox={"facecolor": "white", "edgecolor": "black", "boxstyle": "round,pad=0.3"} if cpu else None)
    footer_in = 0.12 + 0.14 * (text.count("\n") + 1)
    fig.tight_layout(rect=(0, footer_in / height_in, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return fig


def _flag(ax, x, y, text: str) -> None:
    """A mark on one bar or point (e.g. "disturbed"), so the number is not read as clean."""
    ax.annotate(f"⚠ {text}", (x, y), xytext=(0, 3), textcoords="offset points", ha="center", va="bottom",
                fontsize=7.5, fontweight="bold")


def not_drawn(rows: list[dict]) -> list[str]:
    """Per stage, the world sizes the ratio plot has no point for, and why: its own time marked
    (disturbed, resumed, stalled), or the 1-rank time it would be divided into marked."""
    out = []
    base = next((x for x in rows if x["world_size"] == 1), None)
    for key, label in (("train", "training"), ("eval", "evaluation")):
        base_marked = bool(base and base[f"{key}_marks"])
        why = []
        for x in rows:
            if x[f"{key}_marks"]:
                why.append(f"x{x['world_size']} {mark_kinds(x[f'{key}_marks'])}")
            elif base_marked and x[f"{key}_wall_s"] is not None:
                why.append(f"x{x['world_size']} against a marked 1-rank time")
        if why:
            out.append(f"{label}: " + "; ".join(why))
    return out


def speedup(r: Results, path: Path):
    rows = analysis.scaling_rows(r)
    ns = [x["world_size"] for x in rows]
    cpu = analysis.cpu_rehearsal(r)
    fig, ax = plt.subplots(figsize=(6, 4.4))
    top = max(ns)
    proj = analysis.projection(r)
    if proj:
        top = max(top, max(p["world_size"] for p in proj))
    if cpu:  # ranks share the cores: linear is no ideal here, equal to 1 rank is the yardstick
        ax.axhline(1.0, color="0.6", linestyle=":", label="same time as 1 rank")
    else:
        ax.plot([1, top], [1, top], color="0.6", linestyle=":", label="ideal (linear)")
    for key, label, m, ls in (("train", "training", "o", "-"), ("eval", "evaluation", "s", "--")):
        pts = [(x["world_size"], x[f"{key}_speedup"]) for x in rows if x[f"{key}_speedup"] is not None]
        if pts:
            ax.plot(*zip(*pts), marker=m, linestyle=ls, color="black", label=f"{label}, wall time (measured)")
    # the steady step's ratio, the one "vs prediction" judges, and the prediction itself: named apart
    from tier1.report import prediction

    pred = [x for x in prediction.world_size_rows(r) if not x["marks"]]
    steps = [(x["world_size"], x["measured_step_speedup"]) for x in pred if x["measured_step_speedup"]]
    if steps:
        ax.plot(*zip(*steps), marker="D", linestyle="-", color="0.45", label="training, steady step (measured)")
        ax.plot([x["world_size"] for x in pred], [x["predicted_speedup"] for x in pred], marker="^",
                linestyle=":", color="0.45", label="training, steady step (predicted)")
    missing = not_drawn(rows)
    if missing:
        # under the axes (above the hardware box): inside them it would cover the lines it explains
        ax.text(0.0, -0.21, "Not drawn (a marked time gives no ratio):\n" + "\n".join(missing), transform=ax.transAxes,
                ha="left", va="top", fontsize=7.5, fontweight="bold",
                bbox={"facecolor": "white", "edgecolor": "0.5", "boxstyle": "round,pad=0.3"})
    if proj:
        ax.plot([p["world_size"] for p in proj], [p["speedup"] for p in proj], marker="x", linestyle="-.",
                color="0.35", label="training (projection)")
    ax.set_xlabel("world size (ranks)")
    ax.set_ylabel("1-rank time / N-rank time" if cpu else "speedup vs 1 rank (x)")
    ax.set_title("Time ratio vs 1 rank (CPU rehearsal: not a speedup)" if cpu else "Speedup")
    ax.set_xticks(sorted(set(ns + ([p["world_size"] for p in proj] if proj else []))))
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path, r)


def throughput(r: Results, path: Path):
    rows = analysis.scaling_rows(r)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 4))
    for ax, key, prefix, label in ((a, "train_samples_per_s", "train", "training (pairs/s)"),
                                   (b, "eval_documents_per_s", "eval", "evaluation (documents/s)")):
        pts = [x for x in rows if x[key] is not None]
        bars = ax.bar([str(x["world_size"]) for x in pts], [x[key] for x in pts], color="0.4", edgecolor="black")
        for bar, x in zip(bars, pts):
            if x[f"{prefix}_marks"]:
                bar.set_hatch("xx")
                bar.set_facecolor("0.85")
                _flag(ax, bar.get_x() + bar.get_width() / 2, bar.get_height(), mark_kinds(x[f"{prefix}_marks"]))
        ax.set_xlabel("world size (ranks)")
        ax.set_ylabel(label)
        ax.margins(y=0.12)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Throughput" + (" (CPU rehearsal)" if analysis.cpu_rehearsal(r) else ""))
    return _save(fig, path, r)


def memory_series(r: Results) -> dict[str, dict[int, dict]]:
    """Per strategy ("DDP", "FSDP2"): world size -> the largest rank's model states and peak (GB)."""
    from tier1.config import PARALLELISM_NAMES as NAMES
    from tier1.report.collect import second_strategy, strategy

    out: dict[str, dict[int, dict]] = {}
    kind = analysis.peak_kind(r)
    for runs in (r, second_strategy(r)):
        if runs is None:
            continue
        for row in analysis.scaling_rows(runs, kind):
            n, tm = row["world_size"], runs.train.get(row["world_size"])
            if tm is None:
                continue
            name = NAMES.get(strategy(runs.train[max(runs.train)]), "?")
            states = row["model_state_per_rank_bytes"]
            out.setdefault(name, {})[n] = {"states": states["total"] / 1e9 if states else None,
                                           "peak": (row["peak_memory_per_device_bytes"] or 0) / 1e9}
    return out


def memory(r: Results, path: Path):
    """Left: memory per rank against world size, each strategy a line (model states solid, the
    peak dashed): DDP's model states stay flat, FSDP2's fall as 1/N. Right: every rank's peak."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    kind = analysis.peak_kind(r)
    peak_name = analysis.peak_label(kind)[0]
    for i, (name, series) in enumerate(memory_series(r).items()):
        sizes = sorted(series)
        states = [series[n]["states"] for n in sizes]
        if all(v is not None for v in states):
            left.plot(sizes, states, marker=MARKERS[i], linestyle="-", color=str(0.45 * i),
                      label=f"{name}: model states")
        left.plot(sizes, [series[n]["peak"] for n in sizes], marker=MARKERS[i], linestyle="--",
                  color=str(0.45 * i), label=f"{name}: {peak_name}")
    left.set_xlabel("world size (ranks)")
    left.set_xticks(sorted(r.train))
    left.set_ylabel("memory per rank (GB)")
    left.set_ylim(bottom=0)
    left.set_title("Memory per rank against world size")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    labels, values = [], []
    for n, tm in sorted(r.train.items()):
        for x in tm.ranks:
            labels.append(f"{n}:{x['rank']}")
            values.append(analysis.peak_bytes(x["peak_memory"], kind) / 1e9)
    right.bar(labels, values, color="0.5", edgecolor="black")
    right.set_xlabel("world size : rank")
    right.set_ylabel(f"{peak_name} (GB)")
    right.set_title("Peak memory of every rank (the main table's runs)")
    right.grid(axis="y", alpha=0.3)
    return _save(fig, path, r, times=False)


def loss(r: Results, path: Path):
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (n, rows) in enumerate(sorted(r.loss.items())):
        ax.plot([x["samples_seen"] for x in rows], [x["loss"] for x in rows], linestyle=STYLES[i % 4],
                marker=MARKERS[i % 6], markersize=4, color=str(0.6 * i / max(1, len(r.loss) - 1)),
                label=f"{n} rank{'s' if n > 1 else ''}")
    if r.reference_loss:
        # the yardstick of the same-model verdict: how far dropout masks alone move the curve
        ax.plot([x["samples_seen"] for x in r.reference_loss], [x["loss"] for x in r.reference_loss],
                color="0.75", linewidth=3, zorder=0, label="1 rank, other dropout masks")
    ax.set_xlabel("training pairs seen")
    ax.set_ylabel("contrastive loss (global batch)")
    ax.set_title("Loss per step, all world sizes overlaid")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path, r, times=False)


def quality(r: Results, path: Path):
    names, ndcg, mrr = [], [], []
    if r.eval_base:
        m = r.eval_base[min(r.eval_base)].metrics
        names.append("base\n(before training)")
        ndcg.append(m["ndcg@10"])
        mrr.append(m["mrr@10"])
    for n, e in sorted(r.eval_trained.items()):
        names.append(f"trained on\n{n} rank{'s' if n > 1 else ''}")
        ndcg.append(e.metrics["ndcg@10"])
        mrr.append(e.metrics["mrr@10"])
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    xs = range(len(names))
    for offset, values, color, label in ((-0.2, ndcg, "0.3", "nDCG@10"), (0.2, mrr, "0.8", "MRR@10")):
        bars = ax.bar([x + offset for x in xs], values, width=0.4, color=color, edgecolor="black", label=label)
        # the axis starts at zero, so small differences are read from the values, not the bar heights
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(list(xs), names)
    ax.set_ylim(0.0, 1.15)
    ax.set_ylabel("score (0-1)")
    ax.set_title("Retrieval quality before and after training")
    ax.legend(loc="upper left", ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path, r, times=False)


def time_split_parts(r: Results) -> dict[str, dict[int, dict]]:
    """Per stage and world size, the wall time and its parts in seconds; "other" is what the
    measured parts leave of the wall time (start-up steps, waits, logging), so the parts sum to it.

    Training parts are median step phases times the number of steps; evaluation parts are the
    slowest rank's encode and search times plus the merge.
    """
    out: dict[str, dict[int, dict]] = {"training": {}, "evaluation": {}}
    for n, tm in sorted(r.train.items()):
        split, steps = tm.time_split_median_s, tm.steps
        parts = {"data": (split.get("data") or 0) * steps,
                 "forward+backward+comm": (split.get("forward_backward_with_comm") or 0) * steps,
                 "optimizer": (split.get("optimizer") or 0) * steps}
        out["training"][n] = _with_other(parts, tm.wall_time_s, tm.marks)
    for n, em in sorted(r.eval_base.items()):
        t = em.timings_s
        parts = {"encode": max(t.get("encode_per_rank") or [0]),
                 "top-k + merge": max(t.get("similarity_topk_per_rank") or [0]) + (t.get("merge") or 0)}
        out["evaluation"][n] = _with_other(parts, em.wall_time_s, em.marks)
    return out


def _with_other(parts: dict[str, float], wall: float, marks: list[str]) -> dict:
    known = sum(parts.values())
    # Medians of steps can add up to more than the wall time; then the parts are scaled to it.
    scale = wall / known if known > wall > 0 else 1.0
    parts = {k: v * scale for k, v in parts.items()}
    return {"wall": wall, "parts": {**parts, "other": wall - sum(parts.values())}, "scaled": scale != 1.0,
            "marks": marks}


def time_split(r: Results, path: Path):
    """Where a run's time goes, per world size: training and evaluation, each summing to its wall time."""
    styles = {"data": ("white", ""), "forward+backward+comm": ("0.35", ""), "optimizer": ("0.7", "xx"),
              "encode": ("0.5", "//"), "top-k + merge": ("0.9", ".."), "other": ("white", "\\\\")}
    data = time_split_parts(r)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    for ax, (stage, per_n) in zip(axes, data.items()):
        sizes = sorted(per_n)
        names = list(next(iter(per_n.values()))["parts"]) if per_n else []
        bottom = [0.0] * len(sizes)
        for name in names:
            vals = [per_n[n]["parts"][name] for n in sizes]
            color, hatch = styles.get(name, ("0.6", ""))
            ax.bar([str(n) for n in sizes], vals, bottom=bottom, color=color, edgecolor="black", hatch=hatch,
                   label=name)
            bottom = [b + v for b, v in zip(bottom, vals)]
        for i, n in enumerate(sizes):
            x = per_n[n]
            label = f"wall {x['wall']:.1f} s" + ("*" if x["scaled"] else "")
            if x["marks"]:
                label += f"\n⚠ {mark_kinds(x['marks'])}"
            ax.annotate(label, (i, x["wall"]), xytext=(0, 3), textcoords="offset points", ha="center",
                        va="bottom", fontsize=7.5, fontweight="bold" if x["marks"] else "normal")
        ax.set_ylim(0, 1.2 * max((x["wall"] for x in per_n.values()), default=1.0))
        if any(x["scaled"] for x in per_n.values()):
            ax.text(1.0, 1.01, "* parts from median steps exceeded the wall time: scaled to it", fontsize=7,
                    ha="right", va="bottom", transform=ax.transAxes)
        ax.set_xlabel("world size (ranks)")
        ax.set_ylabel("time (s)")
        ax.set_title(stage.capitalize(), loc="left")
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7.5, loc="lower left")
    fig.suptitle("Where the wall time goes")
    return _save(fig, path, r)


# compute, exposed comm, data, optimizer, stragglers, other: fill and hatch, apart in grayscale
DECOMPOSITION_STYLE = {"compute": ("0.35", ""), "exposed_comm": ("0.9", "xx"), "data": ("white", ""),
                       "optimizer": ("0.65", "//"), "stragglers": ("0.8", ".."), "other": ("0.97", "--")}


def fit_to_step(seconds: dict[str, float | None], step: float | None) -> dict[str, float]:
    """The parts to stack for one bar: none negative, and together never taller than the step
    (training.decomposition.fit_to_step; a predicted "other" below 0 is drawn as 0)."""
    from tier1.training import decomposition

    parts, _ = decomposition.fit_to_step(seconds, step)
    parts["other"] = max(0.0, parts["other"]) if step else max(0.0, seconds.get("other") or 0.0)
    return parts


def decomposition(r: Results, path: Path) -> None:
    """Per world size, the measured step (left bar) beside the predicted one (right, lighter
    edge), stacked by term."""
    from tier1.report import prediction
    from tier1.training.decomposition import LABELS, TERMS

    predicted = {x["world_size"]: x["predicted"] for x in prediction.world_size_rows(r)}
    steps = {n: (r.train[n].decomposition or {}).get("step_s") for n in r.train}
    sizes = sorted(r.train)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.38
    for i, n in enumerate(sizes):
        measured = r.train[n].decomposition
        bars = [(i - width / 2, fit_to_step(measured["seconds"], steps[n]) if measured else None, "black"),
                (i + width / 2, fit_to_step(predicted[n]["seconds"], predicted[n]["step_s"])
                 if n in predicted else None, "0.5")]
        for x, seconds, edge in bars:
            if seconds is None:
                continue
            bottom = 0.0
            for term in TERMS:
                v = seconds[term]
                color, hatch = DECOMPOSITION_STYLE[term]
                ax.bar(x, v, width=width, bottom=bottom, color=color, hatch=hatch, edgecolor=edge,
                       label=LABELS[term] if i == 0 and edge == "black" else None)
                bottom += v
    ax.set_xticks(range(len(sizes)), [f"{n}\nmeasured | predicted" for n in sizes], fontsize=8)
    ax.set_xlabel("world size (ranks)")
    ax.set_ylabel("time per step (s)")
    ax.set_title("Step decomposition: measured (left) and predicted (right)")
    ax.set_ylim(0, 1.1 * ax.get_ylim()[1])  # headroom: the tallest bar's top segment stays inside the frame
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path, r)


def collectives(r: Results, path: Path) -> None:
    """Bus bandwidth against message size, all-reduce and all-gather, one line per world size;
    the gradient size marked."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    gradient = None
    for i, (n, c) in enumerate(sorted(r.comm.items())):
        shade = str(0.6 * i / max(1, len(r.comm) - 1))
        for key, ls, name in (("all_reduce", "-", "all-reduce"), ("all_gather", ":", "all-gather")):
            rows = getattr(c, key)
            if rows:
                ax.plot([x["bytes"] for x in rows], [x["busbw_gbps"] for x in rows], linestyle=ls,
                        marker=MARKERS[i % 6], markersize=4, color=shade, label=f"{name}, {n} ranks")
        gradient = c.gradient_bytes or gradient
    if gradient:
        ax.axvline(gradient, color="0.5", linestyle="--", linewidth=1, label=f"gradient ({gradient / 1e6:.0f} MB)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("message size (bytes, log scale)")
    ax.set_ylabel("bus bandwidth (GB/s)")
    ax.set_title("Collectives: bus bandwidth by message size" if r.comm else "Collectives: none measured (1 rank)")
    ax.grid(alpha=0.3)
    if r.comm:
        ax.legend(fontsize=8)
    return _save(fig, path, r)


def sweep(r: Results, path: Path) -> None:
    """Where multi-GPU pays off: speedup against the per-GPU batch, one line per world size, each
    world size's ideal (N) and the card's 3.0x at its GPU count marked."""
    from tier1.report import sweep as batch_sweep
    from tier1.report.collect import CARD_EXPECTATION

    rows = [x for x in batch_sweep.rows(r) if x["speedup"] is not None and x["world_size"] > 1]
    cpu = not any(x["on_gpu"] for x in rows)
    fig, ax = plt.subplots(figsize=(9, 4.4))
    sizes = sorted({x["world_size"] for x in rows})
    for i, n in enumerate(sizes):
        pts = sorted((x["per_rank_batch"], x["speedup"]) for x in rows if x["world_size"] == n)
        shade = str(0.55 * i / max(1, len(sizes) - 1))
        ax.plot(*zip(*pts), marker=MARKERS[i % 6], linestyle=STYLES[i % 4], color=shade,
                label=f"{n} {'ranks' if cpu else 'GPUs'} (measured)")
        if not cpu:
            ax.axhline(n, color=shade, linestyle=":", linewidth=1, label=f"ideal at {n} GPUs ({n:.0f}x)")
    card = CARD_EXPECTATION["training_speedup"]
    ax.axhline(card, color="0.3", linestyle="-.", linewidth=1.2,
               label=f"the card: {card:.1f}x at {CARD_EXPECTATION['gpus']} GPUs\n(not measured here)")
    if cpu:
        ax.axhline(1.0, color="0.6", linestyle=":", label="same time as 1 rank")
    if rows:
        ax.set_xscale("log", base=2)
        ticks = sorted({x["per_rank_batch"] for x in rows})
        ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel(f"per-{'rank' if cpu else 'GPU'} batch (pairs, log scale)")
    ax.set_ylabel("1-rank time / N-rank time" if cpu else "speedup vs 1 GPU (x)")
    ax.set_title("Where multi-GPU pays off" + (" (CPU rehearsal: time ratios, not speedups)" if cpu else ""))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the lines, never over them
    return _save(fig, path, r)


ALL = {"speedup": speedup, "throughput": throughput, "memory": memory, "loss": loss,
       "quality": quality, "time_split": time_split, "decomposition": decomposition,
       "collectives": collectives, "sweep": sweep}
