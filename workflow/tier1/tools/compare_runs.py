"""Two or more named runs side by side: their verdicts and headline numbers, and where they differ
in hardware, configuration, libraries and data.

    python -m tier1.tools.compare_runs default quick          # or: tier1 compare default quick
    python -m tier1.tools.compare_runs default quick --results RESULTS --out FILE.md

Reads only what each run wrote in its folder (tier1.layout: the report, the manifest, the 1-rank
training record, these two through their record classes); no torch.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

from tier1 import layout
from tier1.config import InputError
from tier1.records import ManifestRecord, TrainRecord
from tier1.runtime import atomic

# A CPU run's report names its time ratios `*_time_ratio` (ranks sharing cores give no speedup)
HEADLINE = ("training_time", "training_throughput", "training_speedup", "training_time_ratio", "evaluation_time",
            "evaluation_speedup", "evaluation_time_ratio", "trained_ndcg@10", "base_ndcg@10", "peak_memory_per_device")
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
    return {"name": name, "verdicts": verdicts, "rows": rows, "config": {**manifest.config, **train.config},
            "hardware": train.hardware, "libraries": train.libraries,
            "data": {"dataset": json.dumps(manifest.dataset, sort_keys=True),
                     **{f"sha256 {k}": v[:16] for k, v in manifest.content_sha256.items()},
                     **{f"count {k}": v for k, v in manifest.counts.items()}},
            "run_config_hash": train.run_config_hash}


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


def to_markdown(runs: list[dict]) -> str:
    names = [r["name"] for r in runs]
    head = "| | " + " | ".join(names) + " |\n|---|" + "---|" * len(runs)
    out = [f"# Runs compared: {', '.join(names)}", "", "## Verdicts", "", head]
    for verdict in dict.fromkeys(v for r in runs for v in r["verdicts"]):
        out.append(f"| {verdict} | " + " | ".join(r["verdicts"].get(verdict, "—") for r in runs) + " |")
    out += ["", "## Headline numbers", "", "| metric (world size) | " + " | ".join(names) + " |",
            "|---|" + "---|" * len(runs)]
    keys = [k for k in dict.fromkeys(k for r in runs for k in r["rows"]) if k[0] in HEADLINE]
    for metric, ws in sorted(keys, key=lambda k: (HEADLINE.index(k[0]), int(k[1] or 0))):
        out.append(f"| {metric} ({ws}) | " + " | ".join(_value(r["rows"].get((metric, ws))) for r in runs) + " |")
    diff = [line for part in ("hardware", "libraries", "data", "config") for line in differences(runs, part)]
    out += ["", "## Where they differ", ""]
    if diff:
        out += [head, *diff]
    else:
        out.append("Same hardware, libraries, data and configuration: differences above are run-to-run noise.")
    out += ["", "Run config hashes: " + ", ".join(f"{r['name']} {r['run_config_hash'] or 'n/a'}" for r in runs), ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run names (folders under --results)")
    parser.add_argument("--results", type=Path, default=Path(layout.RESULTS))
    parser.add_argument("--out", type=Path, default=None, help=f"default: {layout.comparison(['<a>', '<b>'])}")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        parser.error("name two runs or more")
    runs = [load_run(args.results, name) for name in args.runs]
    text = to_markdown(runs)
    out = args.out or layout.comparison(args.runs, args.results)
    atomic.write_text(out, text)
    print(text)
    print(f"(written to {out})")


if __name__ == "__main__":
    from tier1.runtime.cli import run_main

    run_main(main)
