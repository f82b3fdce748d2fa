"""Small pieces every command-line entry point shares."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from tier1.config import STAGE_VIEWS, ConfigError, InputError, Tier1Config, from_command_line, parse_stage_json


def setup_logging() -> None:
    rank = os.environ.get("RANK", "0")
    fmt = "%(asctime)s %(levelname)s %(name)s" + (f" [rank {rank}]" if "RANK" in os.environ else "")
    logging.basicConfig(level=logging.INFO, format=fmt + ": %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)


def progress(total: int, desc: str, enabled: bool = True):
    """A tqdm bar on a terminal; in a log file, plain lines at most every 15 s (no \r clutter)."""
    from tqdm import tqdm

    if sys.stderr.isatty():
        return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stderr, dynamic_ncols=True)
    return tqdm(total=total, desc=desc, disable=not enabled, file=_LineWriter(), mininterval=15,
                ascii=True, ncols=100)


class _LineWriter:
    """tqdm output target that turns each refresh into one log line."""

    def write(self, text: str) -> None:
        text = text.strip("\r\n ")
        if text:
            print(text, file=sys.stderr, flush=True)

    def flush(self) -> None:
        pass


def quiet_transformers() -> None:
    """Drop the library's own per-load progress bars and notices; tier1 logs what it loads.

    Applied when transformers is imported (tier1.encoder.model imports it only for models tier1.encoder.bert
    does not run), so a stage that never needs it does not pay for its import."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()


CONFIG_HELP = ("the stage's config keys as JSON (what its rule passes), or a config YAML file such as "
               "config/config.yaml (the file Snakemake reads; the stage takes the keys it needs)")


def parse_stage_config(text: str, stage: str):
    """The stage's typed config view: from the JSON its rule passes, or from a config YAML file."""
    if text.endswith((".yaml", ".yml")):
        return config_file_view(Path(text), stage)
    return parse_stage_json(text, stage)


def parser(doc: str, config: bool = True) -> argparse.ArgumentParser:
    """A stage's argument parser, described by its module docstring's first line, with --config."""
    made = argparse.ArgumentParser(description=doc.splitlines()[0])
    if config:
        made.add_argument("--config", "--configfile", dest="config", required=True, help=CONFIG_HELP)
    return made


def training_stage_parser(doc: str) -> argparse.ArgumentParser:
    """The arguments of every stage that trains on the prepared pairs (train, rank_compute,
    sweep_step): its config, the pairs and the token cache."""
    made = parser(doc)
    made.add_argument("--data", type=Path, required=True, help="training pairs (jsonl)")
    made.add_argument("--tokens", type=Path, default=None, help="token ids from the tokenize stage")
    return made


class Stage:
    """A running stage: its arguments, its typed config view (None without one) and, on first
    use of `ctx`, its ranks (tier1.runtime.distributed.setup)."""

    def __init__(self, args: argparse.Namespace, cfg):
        self.args, self.cfg = args, cfg
        self._ctx = None

    @property
    def ctx(self):
        if self._ctx is None:
            from tier1.runtime import distributed

            self._ctx = distributed.setup()
        return self._ctx


@contextlib.contextmanager
def stage(args: argparse.Namespace, view: str | None = None, transformers: bool = True) -> Iterator[Stage]:
    """The preamble and the end every stage shares: logging set up, transformers quiet (unless
    `transformers=False`: a stage that never loads a model), the stage's config view parsed
    from --config; on the way out, a failed rank ends its job's ranks on this machine (so none
    waits forever in a collective) and the process group is torn down."""
    setup_logging()
    if transformers:
        quiet_transformers()
    run = Stage(args, parse_stage_config(args.config, view) if view else None)
    try:
        yield run
    except Exception as err:
        ctx = run._ctx
        if ctx is not None and ctx.distributed:
            from tier1.runtime import distributed

            log = logging.getLogger("tier1.stages")
            # Said before the peers are ended: a peer failing at the same moment ends this rank
            # too, and whichever says it first leaves the cause in the job's log.
            log.error("rank %d failed (%s: %s)", ctx.rank, type(err).__name__, str(err).splitlines()[0][:300])
            distributed.end_local_peers(
                lambda said: log.error("rank %d ends the job's other ranks on this machine: %s", ctx.rank, said))
        raise
    finally:
        if run._ctx is not None:
            from tier1.runtime import distributed

            distributed.teardown()


def config_file_view(path: Path, stage: str):
    """A config YAML as Snakemake reads it, validated as the whole config, then the stage's view
    (world sizes resolved to 1: a stage run by hand is one process unless torchrun says more)."""
    import yaml

    if not path.is_file():
        raise ConfigError(f"--configfile {path}: no such file")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, found {type(values).__name__}")
    try:
        cfg = Tier1Config.from_dict(from_command_line(values)).resolve([])
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err
    return cfg.view(STAGE_VIEWS[stage])


def run_main(main) -> None:
    """Run an entry point, turning a bad input (setting or file) into a one-line message and exit 2."""
    try:
        main()
    except InputError as err:
        prefix = "configuration error: " if isinstance(err, ConfigError) else ""
        logging.getLogger("tier1").error("%s%s", prefix, err)
        sys.exit(2)
    exit_without_teardown()


def exit_without_teardown() -> None:
    """Exit 0 once the work is done and its files are closed, without the interpreter's teardown:
    with torch loaded, freeing every module's objects one by one takes 0.4-0.6 s per process
    (0.03 s this way; measured in docs/performance.md), and the system frees the memory at once.
    Streams and log handlers are flushed first; a failure (an exception) still exits the usual way."""
    logging.shutdown()
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:  # None when the process was started with that descriptor closed
                stream.flush()
    except (OSError, ValueError):  # a reader that went away, a closed stream: the usual exit reports it
        return
    os._exit(0)
