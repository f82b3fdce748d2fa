"""preflight: what the machine offers the ranks, read once per run before any job is timed.

    python -m tier1.stages.preflight --world-sizes 1 2 4 --out PREFLIGHT.json

CPU: model, cores this process may use, sockets, NUMA nodes, and the threads each rank gets
at every world size that will run. GPU (when jobs see one): each GPU's name, memory, SM and
memory clocks, PCIe link, NVLink links up, UUID, PCI bus id and NUMA node (NVML); the
`nvidia-smi topo -m` matrix; which GPU pairs have peer access (CUDA); the NCCL version and
every NCCL_* variable; driver and CUDA versions.

Nothing here may stop a run: a missing tool, library or file leaves that value null, and the
reason goes under "unavailable", keyed by the value's path (e.g. "gpu.topology").
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tier1.measure import clock
from tier1.records import PreflightRecord
from tier1.runtime import cli, provenance
from tier1.runtime.cli import run_main

log = logging.getLogger("tier1.stages.preflight")


class Unavailable(Exception):
    """A value this machine cannot give; the message says why."""


class Findings:
    """Collects values, turning any failure into null plus a reason under its path."""

    def __init__(self) -> None:
        self.unavailable: dict[str, str] = {}

    def get(self, path: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Unavailable as err:
            self.unavailable[path] = str(err)
        except Exception as err:  # a broken library or an odd machine: record it, never crash
            self.unavailable[path] = f"{type(err).__name__}: {err}"
        return None


# -- parsing helpers (pure; unit-tested on canned text) ---------------------------------------

def parse_cpulist(text: str) -> list[int]:
    """CPU ids of a kernel cpulist such as "0-3,8,10-11" (an empty list for "")."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.extend(range(int(lo), int(hi) + 1))
        else:
            cpus.append(int(part))
    return cpus


def parse_numa_node(text: str) -> int | None:
    """A PCI device's numa_node file: its node, or None for -1 (the kernel knows no affinity)."""
    node = int(text.strip())
    return None if node < 0 else node


def sysfs_pci_address(bus_id: str) -> str:
    """NVML's bus id ("00000000:3B:00.0", 8-digit domain, upper case) as sysfs names the device
    ("0000:3b:00.0")."""
    bus_id = bus_id.strip()
    parts = bus_id.split(":")
    if len(parts) != 3:
        raise ValueError(f"not a PCI bus id: {bus_id!r}")
    domain, bus, rest = parts
    return f"{int(domain, 16):04x}:{bus.lower()}:{rest.lower()}"


def parse_lscpu(text: str) -> dict[str, int | None]:
    """Sockets and NUMA nodes from `lscpu` output (None where it does not say)."""
    fields = {}
    for line in text.splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields[key.strip()] = value.strip()

    def number(key: str) -> int | None:
        value = fields.get(key, "")
        return int(value) if value.isdigit() else None

    return {"sockets": number("Socket(s)"), "numa_nodes": number("NUMA node(s)")}


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_DEVICE_COLUMN = re.compile(r"^(GPU\d+|NIC\d+|mlx\S+)$")


def _cells(line: str) -> list[str]:
    # Columns are tab-separated, sometimes with empty cells (a double tab) before the NUMA
    # columns; copies pasted from a terminal have runs of spaces instead. " X " keeps its spaces.
    return [c.strip() for c in re.split(r"\t| {2,}", line) if c.strip()]


def parse_topology(text: str) -> dict[str, Any]:
    """The matrix of `nvidia-smi topo -m`.

    Returns {"devices": column names (GPU0.., NIC0..), "links": {row: {column: link}} with link
    types such as "X", "NV12", "PIX", "PXB", "PHB", "NODE", "SYS", "affinity": {row: {"CPU
    Affinity": .., "NUMA Affinity": .., "GPU NUMA ID": ..}} (the columns the output has), and
    "nics": {"NIC0": "mlx5_0", ...} from the NIC legend}.
    """
    lines = [_ANSI.sub("", line).rstrip() for line in text.splitlines()]
    body: list[str] = []
    for line in lines:
        if line.strip().startswith("Legend"):
            break  # the matrix ends where the legend begins
        if line.strip():
            body.append(line)
    nics = {}
    for line in lines:  # the NIC legend ("  NIC0: mlx5_0") follows the link legend
        match = re.match(r"^\s*(NIC\d+)\s*:\s*(\S+)\s*$", line)
        if match:
            nics[match.group(1)] = match.group(2)
    if not body:
        raise ValueError("no topology matrix in the output")
    header = _cells(body[0])
    devices = [h for h in header if _DEVICE_COLUMN.match(h)]
    others = [h for h in header if not _DEVICE_COLUMN.match(h)]
    if not devices:
        raise ValueError(f"no GPU or NIC columns in the header {body[0]!r}")
    links: dict[str, dict[str, str]] = {}
    affinity: dict[str, dict[str, str]] = {}
    for line in body[1:]:
        cells = _cells(line)
        if not cells or not _DEVICE_COLUMN.match(cells[0]):
            continue
        name, values = cells[0], cells[1:]
        if len(values) < len(devices):
            raise ValueError(f"row {name} has {len(values)} cells for {len(devices)} device columns: {line!r}")
        links[name] = dict(zip(devices, values[: len(devices)]))
        affinity[name] = dict(zip(others, values[len(devices):]))
    return {"devices": devices, "links": links, "affinity": affinity, "nics": nics}


