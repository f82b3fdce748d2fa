"""The "python-source" dataset: the standard library plus site-packages, on a small fake tree."""

from __future__ import annotations

import textwrap
from pathlib import Path

from tier1.data import sources, stdlib_pairs


def function(name: str, summary: str, body: str = "x = 1\n    y = x + 1\n    return y") -> str:
    return f'def {name}(a, b):\n    """{summary}\n\n    More words.\n    """\n    {body}\n'


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def fake_install(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A tiny standard library and one site-packages folder holding what extraction must skip."""
    lib, site = tmp_path / "lib", tmp_path / "site-packages"
    write(lib / "shutil2.py", function("copy_tree", "Copy every file below a folder into another."))
    write(lib / "test" / "test_shutil2.py", function("check_copy", "Check that copying a tree works."))
    write(site / "pkg" / "__init__.py", function("load_table", "Read a table from a text file.",
                                                 "rows = open(a).read()\n    out = rows.split()\n    return out"))
    write(site / "pkg" / "core.py", function("merge_frames", "Join two frames on their shared keys.",
                                             "k = set(a) & set(b)\n    m = {x: a[x] for x in k}\n    return m")
          + function("frame_size", "Count the rows and columns of a frame.",
                     "n = len(a)\n    m = len(b)\n    return n, m"))
    # Left out: tests, vendored copies, benchmarks, test modules outside tests folders, and
    # installed metadata.
    write(site / "pkg" / "tests" / "test_core.py", function("t1", "Merging two frames keeps all keys."))
    write(site / "pkg" / "_vendor" / "six.py", function("v1", "Vendored helper that nobody should see."))
    write(site / "pkg" / "benchmarks" / "bench.py", function("b1", "Time how long a merge of frames takes."))
    write(site / "pkg" / "test_helpers.py", function("h1", "A helper module named like a test file."))
    write(site / "other" / "dup.py", function("copy_tree", "Copy every file below a folder into another."))
    write(site / "broken.py", "def nope(:\n")
    write(site / "pkg-1.0.dist-info" / "METADATA", "Metadata-Version: 2.1\nName: pkg\nVersion: 1.0\n")
    return lib, [site]


def test_python_source_adds_site_packages_and_skips_tests_and_vendored_trees(tmp_path):
    lib, site = fake_install(tmp_path)
    pairs = stdlib_pairs.extract_python_source(lib, site, workers=1)
    assert [p["id"] for p in pairs] == [
        "site:pkg.__init__:1:load_table",
        "site:pkg.core:1:merge_frames",
        "site:pkg.core:9:frame_size",
    ]
    # copy_tree occurs in the stdlib and, copied, in site-packages: ambiguous, so both are dropped,
    # exactly as "stdlib" drops a text that occurs twice.
    assert not any("copy_tree" in p["id"] for p in pairs)
    assert pairs[1]["anchor"] == "Join two frames on their shared keys."
    assert pairs[1]["positive"].startswith("def merge_frames(a, b):\n    k = set(a)")


def test_stdlib_ids_are_kept_and_site_ids_cannot_collide(tmp_path):
    lib, site = fake_install(tmp_path)
    (site[0] / "other" / "dup.py").unlink()
    pairs = stdlib_pairs.extract_python_source(lib, site, workers=1)
    stdlib_ids = [p["id"] for p in stdlib_pairs.extract(lib)]
    assert stdlib_ids == ["shutil2:1:copy_tree"]
    assert [p["id"] for p in pairs][:1] == stdlib_ids
    assert all(p["id"].startswith(stdlib_pairs.SITE_ID_PREFIX) for p in pairs[1:])


def test_the_same_module_in_two_site_folders_counts_once(tmp_path):
    lib, site = fake_install(tmp_path)
    platlib = tmp_path / "platlib"
    write(platlib / "pkg" / "core.py", (site[0] / "pkg" / "core.py").read_text())
    once = stdlib_pairs.extract_python_source(lib, site, workers=1)
    assert stdlib_pairs.extract_python_source(lib, [*site, platlib], workers=1) == once


def test_order_is_fixed_and_a_process_pool_changes_nothing(tmp_path):
    lib, site = fake_install(tmp_path)
    serial = stdlib_pairs.extract_python_source(lib, site, workers=1)
    assert stdlib_pairs.extract_python_source(lib, site, workers=2) == serial


def test_dataset_spec_and_description(tmp_path, monkeypatch):
    lib, site = fake_install(tmp_path)
    monkeypatch.setattr(stdlib_pairs, "stdlib_root", lambda: lib)
    monkeypatch.setattr(stdlib_pairs, "site_roots", lambda: site)
    source = sources.load("python-source")
    assert len(source.pairs) == 3 and source.beir_test is None
    d = source.description
    assert d["source"] == "python-source" and d["site_packages"] == str(site[0])
    assert d["distributions"] == "1" and len(d["distributions_sha256"]) == 16


def test_site_roots_are_existing_and_distinct():
    roots = stdlib_pairs.site_roots()
    assert all(r.is_dir() for r in roots)
    assert len({r.resolve() for r in roots}) == len(roots)


def test_the_report_names_each_embedded_dataset_as_the_config_does(tmp_path, monkeypatch):
    from tier1.report.table import dataset_name

    lib, site = fake_install(tmp_path)
    monkeypatch.setattr(stdlib_pairs, "stdlib_root", lambda: lib)
    monkeypatch.setattr(stdlib_pairs, "site_roots", lambda: site)
    for spec in ("stdlib", "python-source"):
        assert dataset_name(sources.load(spec).description).startswith(f"{spec}: docstring -> function pairs from `{lib}`")
