"""The benchmark: tier1 against sentence-transformers, alternating one process per side.

    python -m tier1.bench.compare --config '<bench view JSON>' --pairs PAIRS.jsonl \
        --corpus CORPUS.jsonl --md COMPARE.md --json COMPARE.json

Each repeat runs both sides, one after the other in a fresh process each, the order flipping
every repeat, so a slow spell on a shared machine falls on both. Medians, spreads and the ratios
tier1 / sentence-transformers (`*_ratio`, above 1 means tier1 is faster) go to compare.json and
compare.md, with both sides' recorded inputs and the lowest cosine between their embeddings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from tier1.bench import tiny
from tier1.bench.workload import RECIPES, Workload, bench_device, short_precision
from tier1.config import BenchConfig, config_hash
from tier1.encoder import shapes
from tier1.encoder.model import resolve_model_path
from tier1.measure import flops
from tier1.records import BenchRecord
from tier1.runtime import atomic, provenance
from tier1.runtime import device as devices
from tier1.runtime.cli import CONFIG_HELP, parse_stage_config, run_main, setup_logging

log = logging.getLogger("tier1.bench")
TINY = "BERT of hidden size 32 and 2 layers (tier1.bench.tiny)"
SIDES = ("tier1", "sentence-transformers")


def run_side(side: str, workload: Path, out: Path, embeddings: Path | None) -> dict:
    cmd = [sys.executable, "-m", "tier1.bench.side", "--side", side, "--workload", str(workload), "--out", str(out)]
    if embeddings is not None:
        cmd += ["--embeddings", str(embeddings)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{side} side failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(out.read_text())


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "all": values}


def min_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = torch.nn.functional.normalize(a.double(), dim=1), torch.nn.functional.normalize(b.double(), dim=1)
    return float((a * b).sum(1).min())


def measure(w: Workload, repeats: int, folder: Path, warm_up: bool = False) -> dict:
    """Both sides `repeats` times, alternating; the medians, spreads and ratios. With `warm_up`,
    one process per side runs first and is not counted: on a freshly started GPU machine the
    first process ran the same training at 2.96 steps/s that a later one ran at 8.31
    (docs/gpu/20261126-h200), a cold start of the machine that alternating cannot share out."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "workload.json"
    spec.write_text(w.to_json())
    runs: dict[str, list[dict]] = {s: [] for s in SIDES}
    warm: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        emb = {s: Path(tmp) / f"{s}.pt" for s in SIDES}
        for side in SIDES if warm_up else ():
            log.info("%s: warm-up, %s (not counted)", w.recipe, side)
            warm[side] = run_side(side, spec, folder / f"{side}_warmup.json", None)
        for r in range(repeats):
            for side in SIDES if r % 2 == 0 else SIDES[::-1]:
                log.info("%s: repeat %d of %d, %s", w.recipe, r + 1, repeats, side)
                runs[side].append(run_side(side, spec, folder / f"{side}_{r + 1}.json", emb[side] if r == 0 else None))
        cosine = min_cosine(torch.load(emb["tier1"]), torch.load(emb["sentence-transformers"]))
    sides = {}
    for side, results in runs.items():
        sides[side] = {
            "train_steps_per_s": spread([x["train"]["steps_per_s"] for x in results]),
            "encode_texts_per_s": spread([x["encode"]["texts_per_s"] for x in results]),
            # sentence-transformers tokenises inside encode; tier1's evaluation reads cached ids
            "encode_with_tokenize_texts_per_s": spread([x["encode"].get("texts_per_s_with_tokenize",
                                                                        x["encode"]["texts_per_s"]) for x in results]),
            "inputs": results[0]["train"]["inputs"],
            "encode_precision": results[0]["encode"]["precision"],
            "encode_passes": results[0]["encode"]["passes"],
            "marks": sorted({m for x in results for task in ("train", "encode") for m in x[task]["marks"]}),
        }
        if all("host_ms_per_step" in x["train"] for x in results):  # host_overhead: the step less its arithmetic
            sides[side]["host_ms_per_step"] = spread([x["train"]["host_ms_per_step"] for x in results])
            sides[side]["step_ms"] = spread([x["train"]["step_ms"] for x in results])
            sides[side]["floor_ms_per_step"] = spread([x["train"]["floor_ms"] for x in results])
    t1, st = sides["tier1"], sides["sentence-transformers"]
    host = {}
    if "host_ms_per_step" in t1 and "host_ms_per_step" in st:  # ms per step, lower is faster: ST / tier1
        host = {"host_overhead_ratio": st["host_ms_per_step"]["median"] / t1["host_ms_per_step"]["median"],
                "host_ms_per_step": {s: sides[s]["host_ms_per_step"]["median"] for s in SIDES},
                "host_step_ms": {s: sides[s]["step_ms"]["median"] for s in SIDES},
                "floor_ms_per_step": {s: sides[s]["floor_ms_per_step"]["median"] for s in SIDES}}
    return {
        "recipe": w.recipe,
        # a ratio whose two sides' [slowest, fastest] repeats overlap is within this machine's noise
        "within_noise": {ratio: overlap(t1[key], st[key]) for ratio, key in RATIOS.items() if key in t1},
        "train_ms_per_step": {side: 1000 / sides[side]["train_steps_per_s"]["median"] for side in SIDES},
        "train_steps_ratio": t1["train_steps_per_s"]["median"] / st["train_steps_per_s"]["median"],
        "encode_texts_ratio": t1["encode_texts_per_s"]["median"] / st["encode_texts_per_s"]["median"],
        "encode_with_tokenize_ratio": (t1["encode_with_tokenize_texts_per_s"]["median"]
                                       / st["encode_with_tokenize_texts_per_s"]["median"]),
        **host,
        "encode_min_cosine": cosine,
        "inputs_differ": differences(t1["inputs"], st["inputs"]),
        "train_flops_per_step": runs["tier1"][0]["train"]["model_flops_per_step"],
        "sides": sides,
        # what the uncounted first processes measured, to show the cold start they absorbed
        "warm_up": {side: {"train_steps_per_s": x["train"]["steps_per_s"], "encode_texts_per_s": x["encode"]["texts_per_s"]}
                    for side, x in warm.items()} or None,
    }


