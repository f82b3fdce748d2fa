"""The tier1 command: `tier1 <stage> ...` runs `python -m tier1.<stage> ...`."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {"prepare": "tier1.prepare", "tokenize": "tier1.token_cache", "train": "tier1.train", "evaluate": "tier1.evaluate",
            "probe": "tier1.probe", "report": "tier1.report.__main__", "check-gpus": "tier1.check_gpus",
            "preflight": "tier1.preflight", "commbench": "tier1.commbench"}


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: tier1 {{{','.join(COMMANDS)}}} [options]\n"
              "Multi-rank stages run under torchrun: torchrun --standalone --nproc_per_node N -m tier1.train ...",
              file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(COMMANDS[sys.argv[1]])
    sys.argv = [f"tier1 {sys.argv[1]}", *sys.argv[2:]]
    from tier1.cli import run_main

    run_main(module.main)


if __name__ == "__main__":
    main()
