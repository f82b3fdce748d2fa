"""Stage 5, report: regenerate the performance table and plots from the stages' files.

    python -m tier1.report --results results --world-sizes 1 2 4 --eval-world-sizes 1 2 4
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from tier1 import atomic
from tier1.cli_common import run_main, setup_logging
from tier1.report import plots, table
from tier1.report.collect import collect

log = logging.getLogger("tier1.report")


def build(results: Path, world_sizes: list[int], eval_world_sizes: list[int], out: Path) -> None:
    r = collect(results, world_sizes, eval_world_sizes)
    for name, draw in plots.ALL.items():
        draw(r, out / "plots" / f"{name}.png")
    atomic.write_text(out / "performance.csv", table.to_csv(r))
    atomic.write_text(out / "performance.md", table.to_markdown(r))
    log.info("wrote %s", out / "performance.md")


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
