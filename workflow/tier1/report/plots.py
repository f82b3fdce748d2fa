"""The report's figures: PNG, labelled axes with units, distinguishable in grayscale."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tier1.atomic import atomic_path  # noqa: E402
from tier1.report import analysis  # noqa: E402
from tier1.report.collect import Results  # noqa: E402

MARKERS = ["o", "s", "^", "D", "v", "P"]
STYLES = ["-", "--", ":", "-."]


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def speedup(r: Results, path: Path) -> None:
    rows = analysis.scaling_rows(r)
    ns = [x["world_size"] for x in rows]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    top = max(ns)
    proj = analysis.projection(r)
    if proj:
        top = max(top, max(p["world_size"] for p in proj))
    ax.plot([1, top], [1, top], color="0.6", linestyle=":", label="ideal (linear)")
    for key, label, m, ls in (("train_speedup", "training", "o", "-"), ("eval_speedup", "evaluation", "s", "--")):
        pts = [(x["world_size"], x[key]) for x in rows if x[key] is not None]
        if pts:
            ax.plot(*zip(*pts), marker=m, linestyle=ls, color="black", label=f"{label} (measured)")
    if proj:
        ax.plot([p["world_size"] for p in proj], [p["speedup"] for p in proj], marker="x", linestyle="-.",
                color="0.35", label="training (projection)")
    ax.set_xlabel("world size (ranks)")
    ax.set_ylabel("speedup vs 1 rank (x)")
    ax.set_title("Speedup")
    ax.set_xticks(sorted(set(ns + ([p["world_size"] for p in proj] if proj else []))))
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)


def throughput(r: Results, path: Path) -> None:
    rows = analysis.scaling_rows(r)
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.8))
    for ax, key, label in ((a, "train_samples_per_s", "training (pairs/s)"), (b, "eval_documents_per_s", "evaluation (documents/s)")):
        pts = [(x["world_size"], x[key]) for x in rows if x[key] is not None]
        if pts:
            ax.bar([str(n) for n, _ in pts], [v for _, v in pts], color="0.4", edgecolor="black")
        ax.set_xlabel("world size (ranks)")
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("Throughput")
    _save(fig, path)


def memory(r: Results, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    labels, values = [], []
    for n, tm in sorted(r.train.items()):
        for x in tm["ranks"]:
            labels.append(f"{n}:{x['rank']}")
            values.append(analysis.peak_bytes(x["peak_memory"]) / 1e9)
    ax.bar(labels, values, color="0.5", edgecolor="black", hatch="//")
    ax.set_xlabel("world size : rank")
    on_gpu = bool(next(iter(r.train.values()))["hardware"].get("gpus"))
    ax.set_ylabel("peak memory (GB)" + ("" if on_gpu else ", process RSS"))
    ax.set_title("Peak memory per device during training")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def loss(r: Results, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4))
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
    _save(fig, path)


def quality(r: Results, path: Path) -> None:
    names, ndcg, mrr = [], [], []
    if r.eval_base:
        m = r.eval_base[min(r.eval_base)]["metrics"]
        names.append("base")
        ndcg.append(m["ndcg@10"])
        mrr.append(m["mrr@10"])
    for n, e in sorted(r.eval_trained.items()):
        names.append(f"trained x{n}")
        ndcg.append(e["metrics"]["ndcg@10"])
        mrr.append(e["metrics"]["mrr@10"])
    fig, ax = plt.subplots(figsize=(6.5, 4))
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], ndcg, width=0.4, color="0.3", edgecolor="black", label="nDCG@10")
    ax.bar([x + 0.2 for x in xs], mrr, width=0.4, color="0.8", edgecolor="black", hatch="..", label="MRR@10")
    ax.set_xticks(list(xs), names)
    lo = min(ndcg + mrr)
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax.set_ylabel("score (0-1)")
    ax.set_title("Retrieval quality before and after training")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def time_split(r: Results, path: Path) -> None:
    """Where a run's time goes, per world size: training split by phase, then evaluation."""
    parts = [("data", "white", ""), ("forward+backward+comm", "0.35", ""), ("optimizer", "0.7", "xx"),
             ("eval encode", "0.5", "//"), ("eval top-k + merge", "0.9", "..")]
    sizes = sorted(set(r.train) | set(r.eval_base))
    values = {p[0]: [] for p in parts}
    for n in sizes:
        tm, em = r.train.get(n), r.eval_base.get(n)
        steps = tm["steps"] if tm else 0
        split = tm["time_split_median_s"] if tm else {}
        values["data"].append((split.get("data") or 0) * steps)
        values["forward+backward+comm"].append((split.get("forward_backward_with_comm") or 0) * steps)
        values["optimizer"].append((split.get("optimizer") or 0) * steps)
        t = em["timings_s"] if em else {}
        values["eval encode"].append(max(t.get("encode_per_rank", [0])))
        values["eval top-k + merge"].append(max(t.get("similarity_topk_per_rank", [0])) + t.get("merge", 0))
    fig, ax = plt.subplots(figsize=(8, 4))
    bottom = [0.0] * len(sizes)
    for name, color, hatch in parts:
        ax.bar([str(n) for n in sizes], values[name], bottom=bottom, color=color, edgecolor="black", hatch=hatch, label=name)
        bottom = [b + v for b, v in zip(bottom, values[name])]
    ax.set_xlabel("world size (ranks)")
    ax.set_ylabel("time (s), from median step times")
    ax.set_title("Where the time goes")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


