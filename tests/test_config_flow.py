"""The run config stays near the training stage's entry: followed from `tier1.stages.train.train`
through the calls that pass it on (tests/config_flow.py), it enters at most 8 files; callees
further down get the values they need."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import config_flow  # noqa: E402

PACKAGE = Path(__file__).resolve().parents[1] / "workflow" / "tier1"


def test_the_run_config_enters_at_most_eight_files():
    files = config_flow.flow(PACKAGE).files
    assert "tier1/stages/train.py" in files and "tier1/training/builder.py" in files  # it does follow the calls
    assert len(files) <= 8, files


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


def test_the_count_follows_passing_not_values(tmp_path):
    """A config passed whole is followed through a function, a class that keeps it and a method
    that reads it back; a callee handed one field is not counted."""
    root = tmp_path / "tier1"
    write(root, "__init__.py", "")
    write(root, "config.py", "class TrainConfig:\n    seed = 1\n")
    write(root, "stages/__init__.py", "")
    write(root, "stages/train.py", """
        from tier1.config import TrainConfig
        from tier1.a import helper
        from tier1 import c

        def train(cfg: TrainConfig, ctx):
            helper(cfg)
            c.seeded(cfg.seed)
    """)
    write(root, "a.py", """
        from tier1.b import Keeper

        def helper(run_config):
            keeper = Keeper(run_config)
            keeper.use()
    """)
    write(root, "b.py", """
        class Keeper:
            def __init__(self, cfg):
                self.cfg = cfg

            def use(self):
                return self.cfg.seed
    """)
    write(root, "c.py", "def seeded(seed):\n    return seed\n")
    found = config_flow.flow(root)
    assert found.files == ["tier1/a.py", "tier1/b.py", "tier1/stages/train.py"]
    assert "tier1.c" in found.modules_called  # called, with a value only
    assert set(found.moves) == {("tier1.stages.train", "tier1.a"), ("tier1.a", "tier1.b")}
