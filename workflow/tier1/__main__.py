"""The tier1 command: `tier1 <stage> ...` runs `python -m tier1.<module> ...`; `tier1 --help` lists them."""

from __future__ import annotations

import importlib
import sys

# stage: (module, what it does); each stage's own --help lists its options
COMMANDS = {
    "preflight": ("tier1.stages.preflight", "the machine's layout: GPUs, links, NUMA, NCCL, or CPU cores (preflight.json)"),
    "prepare": ("tier1.stages.prepare", "training pairs and a BEIR-form test set from the configured dataset"),
    "tokenize": ("tier1.stages.tokenize", "token ids of every text, once for all later stages and ranks"),
    "train": ("tier1.stages.train", "fine-tune on one process, or on N ranks with DDP (through tier1.runtime.launch)"),
    "evaluate": ("tier1.stages.evaluate", "retrieval quality of one model, encoding spread over the ranks"),
    "probe": ("tier1.stages.probe", "the largest training and encoding batch per GPU"),
    "commbench": ("tier1.stages.commbench", "all-reduce and all-gather sweeps (algbw, busbw) and a matmul probe"),
    "report": ("tier1.report.__main__", "the table, verdicts, plots and HTML page from the stages' files"),
    "bench": ("tier1.bench.compare", "tier1 against sentence-transformers on this device"),
    "check-gpus": ("tier1.stages.check_gpus", "a short DDP job: did every rank really work?"),
    "compare": ("tier1.tools.compare_runs", "two or more named runs side by side, and where they differ"),
}
USAGE = """usage: tier1 <stage> [options]     (tier1 <stage> --help: the stage's options)

The stages the Snakemake workflow runs (snakemake --cores 4 all), one command each:
{stages}

Each stage takes --config: the JSON its rule passes, or a config YAML such as config/config.yaml.
Several ranks: python -m tier1.runtime.launch --ranks N [--gpus] tier1.stages.train ... (torchrun underneath, each rank
on a GPU of its own with --gpus, and no rank outliving the job); --nnodes M --rdzv-endpoint HOST:PORT
for several machines.
"""


def usage() -> str:
    width = max(map(len, COMMANDS))
    return USAGE.format(stages="\n".join(f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()))


def main() -> None:
    if len(sys.argv) >= 2 and sys.argv[1] in ("-h", "--help", "help"):
        print(usage())
        return
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(usage(), file=sys.stderr)
        sys.exit(2)
    module = importlib.import_module(COMMANDS[sys.argv[1]][0])
    sys.argv = [f"tier1 {sys.argv[1]}", *sys.argv[2:]]
    from tier1.runtime.cli import run_main

    run_main(module.main)


if __name__ == "__main__":
    main()