# PCIe bandwidth per lane and direction after line encoding, GB/s: gen 1-2 use 8b/10b,
# gen 3-5 128b/130b, gen 6 FLIT mode (242 payload bytes of 256).
_PCIE_LANE_GBPS = {1: 2.5 * 0.8 / 8, 2: 5.0 * 0.8 / 8, 3: 8.0 * 128 / 130 / 8, 4: 16.0 * 128 / 130 / 8,
                   5: 32.0 * 128 / 130 / 8, 6: 64.0 * 242 / 256 / 8}


def pcie_gbps(generation: int | None, width: int | None) -> float | None:
    """A PCIe link's bandwidth per direction in GB/s (1e9 bytes/s), or None if unknown."""
    if generation not in _PCIE_LANE_GBPS or not width:
        return None
    return _PCIE_LANE_GBPS[generation] * width


def threads_per_rank(cores: int, world_sizes: list[int]) -> dict[int, int]:
    """What tier1.runtime.distributed.setup gives each rank: the cores over the ranks, at least 1."""
    return {n: max(1, cores // n) for n in world_sizes}


# -- CPU --------------------------------------------------------------------------------------

def numa_nodes_sysfs(root: Path = Path("/")) -> list[dict[str, Any]]:
    """The NUMA nodes under /sys/devices/system/node with their CPUs."""
    base = root / "sys/devices/system/node"
    nodes = sorted((p for p in base.glob("node*") if p.name[4:].isdigit()), key=lambda p: int(p.name[4:]))
    if not nodes:
        raise Unavailable(f"no node* folders under {base}")
    out = []
    for p in nodes:
        cpus = parse_cpulist((p / "cpulist").read_text()) if (p / "cpulist").exists() else []
        out.append({"node": int(p.name[4:]), "cpus": len(cpus), "cpulist": _text(p / "cpulist")})
    return out


def sockets_sysfs(root: Path = Path("/")) -> int:
    """Distinct physical packages of the online CPUs."""
    base = root / "sys/devices/system/cpu"
    ids = {f.read_text().strip() for f in base.glob("cpu[0-9]*/topology/physical_package_id")}
    if not ids:
        raise Unavailable(f"no cpu*/topology/physical_package_id under {base}")
    return len(ids)


def _text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def lscpu() -> dict[str, int | None]:
    exe = shutil.which("lscpu")
    if exe is None:
        raise Unavailable("lscpu is not installed")
    out = subprocess.run([exe], capture_output=True, text=True, timeout=20, check=True,
                         env={**os.environ, "LC_ALL": "C"})
    return parse_lscpu(out.stdout)


def cpu_section(world_sizes: list[int], found: Findings, root: Path = Path("/")) -> dict[str, Any]:
    cores = provenance.available_cores()
    nodes = found.get("cpu.numa_nodes", numa_nodes_sysfs, root)
    sockets = found.get("cpu.sockets", sockets_sysfs, root)
    sources = {"sysfs"} if nodes is not None or sockets is not None else set()
    if nodes is None or sockets is None:  # lscpu fills what sysfs did not say
        listed = found.get("cpu.lscpu", lscpu) or {}
        if sockets is None and listed.get("sockets") is not None:
            sockets = listed["sockets"]
            found.unavailable.pop("cpu.sockets", None)
            sources.add("lscpu")
        if nodes is None and listed.get("numa_nodes") is not None:
            nodes = [{"node": i, "cpus": None, "cpulist": None} for i in range(listed["numa_nodes"])]
            found.unavailable.pop("cpu.numa_nodes", None)
            sources.add("lscpu")
    threads = threads_per_rank(cores, world_sizes)
    return {
        "model": provenance.cpu_model(),
        "cores_available": cores,
        "logical_cpus": os.cpu_count(),
        "sockets": sockets,
        "numa_node_count": len(nodes) if nodes is not None else None,
        "numa_nodes": nodes,
        "topology_source": " and ".join(sorted(sources)) or None,
        "threads_per_rank": {str(n): t for n, t in threads.items()},
        # ranks beyond the cores share them: a CPU run then measures time-slicing, not scaling
        "ranks_share_cores": {str(n): n > cores for n in world_sizes},
    }


# -- GPU --------------------------------------------------------------------------------------

def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def nvidia_smi_topology() -> dict[str, Any]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise Unavailable("nvidia-smi is not on PATH")
    out = subprocess.run([exe, "topo", "-m"], capture_output=True, text=True, timeout=30)
    if out.returncode != 0:
        raise Unavailable(f"nvidia-smi topo -m exited {out.returncode}: {(out.stderr or out.stdout).strip()[:300]}")
    return {"text": out.stdout, **parse_topology(out.stdout)}


def nvlink_links_up(nvml, handle) -> int:
    """NVLink links in the active state (0 on a GPU without NVLink)."""
    up = 0
    for link in range(nvml.NVML_NVLINK_MAX_LINKS):
        try:
            state = nvml.nvmlDeviceGetNvLinkState(handle, link)
        except (nvml.NVMLError_NotSupported, nvml.NVMLError_InvalidArgument):
            continue  # no such link on this GPU (none at all on a PCIe-only card)
        up += int(state == nvml.NVML_FEATURE_ENABLED)
    return up


def numa_of_pci(bus_id: str, root: Path = Path("/")) -> dict[str, Any]:
    """NUMA node and local CPUs of a PCI device, from sysfs."""
    dev = root / "sys/bus/pci/devices" / sysfs_pci_address(bus_id)
    if not dev.exists():
        raise Unavailable(f"{dev} does not exist")
    numa = dev / "numa_node"
    return {"numa_node": parse_numa_node(numa.read_text()) if numa.exists() else None,
            "local_cpulist": _text(dev / "local_cpulist")}


def gpu_device(nvml, handle, index: int, found: Findings) -> dict[str, Any]:
    key = f"gpu.devices[{index}]"

    def field(name: str, fn, *args):
        return found.get(f"{key}.{name}", fn, *args)

    bus = field("pci_bus_id", lambda: _str(nvml.nvmlDeviceGetPciInfo(handle).busId))
    memory = field("memory_total_bytes", lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).total))
    gen, gen_max = (field("pcie.generation", nvml.nvmlDeviceGetCurrPcieLinkGeneration, handle),
                    field("pcie.generation_max", nvml.nvmlDeviceGetMaxPcieLinkGeneration, handle))
    width, width_max = (field("pcie.width", nvml.nvmlDeviceGetCurrPcieLinkWidth, handle),
                        field("pcie.width_max", nvml.nvmlDeviceGetMaxPcieLinkWidth, handle))
    placement = field("numa", numa_of_pci, bus) if bus else None
    return {
        "nvml_index": index,
        "name": field("name", lambda: _str(nvml.nvmlDeviceGetName(handle))),
        "uuid": field("uuid", lambda: _str(nvml.nvmlDeviceGetUUID(handle))),
        "pci_bus_id": bus,
        "memory_total_bytes": memory,
        "clocks_mhz": {
            "sm": field("clocks_mhz.sm", nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_SM),
            "sm_max": field("clocks_mhz.sm_max", nvml.nvmlDeviceGetMaxClockInfo, handle, nvml.NVML_CLOCK_SM),
            "memory": field("clocks_mhz.memory", nvml.nvmlDeviceGetClockInfo, handle, nvml.NVML_CLOCK_MEM),
            "memory_max": field("clocks_mhz.memory_max", nvml.nvmlDeviceGetMaxClockInfo, handle, nvml.NVML_CLOCK_MEM),
        },
        "pcie": {"generation": gen, "generation_max": gen_max, "width": width, "width_max": width_max,
                 "gbps_per_direction": pcie_gbps(gen, width),
                 "gbps_per_direction_max": pcie_gbps(gen_max, width_max)},
        "nvlink_links_up": field("nvlink_links_up", nvlink_links_up, nvml, handle),
        "power_limit_w": field("power_limit_w", lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000),
        "numa_node": placement["numa_node"] if placement else None,
        "local_cpulist": placement["local_cpulist"] if placement else None,
    }


