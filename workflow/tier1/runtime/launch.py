"""Starts a stage on N ranks with exactly N GPUs of its own (or N CPU ranks on a CPU machine).

    python -m tier1.runtime.launch --ranks N [--gpus] tier1.stages.train --config ... --data ...

Several machines: start the same command on each, with --nnodes M --rdzv-endpoint HOST:PORT
(N ranks per node; torchrun's c10d rendezvous, hosted by the first node to arrive at HOST:PORT,
joins them into one job of M x N ranks). Inside a SLURM allocation, --nnodes M --srun does that
itself: one srun task per node runs this launcher, the first node of the allocation hosts the
rendezvous (tier1.runtime.slurm.node_plan).

One rank runs as a plain process, several under torchrun. With --gpus the job takes the first
N GPUs it is allowed to see (the machine's, or those a scheduler gave it), pins them by UUID in
CUDA_VISIBLE_DEVICES in PCI bus order, and refuses to start with fewer, rather than letting
ranks share a device or fall back to the CPU.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

from tier1.runtime.cli import exit_without_teardown
from tier1.runtime.gpus import GPUS_ENV, SHARE_GPU_ENV, visible_gpus
from tier1.runtime.lifeline import LIFELINE_ENV, die_with_parent, watch_owner

REQUIRE_GPU_ENV = "TIER1_REQUIRE_GPU"
TORCHRUN = "torch.distributed.run"


def job_environment(ranks: int, gpus: bool, env: dict[str, str], share_gpu: bool = False) -> dict[str, str]:
    """The environment the ranks run in. `share_gpu`: every rank on the first GPU, over gloo (the
    shared-GPU rehearsal of the multi-rank CUDA path; not a speedup)."""
    out = dict(env)
    # When a rank fails, torchrun asks the others to stop and waits this long before killing them;
    # a stopped (hung) rank never answers, so its 30 s default would only delay the end.
    out.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "5")
    if not gpus:
        return out
    seen = visible_gpus(env)
    if share_gpu:
        if not seen:
            raise SystemExit("share_gpu: the shared-GPU rehearsal needs one GPU, and this job sees none")
        seen, ranks = seen[:1], 1
        out[SHARE_GPU_ENV] = "1"
    if len(seen) < ranks:
        raise SystemExit(f"this job needs {ranks} GPU(s) but sees {len(seen)} ({', '.join(seen) or 'none'}); "
                         f"lower gpu_counts or give the job more GPUs")
    out.pop(GPUS_ENV, None)
    out["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    if not seen[0].startswith("gpu"):  # real UUIDs; a declared count leaves the scheduler's mask alone
        out["CUDA_VISIBLE_DEVICES"] = ",".join(seen[:ranks])
    out[REQUIRE_GPU_ENV] = "1"
    return out


def command(ranks: int, module: str, args: list[str], nnodes: int = 1, rdzv_endpoint: str | None = None,
            rdzv_id: str = "tier1") -> list[str]:
    """The command line of the job: `ranks` ranks on this node, of `nnodes` nodes in all."""
    if ranks == 1 and nnodes == 1:
        return [sys.executable, "-m", module, *args]
    if nnodes == 1:
        where = ["--standalone"]
    else:
        if not rdzv_endpoint:
            raise SystemExit("--nnodes > 1 needs --rdzv-endpoint HOST:PORT, reachable from every node")
        where = [f"--nnodes={nnodes}", "--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}", f"--rdzv-id={rdzv_id}"]
    # --max-restarts 0: a failed rank ends the job (a restart would mix two runs' timings);
    # --monitor-interval 0.1 (torchrun's default, stated): a rank's death, and the job's end, are
    # noticed within a tenth of a second.
    return [sys.executable, "-m", TORCHRUN, *where, f"--nproc_per_node={ranks}",
            "--max-restarts=0", "--monitor-interval=0.1", "-m", module, *args]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, required=True, help="ranks on this node")
    parser.add_argument("--gpus", action="store_true", help="one GPU per rank, required")
    parser.add_argument("--share-gpu", action="store_true",
                        help="with --gpus: every rank on the first GPU, over gloo (a rehearsal, not a speedup)")
    parser.add_argument("--nnodes", type=int, default=1, help="machines in the job (the same command runs on each)")
    parser.add_argument("--rdzv-endpoint", default=None, help="HOST:PORT where the nodes meet (c10d rendezvous)")
    parser.add_argument("--rdzv-id", default="tier1", help="a job id the nodes share")
    parser.add_argument("--srun", action="store_true",
                        help="inside a SLURM allocation: start this launcher on each of the --nnodes nodes through "
                             "srun, the rendezvous on the allocation's first node")
    parser.add_argument("module", help="the stage module, e.g. tier1.stages.train")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.srun:
        across_nodes(args)
        return
    env = job_environment(args.ranks, args.gpus, dict(os.environ), args.share_gpu)
    cmd = command(args.ranks, args.module, args.args, args.nnodes, args.rdzv_endpoint, args.rdzv_id)
    # The job (torchrun, or the one rank) ends when whoever started it (Snakemake, a shell) dies;
    # torchrun then stops its ranks, and each rank also watches torchrun (distributed.setup).
    die_with_parent()
    watch_owner(os.getpid())  # and when Snakemake dies while the job's shell lives on
    if cmd[1:3] == ["-m", TORCHRUN]:
        # torchrun's own entry point in this process rather than a new interpreter: the same
        # agent, arguments and environment, and its exit skips the interpreter's teardown as the
        # ranks' does (cli.exit_without_teardown). A failed rank still raises, and exits the usual way.
        os.environ.clear()
        os.environ.update(env)
        from torch.distributed.elastic.multiprocessing.api import SignalException
        from torch.distributed.run import main as torchrun

        try:
            torchrun(cmd[3:])
        except SignalException as stop:
            # stopped from outside (its lifeline gone, Ctrl-C, a scheduler): torchrun has already
            # stopped the ranks; one line in the log, not its traceback
            name = signal.Signals(stop.sigval).name
            print(f"tier1.runtime.launch: stopped by {name}; the ranks were stopped", file=sys.stderr)
            sys.exit(128 + int(stop.sigval))
        exit_without_teardown()
        return  # reached only when a stream could not be flushed: the usual exit reports it
    os.execvpe(cmd[0], cmd, env)


def across_nodes(args: argparse.Namespace) -> None:
    """--srun: the same launch on each node of this SLURM allocation, through one srun (its tasks end
    together: one that fails ends the others), the c10d rendezvous hosted on the first node."""
    from tier1.runtime.slurm import node_plan

    plan = node_plan(args.nnodes)
    task = [sys.executable, "-m", "tier1.runtime.launch", "--ranks", str(args.ranks), "--nnodes", str(args.nnodes),
            "--rdzv-endpoint", plan.rdzv_endpoint, "--rdzv-id", f"slurm-{plan.job_id}",
            *(["--gpus"] if args.gpus else []), *(["--share-gpu"] if args.share_gpu else []), args.module, *args.args]
    cmd = plan.srun(task, gpus_per_task=args.ranks if args.gpus else 0)
    print(f"tier1.runtime.launch: {plan.describe()}", file=sys.stderr, flush=True)
    env = dict(os.environ)
    # the wrappers' pids live on this node only: on another node the tasks' watchdog would find them
    # gone; srun is their lifeline there (slurmstepd ends a step's tasks when its srun ends)
    env.pop(LIFELINE_ENV, None)
    env.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "5")
    die_with_parent()
    watch_owner(os.getpid())
    os.execvpe(cmd[0], cmd, env)


if __name__ == "__main__":
    main()
