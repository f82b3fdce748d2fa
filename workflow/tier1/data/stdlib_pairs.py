"""The embedded offline datasets: code-search pairs mined from Python source on the machine.

Each pair is (docstring summary, function source with the docstring removed). The text is real
and already on every machine that runs Python, so the default run needs no network.

- "stdlib" (`extract`): the standard library alone, about 3,800 pairs.
- "python-source" (`extract_python_source`): the standard library plus the environment's
  site-packages (sysconfig's purelib and platlib), tens of thousands of pairs. It depends on what
  is installed, so `describe_python_source` fingerprints the installed distributions.
"""

from __future__ import annotations

import ast
import hashlib
import multiprocessing
import sys
import sysconfig
import textwrap
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from pathlib import Path

# Test suites and vendored or legacy trees are left out: their docstrings are mostly
# boilerplate ("Test that ...") that would make the retrieval task trivial or noisy.
EXCLUDED_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__"}
# Installed packages also ship test helpers, benchmarks and vendored copies of other packages
# (pip/_vendor, setuptools/_vendor, ...); a vendored copy would repeat another package's text.
SITE_EXCLUDED_DIRS = EXCLUDED_DIRS | {
    "testing", "benchmarks", "_vendor", "vendor", "_vendored", "vendored", "externals", "third_party",
}
MIN_SUMMARY_WORDS = 4
MIN_BODY_LINES = 3
# Ids of pairs from site-packages start with this, so they never collide with stdlib ids.
SITE_ID_PREFIX = "site:"
# Below this many files a process pool costs more than it saves.
MIN_FILES_FOR_POOL = 200


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def site_roots() -> list[Path]:
    """The environment's site-packages folders (purelib, then platlib when it differs)."""
    paths = sysconfig.get_paths()
    roots: list[Path] = []
    for key in ("purelib", "platlib"):
        root = Path(paths[key])
        if root.is_dir() and all(root.resolve() != r.resolve() for r in roots):
            roots.append(root)
    return roots


def is_test_file(name: str) -> bool:
    return name.startswith("test_") or name.endswith("_test.py") or name == "conftest.py"


def python_files(root: Path, excluded: set[str] = EXCLUDED_DIRS, skip_test_files: bool = False) -> list[Path]:
    files = []
    for path in root.rglob("*.py"):
        if excluded.isdisjoint(path.relative_to(root).parts[:-1]):
            if not (skip_test_files and is_test_file(path.name)):
                files.append(path)
    return sorted(files)


def summary_of(docstring: str) -> str:
    """The docstring's first paragraph, on one line."""
    first = docstring.strip().split("\n\n", 1)[0]
    return " ".join(first.split())


