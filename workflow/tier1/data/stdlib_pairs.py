"""The embedded offline dataset: code-search pairs mined from the Python standard library.

Each pair is (docstring summary, function source with the docstring removed). The text is real
and already on every machine that runs Python, so the default run needs no network.
"""

from __future__ import annotations

import ast
import sys
import sysconfig
import textwrap
import warnings
from collections.abc import Iterator
from pathlib import Path

# Test suites and vendored or legacy trees are left out: their docstrings are mostly
# boilerplate ("Test that ...") that would make the retrieval task trivial or noisy.
EXCLUDED_DIRS = {"test", "tests", "idlelib", "lib2to3", "site-packages", "dist-packages", "__pycache__"}
MIN_SUMMARY_WORDS = 4
MIN_BODY_LINES = 3


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def python_files(root: Path) -> list[Path]:
    files = []
    for path in root.rglob("*.py"):
        if EXCLUDED_DIRS.isdisjoint(path.relative_to(root).parts[:-1]):
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
