"""Stage 8, report: regenerate the performance table and plots from the stages' files.

    python -m tier1.report --config '{"internode_busbw_gbps": null}' --manifest results/data/manifest.json \\
        --tokenize results/data/tokens.json \\
        --train results/train/gpus{1,2,4}/train_metrics.json --loss results/train/gpus{1,2,4}/loss.csv \\
        --eval-base results/eval/base/ws{1,2,4}/metrics.json \\
        --eval-trained results/eval/gpus1/ws1/metrics.json ... --probe results/probe/gpus{1,2,4}.json \\
        --preflight results/preflight.json --comm results/comm/ws{2,4}.json \\
        --benchmarks results/benchmarks/{prepare,tokenize,train_gpus1,...}.tsv \\
        --reference-train results/train/reference_gpus1/train_metrics.json \\
        --md results/report/performance.md --csv results/report/performance.csv \\
        --plots results/report/plots/{speedup,throughput,...}.png --history results/history \\
        --html results/report/index.html --captions workflow/report
"""

from __future__ import annotations

import argparse
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
        keep = history / f"{provenance.utc_now()[:19].replace(':', '')}_{first['config_hash']}"
        atomic.write_text(keep / csv.name, csv_text)
        atomic.write_text(keep / md.name, md_text)
        if html_path is not None:
            atomic.write_text(keep / html_path.name, html_text)
        log.info("wrote %s (copy in %s)", md, keep)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", "--configfile", dest="config", default=None,
                        help=CONFIG_HELP + "; default: the defaults")
    parser.add_argument("--manifest", type=Path, required=True, help="the prepare stage's manifest.json")
    parser.add_argument("--tokenize", type=Path, default=None,
                        help="the tokenize stage's tokens.json (its work window, for the pipeline overhead)")
    parser.add_argument("--train", type=Path, nargs="+", required=True, help="train_metrics.json files")
    parser.add_argument("--loss", type=Path, nargs="+", required=True, help="loss.csv files, in --train's order")
    parser.add_argument("--eval-base", type=Path, nargs="+", required=True, help="the base model's metrics.json files")
    parser.add_argument("--eval-trained", type=Path, nargs="+", required=True,
                        help="each trained model's metrics.json")
    parser.add_argument("--probe", type=Path, nargs="*", default=[], help="probe JSON files")
    parser.add_argument("--reference-loss", type=Path, nargs="?", default=None,
                        help="loss.csv of the 1-rank run with other dropout masks (the same-model yardstick)")
    parser.add_argument("--preflight", type=Path, default=None, help="the preflight stage's preflight.json")
    parser.add_argument("--comm", type=Path, nargs="*", default=[],
                        help="the commbench stage's files, one per world size above 1")
    parser.add_argument("--benchmarks", type=Path, nargs="*", default=[],
                        help="Snakemake benchmark files of the run's jobs (<job>.tsv), for the pipeline overhead")
    parser.add_argument("--reference-train", type=Path, nargs="?", default=None,
                        help="train_metrics.json of the 1-rank run with other dropout masks (its timed window, "
                             "for the pipeline overhead)")
    parser.add_argument("--rank-compute", type=Path, nargs="?", default=None,
                        help="rank_compute.json: one rank's compute at each world size's share of the batch")
    parser.add_argument("--sweep", type=Path, nargs="*", default=[],
                        help="the batch sweep's records (sweep/b{B}/gpus{N}.json)")
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
    inputs = Inputs(args.manifest, args.train, args.loss, args.eval_base, args.eval_trained, args.probe,
                    args.reference_loss, args.preflight, args.comm, cfg.internode_busbw_gbps,
                    args.benchmarks, args.reference_train, args.tokenize, args.rank_compute, args.sweep)
    build(inputs, args.md, args.csv, args.plots, args.history, args.html, args.captions)


if __name__ == "__main__":
    run_main(main)