def peer_access() -> dict[str, Any]:
    """Which CUDA devices can read each other's memory directly (P2P), by UUID."""
    import torch

    if not torch.cuda.is_available():
        raise Unavailable("CUDA is not available to torch")
    n = torch.cuda.device_count()
    uuids = [f"GPU-{torch.cuda.get_device_properties(i).uuid}" for i in range(n)]
    matrix = [[None if i == j else bool(torch.cuda.can_device_access_peer(i, j)) for j in range(n)] for i in range(n)]
    return {"uuids": uuids, "matrix": matrix}


def nccl_version() -> str:
    import torch

    if not torch.cuda.is_available():
        raise Unavailable("no CUDA: the run uses gloo")
    version = torch.cuda.nccl.version()  # (major, minor, patch) in current torch
    return ".".join(str(v) for v in version) if isinstance(version, tuple) else str(version)


def cuda_driver_version(nvml) -> str:
    version = int(nvml.nvmlSystemGetCudaDriverVersion_v2())
    return f"{version // 1000}.{version % 1000 // 10}"


def gpu_section(job_gpus: list[str], found: Findings) -> dict[str, Any] | None:
    """Every GPU NVML sees, marked with whether the jobs use it; None when jobs see no GPU."""
    if not job_gpus:
        found.unavailable["gpu"] = "no GPU visible to the jobs (NVML found none, or CUDA_VISIBLE_DEVICES hides them)"
        return None
    try:
        import pynvml as nvml

        nvml.nvmlInit()
    except Exception as err:
        found.unavailable["gpu.devices"] = f"NVML could not start: {type(err).__name__}: {err}"
        nvml = None
    devices, driver, cuda_driver = [], None, None
    if nvml is not None:
        try:
            count = found.get("gpu.devices", nvml.nvmlDeviceGetCount) or 0
            for i in range(count):
                handle = found.get(f"gpu.devices[{i}]", nvml.nvmlDeviceGetHandleByIndex, i)
                if handle is not None:
                    devices.append(gpu_device(nvml, handle, i, found))
            driver = found.get("gpu.driver_version", lambda: _str(nvml.nvmlSystemGetDriverVersion()))
            cuda_driver = found.get("gpu.cuda_driver_version", cuda_driver_version, nvml)
        finally:
            nvml.nvmlShutdown()
    devices.sort(key=lambda d: d["pci_bus_id"] or "")
    declared = job_gpus[0].startswith("gpu")  # TIER1_GPUS=N: the first N in bus order
    for pos, d in enumerate(devices):
        d["used_by_jobs"] = pos < len(job_gpus) if declared else d["uuid"] in job_gpus

    import torch

    return {
        "count": len(devices),
        "job_gpus": job_gpus,
        "devices": devices,
        "note": "clocks and the PCIe generation are read while the GPUs idle, when both drop to save power; "
                "the *_max values are what the GPU can reach",
        "topology": found.get("gpu.topology", nvidia_smi_topology),
        "peer_access": found.get("gpu.peer_access", peer_access),
        "nccl_version": found.get("gpu.nccl_version", nccl_version),
        "driver_version": driver,
        "cuda_driver_version": cuda_driver,
        "cuda_runtime_version": torch.version.cuda,
    }


