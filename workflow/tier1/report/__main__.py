"""Stage 8, report: regenerate the performance table and plots from the stages' files.

    python -m tier1.report --config '{"internode_busbw_gbps": null}' --records RECORDS.json \
        --md PERFORMANCE.md --csv PERFORMANCE.csv --plots PLOTS/speedup.png ... --history HISTORY \
        --html INDEX.html --captions workflow/report

--records names every file the report reads (JSON text, or a file holding it), as the report rule
builds it from its named inputs:

    {"records": {"manifest": "MANIFEST.json", "tokens": "TOKENS.json", "train": {"1": "RECORD_1.json", ...},
                 "loss": {"1": ...}, ...},
     "jobs": {"train_gpus1": {"benchmark": "TRAIN_GPUS1.tsv", "windows": ["train:1"]}, ...}}

(the paths: tier1.layout, as the report rule passes them)

(tier1.report.collect.Inputs: the kinds and what each is read through).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from tier1.config import ReportConfig, Tier1Config
from tier1.report import html, plots, table
from tier1.report.collect import Inputs, collect
from tier1.runtime import atomic, provenance
from tier1.runtime.cli import CONFIG_HELP, parse_stage_config, run_main, setup_logging

log = logging.getLogger("tier1.report")


def build(inputs: Inputs, md: Path, csv: Path, plot_paths: list[Path], history: Path | None,
          html_path: Path | None = None, captions: Path | None = None) -> None:
    r = collect(inputs)
    for path in plot_paths:
        if path.stem not in plots.ALL:
            raise ValueError(f"no plot named {path.stem!r}; known: {', '.join(plots.ALL)}")
        plots.ALL[path.stem](r, path)
    csv_text, md_text = table.to_csv(r), table.to_markdown(r)
    atomic.write_text(csv, csv_text)
    atomic.write_text(md, md_text)
    html_text = None
    if html_path is not None:
        html_text = html.to_html(md_text, [html.Plot(p, html.caption_for(p, captions)) for p in plot_paths])
        atomic.write_text(html_path, html_text)
        log.info("wrote %s", html_path)
    if history is not None:
        # A rerun with another config replaces the report; the history keeps every report made.
        first = next(iter(r.train.values()))
        keep = history / f"{provenance.utc_now()[:19].replace(':', '')}_{first.run_config_hash or first.config_hash}"
        atomic.write_text(keep / csv.name, csv_text)
        atomic.write_text(keep / md.name, md_text)
        if html_path is not None:
            atomic.write_text(keep / html_path.name, html_text)
        log.info("wrote %s (copy in %s)", md, keep)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "--configfile", dest="config", default=None,
                        help=CONFIG_HELP + "; default: the defaults")
    parser.add_argument("--records", required=True,
                        help="the run's records by name: JSON text, or a JSON file (see above)")
    parser.add_argument("--md", type=Path, required=True, help="performance.md to write")
    parser.add_argument("--csv", type=Path, required=True, help="performance.csv to write")
    parser.add_argument("--plots", type=Path, nargs="*", default=[],
                        help=f"PNG files to draw, named after the plot ({', '.join(plots.ALL)})")
    parser.add_argument("--history", type=Path, default=None, help="folder that keeps a copy of every report")
    parser.add_argument("--html", type=Path, default=None,
                        help="index.html to write: the report as one self-contained page, plots embedded")
    parser.add_argument("--captions", type=Path, default=None,
                        help="folder of <plot>.rst captions for the HTML page (workflow/report)")
    args = parser.parse_args(argv)
    setup_logging()
    cfg: ReportConfig = (parse_stage_config(args.config, "report") if args.config
                         else Tier1Config().view(ReportConfig))
    text = args.records if args.records.lstrip().startswith("{") else Path(args.records).read_text()
    inputs = Inputs.from_json(json.loads(text), cfg.internode_busbw_gbps)
    build(inputs, args.md, args.csv, args.plots, args.history, args.html, args.captions)


if __name__ == "__main__":
    run_main(main)
