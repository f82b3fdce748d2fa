"""The machine preflight: parsers on canned tool output and /sys files, NVML read through a fake,
and the CPU path for real."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tier1.records import PreflightRecord
from tier1.runtime.provenance import available_cores
from tier1.stages import preflight
from tier1.stages.preflight import Findings

from helpers import REPO

# `nvidia-smi topo -m` on two SXM A100s: tab-separated, an empty cell before "GPU NUMA ID".
TOPO_NVLINK = (
    "\tGPU0\tGPU1\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\n"
    "GPU0\t X \tNV12\t0-95\t0\t\tN/A\n"
    "GPU1\tNV12\t X \t0-95\t0\t\tN/A\n"
    "\n"
    "Legend:\n"
    "\n"
    "  X    = Self\n"
    "  SYS  = Connection traversing PCIe as well as the SMP interconnect between NUMA nodes (e.g., QPI/UPI)\n"
    "  NV#  = Connection traversing a bonded set of # NVLinks\n"
)

# Four PCIe GPUs over two sockets and one NIC, with the terminal underline around the header.
TOPO_PCIE_NIC = (
    "\t\x1b[4mGPU0\tGPU1\tGPU2\tGPU3\tNIC0\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID\x1b[0m\n"
    "GPU0\t X \tPIX\tSYS\tSYS\tPXB\t0-15,32-47\t0\t\tN/A\n"
    "GPU1\tPIX\t X \tSYS\tSYS\tPXB\t0-15,32-47\t0\t\tN/A\n"
    "GPU2\tSYS\tSYS\t X \tPIX\tSYS\t16-31,48-63\t1\t\tN/A\n"
    "GPU3\tSYS\tSYS\tPIX\t X \tSYS\t16-31,48-63\t1\t\tN/A\n"
    "NIC0\tPXB\tPXB\tSYS\tSYS\t X \t\t\t\t\n"
    "\n"
    "Legend:\n"
    "\n"
    "  X    = Self\n"
    "  PIX  = Connection traversing at most a single PCIe bridge\n"
    "\n"
    "NIC Legend:\n"
    "\n"
    "  NIC0: mlx5_0\n"
)

# The same kind of matrix pasted from a terminal: runs of spaces instead of tabs.
TOPO_SPACES = (
    "        GPU0    GPU1    CPU Affinity    NUMA Affinity\n"
    "GPU0     X      NV18    0-47    0\n"
    "GPU1    NV18     X      0-47    0\n"
)

LSCPU = """Architecture:                            x86_64
CPU(s):                                  128
Thread(s) per core:                      2
Core(s) per socket:                      32
Socket(s):                               2
NUMA node(s):                            4
NUMA node0 CPU(s):                       0-15,64-79
"""


def test_topology_with_nvlink_and_empty_cells():
    topo = preflight.parse_topology(TOPO_NVLINK)
    assert topo["devices"] == ["GPU0", "GPU1"]
    assert topo["links"] == {"GPU0": {"GPU0": "X", "GPU1": "NV12"}, "GPU1": {"GPU0": "NV12", "GPU1": "X"}}
    assert topo["affinity"]["GPU1"] == {"CPU Affinity": "0-95", "NUMA Affinity": "0", "GPU NUMA ID": "N/A"}
    assert topo["nics"] == {}


def test_topology_with_pcie_sockets_nics_and_escape_codes():
    topo = preflight.parse_topology(TOPO_PCIE_NIC)
    assert topo["devices"] == ["GPU0", "GPU1", "GPU2", "GPU3", "NIC0"]
    assert topo["links"]["GPU0"]["GPU1"] == "PIX" and topo["links"]["GPU1"]["GPU2"] == "SYS"
    assert topo["links"]["GPU3"]["NIC0"] == "SYS" and topo["links"]["NIC0"]["GPU0"] == "PXB"
    assert topo["affinity"]["GPU2"]["CPU Affinity"] == "16-31,48-63" and topo["affinity"]["GPU2"]["NUMA Affinity"] == "1"
    assert topo["affinity"]["NIC0"] == {}
    assert topo["nics"] == {"NIC0": "mlx5_0"}


def test_topology_pasted_with_spaces():
    topo = preflight.parse_topology(TOPO_SPACES)
    assert topo["links"]["GPU0"] == {"GPU0": "X", "GPU1": "NV18"}
    assert topo["affinity"]["GPU1"] == {"CPU Affinity": "0-47", "NUMA Affinity": "0"}


@pytest.mark.parametrize("text", ["", "No devices were found\n", "\tGPU0\tGPU1\nGPU0\t X \n"])
def test_topology_that_is_not_a_matrix_is_an_error(text):
    with pytest.raises(ValueError):
        preflight.parse_topology(text)


def test_sysfs_values():
    assert preflight.parse_cpulist("0-3,8,10-11\n") == [0, 1, 2, 3, 8, 10, 11]
    assert preflight.parse_cpulist("") == []
    assert preflight.parse_numa_node("1\n") == 1
    assert preflight.parse_numa_node("-1\n") is None  # no affinity known
    assert preflight.sysfs_pci_address("00000000:3B:00.0") == "0000:3b:00.0"
    assert preflight.sysfs_pci_address("0000:3b:00.0") == "0000:3b:00.0"
    assert preflight.sysfs_pci_address("00000001:C1:00.0") == "0001:c1:00.0"
    with pytest.raises(ValueError):
        preflight.sysfs_pci_address("3b:00.0")


def test_lscpu_text():
    assert preflight.parse_lscpu(LSCPU) == {"sockets": 2, "numa_nodes": 4}
    assert preflight.parse_lscpu("Architecture: x86_64\n") == {"sockets": None, "numa_nodes": None}


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_numa_nodes_sockets_and_pci_placement_from_a_fake_sys(tmp_path):
    _write(tmp_path / "sys/devices/system/node/node0/cpulist", "0-3\n")
    _write(tmp_path / "sys/devices/system/node/node1/cpulist", "4-7\n")
    _write(tmp_path / "sys/devices/system/node/possible", "0-1\n")  # a file, not a node
    for cpu, package in ((0, 0), (1, 0), (4, 1)):
        _write(tmp_path / f"sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id", f"{package}\n")
    _write(tmp_path / "sys/bus/pci/devices/0000:3b:00.0/numa_node", "1\n")
    _write(tmp_path / "sys/bus/pci/devices/0000:3b:00.0/local_cpulist", "4-7\n")
    assert preflight.numa_nodes_sysfs(tmp_path) == [{"node": 0, "cpus": 4, "cpulist": "0-3"},
                                                    {"node": 1, "cpus": 4, "cpulist": "4-7"}]
    assert preflight.sockets_sysfs(tmp_path) == 2
    assert preflight.numa_of_pci("00000000:3B:00.0", tmp_path) == {"numa_node": 1, "local_cpulist": "4-7"}
    with pytest.raises(preflight.Unavailable):
        preflight.numa_of_pci("00000000:AF:00.0", tmp_path)


def test_pcie_bandwidth_per_direction():
    assert preflight.pcie_gbps(3, 16) == pytest.approx(15.75, abs=0.01)
    assert preflight.pcie_gbps(4, 16) == pytest.approx(31.51, abs=0.01)
    assert preflight.pcie_gbps(5, 16) == pytest.approx(63.02, abs=0.01)
    assert preflight.pcie_gbps(1, 1) == pytest.approx(0.25)
    assert preflight.pcie_gbps(None, 16) is None and preflight.pcie_gbps(4, 0) is None


def test_threads_per_rank_split_the_cores():
    assert preflight.threads_per_rank(2, [1, 2, 4]) == {1: 2, 2: 1, 4: 1}
    assert preflight.threads_per_rank(16, [1, 2, 4, 8]) == {1: 16, 2: 8, 4: 4, 8: 2}


def test_a_failure_is_null_with_its_reason():
    found = Findings()

    def missing():
        raise preflight.Unavailable("nvidia-smi is not on PATH")

    assert found.get("gpu.topology", missing) is None
    assert found.get("gpu.x", lambda: 1 / 0) is None
    assert found.get("ok", lambda: 3) == 3
    assert found.unavailable == {"gpu.topology": "nvidia-smi is not on PATH", "gpu.x": "ZeroDivisionError: division by zero"}


class FakeNVML:
    """Just enough of pynvml for one GPU with 4 NVLink links up, no power reading and sysfs absent."""

    NVML_NVLINK_MAX_LINKS = 18
    NVML_FEATURE_ENABLED = 1
    NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2

    class NVMLError_NotSupported(Exception):
        pass

    class NVMLError_InvalidArgument(Exception):
        pass

    def __init__(self, links_up: int = 4, links: int = 6):
        self.links_up, self.links = links_up, links

    def nvmlDeviceGetNvLinkState(self, handle, link):
        if link >= self.links:
            raise self.NVMLError_NotSupported()
        return int(link < self.links_up)

    def nvmlDeviceGetPciInfo(self, handle):
        return type("Pci", (), {"busId": b"00000000:3B:00.0"})()

    def nvmlDeviceGetMemoryInfo(self, handle):
        return type("Mem", (), {"total": 80 * 2**30})()

    def nvmlDeviceGetName(self, handle):
        return "NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetUUID(self, handle):
        return "GPU-1234"

    def nvmlDeviceGetClockInfo(self, handle, clock):
        return {1: 345, 2: 2619}[clock]

    def nvmlDeviceGetMaxClockInfo(self, handle, clock):
        return {1: 1980, 2: 2619}[clock]

    def nvmlDeviceGetCurrPcieLinkGeneration(self, handle):
        return 1  # an idle GPU trains its link down

    def nvmlDeviceGetMaxPcieLinkGeneration(self, handle):
        return 5

    def nvmlDeviceGetCurrPcieLinkWidth(self, handle):
        return 16

    def nvmlDeviceGetMaxPcieLinkWidth(self, handle):
        return 16

    def nvmlDeviceGetEnforcedPowerLimit(self, handle):
        raise self.NVMLError_NotSupported("power readings not supported")


def test_nvlink_links_up():
    assert preflight.nvlink_links_up(FakeNVML(4, 6), None) == 4
    assert preflight.nvlink_links_up(FakeNVML(0, 0), None) == 0  # a PCIe card has no links at all


def test_one_gpu_through_nvml_with_gaps(monkeypatch):
    def no_sysfs(bus_id):
        raise preflight.Unavailable("no sysfs here")

    monkeypatch.setattr(preflight, "numa_of_pci", no_sysfs)
    found = Findings()
    gpu = preflight.gpu_device(FakeNVML(), "handle", 0, found)
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["uuid"] == "GPU-1234"
    assert gpu["pci_bus_id"] == "00000000:3B:00.0" and gpu["memory_total_bytes"] == 80 * 2**30
    assert gpu["clocks_mhz"] == {"sm": 345, "sm_max": 1980, "memory": 2619, "memory_max": 2619}
    assert gpu["pcie"]["generation"] == 1 and gpu["pcie"]["generation_max"] == 5 and gpu["pcie"]["width_max"] == 16
    assert gpu["pcie"]["gbps_per_direction_max"] == pytest.approx(63.02, abs=0.01)
    assert gpu["nvlink_links_up"] == 4
    assert gpu["power_limit_w"] is None and "power readings not supported" in found.unavailable["gpu.devices[0].power_limit_w"]
    assert gpu["numa_node"] is None and found.unavailable["gpu.devices[0].numa"] == "no sysfs here"


def test_cpu_section_for_real():
    found = Findings()
    cpu = preflight.cpu_section([1, 2, 4], found)
    cores = available_cores()
    assert cpu["cores_available"] == cores and cpu["model"]
    assert cpu["threads_per_rank"] == {str(n): max(1, cores // n) for n in (1, 2, 4)}
    assert cpu["ranks_share_cores"] == {str(n): n > cores for n in (1, 2, 4)}
    if sys.platform == "linux":
        assert cpu["numa_node_count"] >= 1 and cpu["sockets"] >= 1, found.unavailable
        assert sum(node["cpus"] or 0 for node in cpu["numa_nodes"]) >= cores or cpu["topology_source"] == "lscpu"


def test_preflight_command_on_cpu(tmp_path):
    out = tmp_path / "preflight.json"
    env = {**os.environ, "PYTHONPATH": str(REPO / "workflow"), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TIER1_GPUS", None)
    subprocess.run([sys.executable, "-m", "tier1.stages.preflight", "--world-sizes", "1", "2", "4", "--out", str(out)],
                   check=True, env=env, capture_output=True, text=True)
    record = PreflightRecord.read(out)
    assert record.stage == "preflight" and record.world_sizes == [1, 2, 4]
    assert record.backend == "gloo" and record.gpu is None
    assert "no GPU visible" in record.unavailable["gpu"]
    assert record.cpu["cores_available"] == available_cores()
    assert record.git_revision and record.hardware and record.libraries and record.started_at and record.finished_at
    assert 0 < record.work_s < 60  # the inspection, for the report's pipeline overhead


@pytest.mark.gpu
def test_preflight_on_gpus():
    record = preflight.collect([1])
    gpu = record.gpu
    assert gpu is not None and gpu["count"] >= 1, record.unavailable
    first = next(d for d in gpu["devices"] if d["used_by_jobs"])
    assert first["name"] and first["uuid"].startswith("GPU-") and first["memory_total_bytes"] > 0
    assert first["clocks_mhz"]["sm_max"] > 0 and first["pcie"]["width_max"] > 0
    assert first["nvlink_links_up"] is not None
    assert gpu["nccl_version"] and gpu["driver_version"] and gpu["cuda_runtime_version"]
    assert gpu["peer_access"]["matrix"][0][0] is None