def collect(world_sizes: list[int], job_gpus: list[str] | None = None) -> PreflightRecord:
    """The whole preflight record for a run of `world_sizes` (GPUs as tier1.runtime.gpus sees them)."""
    # torch before the clock starts: importing it is start-up, not inspecting the machine
    import torch.distributed as dist

    from tier1.runtime.gpus import visible_gpus

    # CUDA indices in PCI bus order, as every job runs (tier1.runtime.launch): the peer matrix then
    # lists the GPUs in NVML's order.
    os.environ.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    started = clock.now()
    found = Findings()
    if job_gpus is None:
        job_gpus = visible_gpus()
    job_gpus = job_gpus[: max(world_sizes)] if world_sizes else job_gpus
    started_at = provenance.utc_now()
    cpu = cpu_section(world_sizes, found)
    gpu = gpu_section(job_gpus, found)
    backends = {"nccl": dist.is_nccl_available(), "gloo": dist.is_gloo_available()}
    work_s = clock.now() - started
    return PreflightRecord(
        stage="preflight",
        started_at=started_at,
        work_s=work_s,  # the inspection itself; the report's pipeline overhead counts the rest of the job
        world_sizes=list(world_sizes),
        backend="nccl" if gpu else "gloo",
        backends_available=backends,
        cpu=cpu,
        gpu=gpu,
        # every variable that steers NCCL (and PyTorch's NCCL wrapper), recorded on CPU runs too
        nccl_env={k: v for k, v in sorted(os.environ.items()) if k.startswith(("NCCL_", "TORCH_NCCL_"))},
        unavailable=found.unavailable,
        **provenance.stamp("n/a"),
        finished_at=provenance.utc_now(),
    )


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__, config=False)
    parser.add_argument("--world-sizes", type=int, nargs="+", required=True, help="the world sizes the run uses")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    with cli.stage(args, transformers=False):
        record = collect(args.world_sizes)
        record.write(args.out)
        gpus = record.gpu["count"] if record.gpu else 0
        log.info("preflight: %s, %d cores, %d GPU(s); unavailable: %s", record.cpu["model"],
                 record.cpu["cores_available"], gpus, ", ".join(record.unavailable) or "nothing")


if __name__ == "__main__":
    run_main(main)
