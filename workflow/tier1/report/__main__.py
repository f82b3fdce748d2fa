"""Stage 5, report: regenerate the performance table and plots from the stages' files.

    python -m tier1.report --results results --world-sizes 1 2 4 --eval-world-sizes 1 2 4
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tier1 import atomic, provenance
from tier1.cli_common import run_main, setup_logging
from tier1.report import plots, table
from tier1.report.collect import collect

log = logging.getLogger("tier1.report")


def build(results: Path, world_sizes: list[int], eval_world_sizes: list[int], out: Path) -> None:
    r = collect(results, world_sizes, eval_world_sizes)
    for name, draw in plots.ALL.items():
        draw(r, out / "plots" / f"{name}.png")
    csv_text, md_text = table.to_csv(r), table.to_markdown(r)
    atomic.write_text(out / "performance.csv", csv_text)
    atomic.write_text(out / "performance.md", md_text)
    # A rerun with another config replaces results/report; the history keeps every report made.
    first = next(iter(r.train.values()))
    keep = results / "history" / f"{provenance.utc_now()[:19].replace(':', '')}_{first['config_hash']}"
    atomic.write_text(keep / "performance.csv", csv_text)
    atomic.write_text(keep / "performance.md", md_text)
    log.info("wrote %s (copy in %s)", out / "performance.md", keep)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--world-sizes", type=int, nargs="+", required=True)
    parser.add_argument("--eval-world-sizes", type=int, nargs="+", required=True)
    parser.add_argument("--out", type=Path, default=Path("results/report"))
    args = parser.parse_args(argv)
    setup_logging()
    build(args.results, args.world_sizes, args.eval_world_sizes, args.out)


if __name__ == "__main__":
    run_main(main)