# compute, exposed comm, data, optimizer, stragglers, other: fill and hatch, apart in grayscale
DECOMPOSITION_STYLE = {"compute": ("0.35", ""), "exposed_comm": ("0.9", "xx"), "data": ("white", ""),
                       "optimizer": ("0.65", "//"), "stragglers": ("0.8", ".."), "other": ("0.97", "--")}


def decomposition(r: Results, path: Path) -> None:
    """Per world size, the measured step (left bar) beside the predicted one (right, lighter
    edge), stacked by term."""
    from tier1.report import prediction
    from tier1.training.decomposition import LABELS, TERMS

    predicted = {x["world_size"]: x["predicted"] for x in prediction.world_size_rows(r)}
    sizes = sorted(r.train)
    fig, ax = plt.subplots(figsize=(8, 4.2))
    width = 0.38
    for i, n in enumerate(sizes):
        measured = r.train[n].get("decomposition")
        bars = [(i - width / 2, measured["seconds"] if measured else None, "black"),
                (i + width / 2, predicted[n]["seconds"] if n in predicted else None, "0.5")]
        for x, seconds, edge in bars:
            if seconds is None:
                continue
            bottom = 0.0
            for term in TERMS:
                v = max(0.0, seconds.get(term) or 0.0)  # a negative "other" (noise) is not drawn
                color, hatch = DECOMPOSITION_STYLE[term]
                ax.bar(x, v, width=width, bottom=bottom, color=color, hatch=hatch, edgecolor=edge,
                       label=LABELS[term] if i == 0 and edge == "black" else None)
                bottom += v
    ax.set_xticks(range(len(sizes)), [f"{n}\nmeasured | predicted" for n in sizes], fontsize=8)
    ax.set_xlabel("world size (ranks)")
    ax.set_ylabel("time per step (s)")
    ax.set_title("Step decomposition: measured (left) and predicted (right)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def collectives(r: Results, path: Path) -> None:
    """Bus bandwidth against message size, all-reduce and all-gather, one line per world size;
    the gradient size marked."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    gradient = None
    for i, (n, c) in enumerate(sorted(r.comm.items())):
        shade = str(0.6 * i / max(1, len(r.comm) - 1))
        for key, ls, name in (("all_reduce", "-", "all-reduce"), ("all_gather", ":", "all-gather")):
            rows = c.get(key) or []
            if rows:
                ax.plot([x["bytes"] for x in rows], [x["busbw_gbps"] for x in rows], linestyle=ls,
                        marker=MARKERS[i % 6], markersize=4, color=shade, label=f"{name}, {n} ranks")
        gradient = c.get("gradient_bytes") or gradient
    if gradient:
        ax.axvline(gradient, color="0.5", linestyle="--", linewidth=1, label=f"gradient ({gradient / 1e6:.0f} MB)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("message size (bytes, log scale)")
    ax.set_ylabel("bus bandwidth (GB/s)")
    ax.set_title("Collectives: bus bandwidth by message size" if r.comm else "Collectives: none measured (1 rank)")
    ax.grid(alpha=0.3)
    if r.comm:
        ax.legend(fontsize=8)
    _save(fig, path)


ALL = {"speedup": speedup, "throughput": throughput, "memory": memory, "loss": loss,
       "quality": quality, "time_split": time_split, "decomposition": decomposition,
       "collectives": collectives}