RATIOS = {"train_steps_ratio": "train_steps_per_s", "encode_texts_ratio": "encode_texts_per_s",
          "encode_with_tokenize_ratio": "encode_with_tokenize_texts_per_s", "host_overhead_ratio": "host_ms_per_step"}


def overlap(a: dict, b: dict) -> bool:
    """Whether two spreads (min-max over repeats) overlap."""
    return a["min"] <= b["max"] and b["min"] <= a["max"]


def differences(a: dict, b: dict) -> dict:
    """The recorded inputs in which two sides differ (the precision may, under "defaults")."""
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def add_mfu(result: dict, device: torch.device) -> None:
    """Model FLOPs utilisation of each side's training, from tier1's FLOP count of the same pairs."""
    for side in result["sides"].values():
        precision = side["inputs"]["precision"]
        peak, source = flops.peak_flops(devices.device_name(device), "bfloat16" if precision == "bf16" else "float32")
        rate = side["train_steps_per_s"]["median"]
        side["train_mfu"] = flops.mfu(result["train_flops_per_step"], 1 / rate, peak) if peak else None
        side["peak_source"] = source


def markdown(report: BenchRecord) -> str:
    passes = next(iter(report.recipes.values()))["sides"]["tier1"]["encode_passes"] if report.recipes else 1
    lines = [f"# tier1 against sentence-transformers ({report.device})", "",
             f"Same model, pairs, texts, batch, sequence length and {report.threads} thread(s) on both sides "
             "(for the arithmetic and for the tokenizer); "
             f"one process per side and repeat ({report.repeats} repeats, order alternating). Medians, "
             "with the slowest and fastest repeat. A ratio above 1 means tier1 is faster. Training is timed "
             "from the end of step 1 to the end of the last step on both sides, the device waited for only "
             "there; **tokenisation is counted on both sides**: sentence-transformers' collator tokenises each "
             "batch inside that window, and tier1's tokenising of the same steps' pairs (once per run in the "
             "pipeline, before training) is timed apart and added to its window. A ratio is marked *within "
             "noise* where the two sides' slowest-fastest ranges overlap. "
             "tier1's evaluation encodes token ids its tokenize stage cached once per run; "
             "SentenceTransformer.encode tokenises as it goes, so encoding is shown both ways. "
             f"Each process encodes the texts {passes} time(s), after a first batch left out of the timing; a repeat's figure is "
             "its median pass."
             + (" Before the first recipe, one process per side ran untimed (a freshly started machine runs its "
                "first processes slower); its numbers are under `warm_up` in compare.json, not in the medians."
                if any(r.get("warm_up") for r in report.recipes.values()) else ""), ""]
    if report.host_overhead_ratio is not None:
        r = report.recipes["host_overhead"]
        step, floor_ms, host = r["host_step_ms"], r["floor_ms_per_step"], r["host_ms_per_step"]
        noise = " (within noise)" if r["within_noise"].get("host_overhead_ratio") else ""
        lines += [f"**Host overhead per training step** (recipe host_overhead: a {TINY} with the real batch, "
                  "sequence length and tokenizer). Its arithmetic is not negligible on a CPU, so each side also "
                  "runs the floor of its step: its own model's forward, loss, backward and fused AdamW step on the "
                  "batches its step met, ready in memory (tier1.bench.floor); the host's cost is the step less "
                  "that floor (tokenisation stays in it, on both sides). On a CPU each process's figure is its "
                  "median step (a spell of other work falls on a few steps and drops out), on a GPU its mean; "
                  "then each row's own median over the repeats (so the rows need not subtract exactly), ms "
                  "per step:", "",
                  "| | tier1 | sentence-transformers |", "| --- | --- | --- |",
                  f"| step | {step['tier1']:.1f} | {step['sentence-transformers']:.1f} |",
                  f"| arithmetic floor | {floor_ms['tier1']:.1f} | {floor_ms['sentence-transformers']:.1f} |",
                  f"| host (step - floor) | {host['tier1']:.1f} | {host['sentence-transformers']:.1f} |", "",
                  f"host_overhead_ratio (sentence-transformers / tier1): {report.host_overhead_ratio:.2f}x{noise}."
                  + (" **Not a measurement**: a floor took longer than its step, so the machine's noise exceeded "
                     "the host's cost." if min(host.values()) <= 0 else ""), ""]
    for result in report.recipes.values():
        t1, st = result["sides"]["tier1"], result["sides"]["sentence-transformers"]
        what = {"matched": "sentence-transformers runs tier1's recipe (same precision, no gradient clipping)",
                "defaults": "sentence-transformers with its defaults (fp32, gradient clipping)",
                "host_overhead": f"tier1's recipe on both sides with a {TINY}: the host's cost per step "
                                 "(tier1 with its GPU settings: one part per side, widths padded to multiples of 64)",
                }[result["recipe"]]
        lines += [f"## {result['recipe']}: {what}", "",
                  "| measure | tier1 | sentence-transformers | ratio |", "| --- | --- | --- | --- |"]
        for key, label, ratio in (("train_steps_per_s", "training steps/s", "train_steps_ratio"),
                                  ("encode_texts_per_s", "encoding texts/s (tier1 from its cached token ids)",
                                   "encode_texts_ratio"),
                                  ("encode_with_tokenize_texts_per_s", "encoding texts/s, tokenisation counted on both sides",
                                   "encode_with_tokenize_ratio")):
            a, b = t1[key], st[key]
            noise = " (within noise)" if result.get("within_noise", {}).get(ratio) else ""
            lines.append(f"| {label} | {a['median']:.3g} ({a['min']:.3g}-{a['max']:.3g}) | "
                         f"{b['median']:.3g} ({b['min']:.3g}-{b['max']:.3g}) | {result[ratio]:.2f}x{noise} |")
        if t1.get("train_mfu") is not None:
            lines.append(f"| training MFU ({t1['peak_source']}) | {t1['train_mfu']:.1%} | "
                         f"{st['train_mfu']:.1%} | |")
        lines += ["", f"- precision: tier1 {t1['inputs']['precision']} / {t1['encode_precision']} (train / encode), "
                      f"sentence-transformers {st['inputs']['precision']} / {st['encode_precision']}",
                  f"- embeddings: lowest cosine between the two sides over {t1['inputs']['n_texts']} texts: "
                  f"{result['encode_min_cosine']:.6f}",
                  "- inputs: " + ("identical" if not result["inputs_differ"] else "differ in " + ", ".join(
                      f"{k} ({v[0]} / {v[1]})" for k, v in result["inputs_differ"].items()))]
        marks = t1["marks"] + st["marks"]
        if marks:
            lines.append("- **disturbed**: " + "; ".join(sorted(set(marks))))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "--configfile", dest="config", required=True, help=CONFIG_HELP)
    parser.add_argument("--pairs", type=Path, required=True, help="training pairs (train.jsonl)")
    parser.add_argument("--corpus", type=Path, required=True, help="texts to encode (corpus.jsonl)")
    parser.add_argument("--md", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--recipes", nargs="+", choices=RECIPES, default=None,
                        help="default: matched on CPU; matched and defaults on a GPU")
    args = parser.parse_args(argv)
    setup_logging()
    cfg: BenchConfig = parse_stage_config(args.config, "bench")
    device = bench_device()
    dtype = devices.autocast_dtype(cfg.precision, device)
    # on a GPU the targets are against sentence-transformers' defaults: measured first, so a run
    # cut short by its time limit still has them
    recipes = args.recipes or (["defaults", "matched", "host_overhead"] if device.type == "cuda"
                               else ["matched", "host_overhead"])
    # both sides' tokenizers on the threads their arithmetic has, as the pipeline's tokenize stage
    # runs (the sides' processes fork nothing after tokenising)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    threads = provenance.available_cores()
    report = BenchRecord(device=devices.device_name(device), threads=threads, repeats=cfg.bench_repeats,
                         config=vars(cfg), recipes={}, host_overhead_ratio=None, host_overhead_ms_per_step=None,
                         **provenance.stamp(config_hash(vars(cfg))))
    tiny_folder = tempfile.TemporaryDirectory()
    for recipe in recipes:
        base = resolve_model_path(cfg.model)
        # the host-overhead recipe stands in for the launch-bound GPU step, so tier1 runs it with
        # its GPU settings: one part per side and the GPU's ladder (multiples of 64)
        settings = {"length_buckets": cfg.length_buckets, "pad_widths": cfg.pad_widths}
        if recipe == "host_overhead":
            base = str(tiny.make(base, Path(tiny_folder.name) / "tiny", cfg.max_seq_length, cfg.seed))
            settings = {"length_buckets": 1, "pad_widths": list(range(shapes.GPU_STEP, cfg.max_seq_length,
                                                                      shapes.GPU_STEP))}
        w = Workload(model=base, pairs=str(args.pairs), corpus=str(args.corpus),
                     steps=cfg.bench_steps, batch_size=cfg.batch_size, max_seq_length=cfg.max_seq_length,
                     precision=short_precision(dtype), texts=cfg.bench_texts, eval_batch_size=cfg.eval_batch_size,
                     learning_rate=cfg.learning_rate, warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay,
                     loss_scale=cfg.loss_scale, seed=cfg.seed, threads=threads,
                     recipe=recipe, encoder=cfg.encoder, **settings)
        # a machine's cold start (measure's docstring) is paid once, before the first recipe
        warm_up = not report.recipes
        result = measure(w, cfg.bench_repeats, args.json.parent / "measurements" / recipe, warm_up)
        add_mfu(result, device)
        report = dataclasses.replace(report, recipes={**report.recipes, recipe: result})
        if recipe == "host_overhead":  # sentence-transformers' host time per step over tier1's
            report = dataclasses.replace(report, host_overhead_ratio=result["host_overhead_ratio"],
                                         host_overhead_ms_per_step=result["host_ms_per_step"])
        log.info("%s: training %.2fx, encoding %.2fx (tier1 / sentence-transformers)", recipe,
                 result["train_steps_ratio"], result["encode_texts_ratio"])
        # after each recipe, so a run cut short keeps what it measured
        report.write(args.json)
        atomic.write_text(args.md, markdown(report))


if __name__ == "__main__":
    run_main(main)