def source_without_docstring(lines: list[str], node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    doc = node.body[0]
    start, end = node.lineno - 1, node.end_lineno
    kept = lines[start: doc.lineno - 1] + lines[doc.end_lineno: end]
    return textwrap.dedent("\n".join(kept))


def pairs_from_file(path: Path, root: Path) -> Iterator[dict[str, str]]:
    try:
        text = path.read_text(encoding="utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(text)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return
    lines = text.splitlines()
    module = ".".join(path.relative_to(root).with_suffix("").parts)
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        docstring = ast.get_docstring(node)
        if not docstring or len(node.body) < 2:
            continue
        summary = summary_of(docstring)
        source = source_without_docstring(lines, node)
        if len(summary.split()) < MIN_SUMMARY_WORDS or len(source.splitlines()) < MIN_BODY_LINES:
            continue
        yield {
            "id": f"{module}:{node.lineno}:{node.name}",
            "anchor": summary,
            "positive": source,
        }


def extract(root: Path | None = None) -> list[dict[str, str]]:
    """All pairs from the standard library, deduplicated on both the summary and the source.

    A summary that describes two different functions (or the same function copied in two
    places) is ambiguous as a query, so every occurrence of a repeated text is dropped.
    """
    root = root or stdlib_root()
    pairs = [p for f in python_files(root) for p in pairs_from_file(f, root)]
    return drop_repeated(pairs)


def drop_repeated(pairs: list[dict[str, str]]) -> list[dict[str, str]]:
    from collections import Counter

    anchors = Counter(p["anchor"].lower() for p in pairs)
    sources = Counter(" ".join(p["positive"].split()) for p in pairs)
    return [
        p for p in pairs
        if anchors[p["anchor"].lower()] == 1 and sources[" ".join(p["positive"].split())] == 1
    ]


def describe() -> dict[str, str]:
    return {"source": "python-stdlib", "python_version": sys.version.split()[0], "root": str(stdlib_root())}


def _file_pairs(job: tuple[Path, Path, str]) -> list[dict[str, str]]:
    path, root, prefix = job
    try:
        return [{**p, "id": prefix + p["id"]} for p in pairs_from_file(path, root)]
    except (RecursionError, MemoryError):  # a generated file nested too deep for the parser
        return []


def pairs_from_files(jobs: list[tuple[Path, Path, str]], workers: int | None = None) -> list[dict[str, str]]:
    """The pairs of every (file, root, id prefix) job, in the jobs' order, on `workers` processes.

    None takes every available core, or one process for fewer than MIN_FILES_FOR_POOL files.
    """
    if workers is None:
        from tier1.runtime.provenance import available_cores

        workers = available_cores() if len(jobs) >= MIN_FILES_FOR_POOL else 1
    if workers <= 1:
        return [p for job in jobs for p in _file_pairs(job)]
    # fork where there is one: the children only parse text, and unlike spawn it does not need
    # the caller's script to guard its top level with `if __name__ == "__main__"`.
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method)) as pool:
        chunks = pool.map(_file_pairs, jobs, chunksize=max(1, len(jobs) // (workers * 16)))
        return [p for chunk in chunks for p in chunk]


def python_source_jobs(stdlib: Path, site: list[Path]) -> list[tuple[Path, Path, str]]:
    """The files "python-source" reads, in a fixed order: the standard library's, then each
    site-packages folder's (tests, benchmarks and vendored trees left out)."""
    jobs = [(f, stdlib, "") for f in python_files(stdlib)]
    for root in site:
        files = python_files(root, SITE_EXCLUDED_DIRS, skip_test_files=True)
        jobs.extend((f, root, SITE_ID_PREFIX) for f in files)
    return jobs


def extract_python_source(stdlib: Path | None = None, site: list[Path] | None = None,
                          workers: int | None = None) -> list[dict[str, str]]:
    """Pairs from the standard library and the environment's site-packages, with the stdlib
    rule: a summary or a source that occurs twice anywhere is dropped everywhere.

    Stdlib pairs keep the ids "stdlib" gives them; site-packages ids start with SITE_ID_PREFIX.
    Where two site-packages folders hold the same module, a function found at the same place in
    both is taken from the first folder only (the copy import would find).
    """
    stdlib = stdlib or stdlib_root()
    site = site_roots() if site is None else site
    pairs, seen = [], set()
    for p in pairs_from_files(python_source_jobs(stdlib, site), workers):
        if p["id"] not in seen:
            seen.add(p["id"])
            pairs.append(p)
    return drop_repeated(pairs)


def installed_distributions(roots: list[Path]) -> list[str]:
    """"name==version" of every distribution installed in `roots`, sorted."""
    found = {f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions(path=[str(r) for r in roots])}
    return sorted(found, key=str.lower)


def describe_python_source(site: list[Path] | None = None) -> dict[str, str]:
    site = site_roots() if site is None else site
    dists = installed_distributions(site)
    return {
        "source": "python-source",
        "python_version": sys.version.split()[0],
        "root": str(stdlib_root()),
        "site_packages": ", ".join(str(r) for r in site),
        "distributions": str(len(dists)),
        # The pairs depend on what is installed; equal fingerprints mean the same packages.
        "distributions_sha256": hashlib.sha256("\n".join(dists).encode()).hexdigest()[:16],
    }
