"""What produced a result: config hash, hardware, library versions and git revision."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from tier1.runtime.gpus import visible_gpus
from tier1.runtime.slurm import allocation

LIBRARIES = ("torch", "transformers", "sentence-transformers", "snakemake", "tier1")


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def available_cores() -> int:
    """Cores this process may run on (respects affinity masks and cgroup-pinned CPUs)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


_NODES: dict[str, Any] = {}  # a job across nodes: how many, and what ran between them (note_nodes)


def note_nodes(hosts_by_rank: list[str], backend: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Once a process group spans several torchrun agents (nodes; GROUP_WORLD_SIZE): the nodes, their
    hosts as the ranks reported them, and what carried the collectives between them, for every record
    this process writes (hardware()["nodes"]). Nothing for a job on one node."""
    env = os.environ if env is None else env
    count = int(env.get("GROUP_WORLD_SIZE") or 1)
    _NODES.clear()
    if count < 2:
        return {}
    hosts = list(dict.fromkeys(hosts_by_rank))
    started = "SLURM tasks" if env.get("SLURM_STEP_ID") else "torchrun agents"
    if len(hosts) == 1:
        what = f"{count} nodes ({started} standing in for nodes on one host, {hosts[0]})"
        between = f"{backend} over loopback (TCP within the host: no network between the nodes)"
    else:
        what = f"{count} nodes ({started} on {len(hosts)} hosts: {', '.join(hosts)})"
        between = (f"{backend} over TCP between the hosts" if backend == "gloo" else
                   f"{backend} between the hosts (its transport, InfiniBand or sockets, NCCL_DEBUG=INFO names)")
    _NODES.update(count=count, hosts=hosts, ranks_per_node=len(hosts_by_rank) // count, launched_by=started,
                  between=between, summary=f"{what}, {between}")
    return dict(_NODES)


def host_memory_bytes() -> int | None:
    """The machine's physical memory (None where the system cannot tell)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": available_cores(),
        "hostname": platform.node(),
        "gpus": [],
        "host_memory_bytes": host_memory_bytes(),
    }
    if _NODES:
        info["nodes"] = dict(_NODES)
    slurm = allocation()  # inside a SLURM job: the CPUs, GPUs and nodes it was given, as it saw them
    if slurm:
        info["slurm_allocation"] = slurm
    # A stage that does not use torch (prepare, tokenize) does not import it (seconds of CPU)
    # only to learn that a machine NVML finds no GPU on has none.
    if "torch" not in sys.modules and not visible_gpus():
        return info
    import torch

    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info["gpu_memory_bytes"] = [
            torch.cuda.get_device_properties(i).total_memory for i in range(torch.cuda.device_count())
        ]
        info["cuda"] = torch.version.cuda
        info["driver"] = _nvidia_driver()
    return info


def _nvidia_driver() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20, check=True,
        )
        return out.stdout.splitlines()[0].strip()
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        if name == "tier1":  # from the source tree: tier1 may run from PYTHONPATH, not installed
            from tier1 import __version__

            versions[name] = __version__
            continue
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@lru_cache(maxsize=1)
def git_revision() -> str:
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here,
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def stamp(config_hash: str) -> dict[str, Any]:
    """The provenance block every result file carries: the stage's hash of the keys it depends
    on, and (under Snakemake) the run's name and one hash of the run's whole resolved config."""
    return {
        "config_hash": config_hash,
        "run": os.environ.get("TIER1_RUN"),
        "run_config_hash": os.environ.get("TIER1_RUN_CONFIG_HASH"),
        "git_revision": git_revision(),
        "hardware": hardware(),
        "libraries": library_versions(),
        "written_at": utc_now(),
    }
