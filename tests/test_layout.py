"""The results layout is spelled in one place: tier1.layout (and the rules that name their outputs
through it). Everything else (the package, the scripts, the tests' helpers, the Makefile) finds a
run's files through tier1.layout, so moving a file is a change to one module."""

from __future__ import annotations

import re
from pathlib import Path

from tier1 import layout

from helpers import REPO

# Fragments only a results path has: the results folder, a run folder's subfolders and the files
# in them, and the wildcard forms of the rules.
RESULTS_PATH = re.compile("|".join([
    r"\bresults/", r"['\"]results['\"]", r"train_metrics\.json", r"/gpus\{", r"/ws\{", r"\bbenchmarks/",
    r"\bdata/(train|test|manifest|tokens)",
    r"\btokens\.safetensors", r"\btrain/(gpus|reference|rank_compute)", r"\beval/(base|gpus)", r"\bprobe/gpus",
    r"\bcomm/ws", r"\bsweep/b", r"\breport/(performance|index|plots)", r"\bcheck_gpus/", r"\bbench/compare",
    r"\blogs/\w+\.log", r"/checkpoints\b",
]))
# Where the layout may be spelled: the module itself and the rules.
ALLOWED = {REPO / "workflow" / "tier1" / "layout.py"}
TEST_HELPERS = ["conftest.py", "helpers.py", "workflow_runs.py", "ddp_runs.py", "eval_runs.py"]


def searched_files() -> list[Path]:
    files = sorted((REPO / "workflow" / "tier1").rglob("*.py"))
    files += sorted(p for p in (REPO / "scripts").iterdir() if p.is_file())
    files += [REPO / "tests" / name for name in TEST_HELPERS] + [REPO / "Makefile"]
    return [f for f in files if f.exists() and f not in ALLOWED]


def test_no_results_path_is_spelled_outside_the_layout_module():
    found = [f"{path.relative_to(REPO)}:{number}: {line.strip()}"
             for path in searched_files() for number, line in enumerate(path.read_text().splitlines(), 1)
             if RESULTS_PATH.search(line)]
    assert not found, "results paths spelled outside tier1.layout:\n" + "\n".join(found)


def test_the_search_would_find_a_spelled_path():
    for line in ['Path("results") / name', 'folder / "train_metrics.json"', '"eval/gpus{w}/ws{w}/metrics.json"',
                 "f'{RUN}/comm/ws{n}.json'", '"$WORK/data/train.jsonl"', "results/default/logs/train_gpus1.log"]:
        assert RESULTS_PATH.search(line), line
    assert RESULTS_PATH.search(Path(layout.__file__).read_text())  # and the module is where they are


def test_rules_name_their_paths_through_the_layout():
    """The rules join the layout's names to the run folder; none writes a path of its own."""
    rules = "\n".join(p.read_text() for p in sorted((REPO / "workflow" / "rules").glob("*.smk")))
    assert not re.findall(r'\bout\(f?"', rules)


def test_layout_paths():
    assert layout.run_folder("quick") == "results/quick"
    assert layout.train_record(layout.trained_on(2)) == "train/gpus2/train_metrics.json"
    assert layout.train_record() == "train/gpus{n}/train_metrics.json"  # the rules' wildcard form
    assert layout.eval_metrics(layout.BASE, 4) == "eval/base/ws4/metrics.json"
    assert layout.eval_metrics() == "eval/gpus{w}/ws{w}/metrics.json"
    assert layout.sweep(128, 2) == "sweep/b128/gpus2.json"
    run = layout.Run("quick", Path("/r"))
    assert run.path(layout.MANIFEST) == Path("/r/quick/data/manifest.json")
    assert layout.checkpoints_beside(run.path(layout.train_record("gpus1"))) == Path("/r/quick/train/gpus1/checkpoints")
