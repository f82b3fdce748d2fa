"""Two or more named runs side by side: their verdicts and headline numbers, and where they differ
in hardware, configuration, libraries and data.

    python -m tier1.tools.compare_runs default quick          # or: tier1 compare default quick
    python -m tier1.tools.compare_runs default quick --results RESULTS --out FILE.md

Reads only what each run wrote in its folder (tier1.layout: the report, the manifest, the 1-rank
training record, and the records the report names as its times' sources, all through their record
classes); no torch. Writes the comparison as markdown and, beside it, as JSON (the same name, .json):
a time its run marked as not measured cleanly carries its marks, short in the markdown ("98.04 s ⚠
disturbed"), whole in the JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

from tier1 import layout
from tier1.config import InputError
from tier1.measure.disturbance import mark_kind
from tier1.records import EvaluationRecord, ManifestRecord, TrainRecord
from tier1.records.base import RecordError
from tier1.runtime import atomic

# A CPU run's report names its time ratios `*_time_ratio` (ranks sharing cores give no speedup).
# The workloads are read from the stages' records, beside the times they explain.
HEADLINE = ("training_workload", "training_time", "training_throughput", "training_speedup", "training_time_ratio",
            "evaluation_workload", "evaluation_time", "evaluation_speedup", "evaluation_time_ratio",
            "trained_ndcg@10", "base_ndcg@10", "peak_memory_per_device")
# the timed stages: each one's rows carry the marks of the record its time was read from
TIMED = {"training": ("training_time", TrainRecord), "evaluation": ("evaluation_time", EvaluationRecord)}
# a ratio of the 1-rank time to the N-rank one: 1 at 1 rank by construction, so not shown there; the
# 1-rank time's marks are its own too
RATIOS = ("training_speedup", "training_time_ratio", "evaluation_speedup", "evaluation_time_ratio")
BASELINE = "1-rank run: "
WORKLOAD_WORDS = {"pairs_trained": "pairs trained", "steps": "steps", "global_batch": "global batch",
                  "max_seq_length": "max_seq_length", "queries": "queries", "documents": "documents"}
VERDICT = re.compile(r"^- \*\*(?P<name>[^:*]+): (?P<verdict>[^*]+)\*\*")


def load_run(results: Path, name: str) -> dict:
    run = layout.Run(name, results)
    md, table = run.path(layout.REPORT_MD), run.path(layout.REPORT_CSV)
    if not md.is_file() or not table.is_file():
        runs = layout.finished_runs(results)
        raise InputError(f"run {name!r}: no finished report in {md.parent}/; runs with one: {', '.join(runs) or 'none'}")
    verdicts = {m["name"].strip(): m["verdict"].strip() for line in md.read_text().splitlines() if (m := VERDICT.match(line))}
    rows = {(r["metric"], r["world_size"]): r for r in csv.DictReader(table.open())}
    manifest = ManifestRecord.read(run.path(layout.MANIFEST))
    train = TrainRecord.read(run.path(layout.train_record(layout.trained_on(1))))
    stages = {(stage, ws): _source_record(run, row["source"], kind)
              for stage, (metric, kind) in TIMED.items() for (m, ws), row in rows.items() if m == metric}
    return {"name": name, "verdicts": verdicts, "rows": rows, "cells": cells(rows, stages),
            "config": {**manifest.config, **train.config},
            "hardware": train.hardware, "libraries": train.libraries,
            "data": {"dataset": json.dumps(manifest.dataset, sort_keys=True),
                     **{f"sha256 {k}": v[:16] for k, v in manifest.content_sha256.items()},
                     **{f"count {k}": v for k, v in manifest.counts.items()}},
            "run_config_hash": train.run_config_hash}


def _source_record(run: layout.Run, source: str, kind: type) -> dict:
    """The record a report's `source` names, found in the run's folder as it lies now (the report
    names it under the results folder it was written in), and its marks. A record of another
    schema (an older run's) still says what marked it: its own `marks`, as written. Where none can
    be read, a mark saying so: a time whose record is not read is not known to be clean."""
    parts = Path(source).parts
    found = next((path for i in range(len(parts)) if (path := run.folder.joinpath(*parts[i:])).is_file()), None)
    if found is None:
        return {"record": None, "marks": [f"unchecked: its record {source} is not in {run.folder}/, "
                                          "so whether it is clean is unknown"]}
    try:
        rec = kind.read(found)
        return {"record": rec, "marks": list(rec.marks)}
    except RecordError as err:
        marks = _written_marks(found)
        return {"record": None, "marks": marks if marks is not None else [f"unchecked: its record could not be read ({err})"]}


def _written_marks(path: Path) -> list[str] | None:
    try:
        marks = json.loads(path.read_text()).get("marks")
    except (ValueError, AttributeError):
        return None
    return marks if isinstance(marks, list) and all(isinstance(m, str) for m in marks) else None


def _marks(stages: dict, metric: str, ws: str) -> list[str]:
    """Why a timed stage's number is not clean, whole: its record's marks (for a ratio, the 1-rank
    record's too, after BASELINE); none for a number that is not a time's."""
    stage = metric.split("_")[0]
    if stage not in TIMED:
        return []
    wheres = [(ws, "")] + ([("1", BASELINE)] if metric in RATIOS else [])
    return [prefix + m for where, prefix in wheres for m in stages.get((stage, where), {}).get("marks", [])]


def _kind(mark: str) -> str:
    """A mark's short form: its kind (tier1.measure.disturbance.mark_kind); a ratio's 1-rank mark
    as "1-rank disturbed"."""
    if mark.startswith(BASELINE):
        return "1-rank " + mark_kind(mark[len(BASELINE):])
    return mark_kind(mark)


def _cell(text: str, value, unit: str, marks: list[str]) -> dict:
    kinds = ", ".join(dict.fromkeys(_kind(m) for m in marks))
    return {"value": value, "unit": unit, "text": f"{text} ⚠ {kinds}" if marks else text, "marks": marks}


def _number(value: str):
    try:
        return float(value)
    except ValueError:
        return value or None


def workload(stage: str, rec: TrainRecord | EvaluationRecord) -> dict:
    """The work a timed stage did: what its time is the time of."""
    if stage == "training":  # the timed steps: after a resume, only those after it
        return {"pairs_trained": rec.samples_total, "steps": rec.steps - (rec.resumed_from_step or 0),
                "global_batch": rec.objective.get("global_batch"), "max_seq_length": rec.objective.get("max_seq_length")}
    return {"queries": rec.queries, "documents": rec.documents, "max_seq_length": rec.max_seq_length}


def _workload_text(w: dict) -> str:
    if "pairs_trained" in w:
        return (f"{w['pairs_trained']} pairs in {w['steps']} steps of {w['global_batch']}, "
                f"max_seq_length {w['max_seq_length']}")
    return f"{w['queries']} queries, {w['documents']} documents, max_seq_length {w['max_seq_length']}"


def cells(rows: dict, stages: dict) -> dict[tuple[str, str], dict]:
    """The headline cells of one run, by (metric, world size): the report's value as it writes it,
    the number and unit, and the marks of the record it was measured in; the stages' workloads."""
    out = {}
    for (metric, ws), row in rows.items():
        if metric in HEADLINE and not (metric in RATIOS and ws == "1"):
            out[(metric, ws)] = _cell(_value(row), _number(row["value"]), row["unit"], _marks(stages, metric, ws))
    for (stage, ws), source in stages.items():
        if source["record"] is not None:
            w = workload(stage, source["record"])
            out[(f"{stage}_workload", ws)] = _cell(_workload_text(w), w, "", [])
    return out


def _value(row: dict | None) -> str:
    """A report CSV cell as the report writes it: "n/a" where it has no value, bytes in GB."""
    if row is None:
        return "—"
    if not row["value"]:
        return "n/a"
    try:
        value = float(row["value"])
    except ValueError:
        return row["value"]
    if row["unit"] == "bytes":
        return f"{value / 1e9:.3g} GB"
    return f"{value:.4g} {row['unit']}".strip()


def differences(runs: list[dict], part: str) -> list[str]:
    keys = sorted({k for r in runs for k in r[part]})
    lines = []
    for key in keys:
        values = [r[part].get(key) for r in runs]
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) > 1:
            lines.append(f"| {part}: {key} | " + " | ".join("—" if v is None else str(v) for v in values) + " |")
    return lines


def headline_keys(runs: list[dict]) -> list[tuple[str, str]]:
    keys = dict.fromkeys(k for r in runs for k in r["cells"])
    return sorted(keys, key=lambda k: (HEADLINE.index(k[0]), int(k[1] or 0)))


def workload_differences(runs: list[dict]) -> list[str]:
    """How the runs' workloads differ, per timed stage, at the first world size where they do
    (of those every run has): "training at 1 rank(s): pairs trained default 512, mine 192"."""
    out = []
    for stage in TIMED:
        for metric, ws in [k for k in headline_keys(runs) if k[0] == f"{stage}_workload"]:
            values = [r["cells"].get((metric, ws)) for r in runs]
            if None in values:
                continue
            fields = [f"{WORKLOAD_WORDS.get(k, k)} " + ", ".join(f"{r['name']} {v['value'][k]}" for r, v in zip(runs, values))
                      for k in values[0]["value"] if len({json.dumps(v["value"].get(k)) for v in values}) > 1]
            if fields:
                out.append(f"{stage} at {ws} rank(s): {'; '.join(fields)}")
                break
    return out


def to_markdown(runs: list[dict]) -> str:
    names = [r["name"] for r in runs]
    head = "| | " + " | ".join(names) + " |\n|---|" + "---|" * len(runs)
    out = [f"# Runs compared: {', '.join(names)}", "", "## Verdicts", "", head]
    for verdict in dict.fromkeys(v for r in runs for v in r["verdicts"]):
        out.append(f"| {verdict} | " + " | ".join(r["verdicts"].get(verdict, "—") for r in runs) + " |")
    out += ["", "## Headline numbers", ""]
    unlike = workload_differences(runs)
    if unlike:
        out += ["**The runs did different work: their times and throughputs are not of the same work.** "
                + ". ".join(x[0].upper() + x[1:] for x in unlike) + ". The workload rows give each world size.", ""]
    out += ["| metric (world size) | " + " | ".join(names) + " |", "|---|" + "---|" * len(runs)]
    keys = headline_keys(runs)
    for metric, ws in keys:
        out.append(f"| {metric} ({ws}) | " + " | ".join(r["cells"].get((metric, ws), {"text": "—"})["text"]
                                                        for r in runs) + " |")
    marked = any(c["marks"] for r in runs for c in r["cells"].values())
    if marked:
        out += ["", "⚠: a number its run marked as not measured cleanly, or whose record could not be read "
                "(unchecked); \"1-rank ...\": a ratio's 1-rank time. The JSON beside this file gives each mark whole."]
    diff = [line for part in ("hardware", "libraries", "data", "config") for line in differences(runs, part)]
    out += ["", "## Where they differ", ""]
    if diff:
        out += [head, *diff]
    else:
        out.append("Same hardware, libraries, data and configuration: differences above are run-to-run noise"
                   + (" or what the ⚠ marks name." if marked else "."))
    out += ["", "Run config hashes: " + ", ".join(f"{r['name']} {r['run_config_hash'] or 'n/a'}" for r in runs), ""]
    return "\n".join(out)


def to_json(runs: list[dict]) -> dict:
    """The comparison as data: every headline cell with its number, unit and marks whole."""
    return {"runs": [r["name"] for r in runs],
            "verdicts": {v: {r["name"]: r["verdicts"].get(v) for r in runs}
                         for v in dict.fromkeys(v for r in runs for v in r["verdicts"])},
            "workloads_differ": workload_differences(runs),
            "headline": [{"metric": metric, "world_size": int(ws) if ws else None, "runs": {r["name"]: r["cells"].get((metric, ws))
                                                                            for r in runs}}
                         for metric, ws in headline_keys(runs)],
            "run_config_hashes": {r["name"]: r["run_config_hash"] for r in runs}}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run names (folders under --results)")
    parser.add_argument("--results", type=Path, default=Path(layout.RESULTS))
    parser.add_argument("--out", type=Path, default=None, help=f"default: {layout.comparison(['<a>', '<b>'])}")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("name two runs or more")
    if args.out and args.out.suffix == ".json":
        parser.error("--out names the markdown file; its .json is written beside it")
    runs = [load_run(args.results, name) for name in args.runs]
    text = to_markdown(runs)
    out = args.out or layout.comparison(args.runs, args.results)
    atomic.write_text(out, text)
    atomic.write_json(out.with_suffix(".json"), to_json(runs))
    print(text)
    print(f"(written to {out} and {out.with_suffix('.json')})")


if __name__ == "__main__":
    from tier1.runtime.cli import run_main

    run_main(main)
