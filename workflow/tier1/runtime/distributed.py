"""Process-group set-up and the collectives tier1 needs; one code path for CPU and GPU.

Launched by torchrun, RANK / WORLD_SIZE / LOCAL_RANK come from the environment; launched as a
plain process there is no group and every collective here is the identity.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from tier1.runtime import host_memory, provenance
from tier1.runtime.gpus import SHARE_GPU_ENV
from tier1.runtime.lifeline import die_with_parent
from tier1.runtime.provenance import available_cores

log = logging.getLogger("tier1.runtime.distributed")


@dataclass(frozen=True)
class Context:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: torch.device
    threads: int
    # every rank of the node on its one GPU, over gloo (share_gpu: a rehearsal, never a speedup)
    shared_gpu: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


COLLECTIVE_TIMEOUT_ENV = "TIER1_COLLECTIVE_TIMEOUT_S"
# "1": a job planned for GPUs runs on the CPU where CUDA sees none, instead of refusing (the GPU
# machine's rehearsal on a CPU, scripts/gpu_rehearsal.sh; never set by the workflow)
REHEARSE_ON_CPU_ENV = "TIER1_REHEARSE_ON_CPU"
DEFAULT_COLLECTIVE_TIMEOUT_S = 45.0


def setup(timeout_s: float | None = None) -> Context:
    """Pick the device from LOCAL_RANK, cap threads per rank, join the process group if any.

    `timeout_s` bounds every collective: a peer that hangs or is stopped ends the job after it
    instead of after PyTorch's default of 10 minutes (TIER1_COLLECTIVE_TIMEOUT_S overrides)."""
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
    shared = os.environ.get(SHARE_GPU_ENV) == "1"
    if torch.cuda.is_available():
        if shared:
            # the shared-GPU rehearsal: every rank on the one GPU, over gloo (NCCL refuses two
            # ranks on one device); it runs the multi-rank CUDA path and measures no speedup
            device = torch.device("cuda", local_rank % torch.cuda.device_count())
            torch.cuda.set_device(device)
        elif local_world > torch.cuda.device_count():
            # NCCL refuses two ranks on one GPU, and a shared GPU measures nothing per device.
            raise RuntimeError(f"{local_world} ranks on this node but {torch.cuda.device_count()} GPU(s) visible: "
                               f"ranks never share a GPU; run at most {torch.cuda.device_count()} ranks per node "
                               f"(or share_gpu: true for a rehearsal that is not a speedup)")
        if not shared:
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
    elif os.environ.get("TIER1_REQUIRE_GPU") == "1" and os.environ.get(REHEARSE_ON_CPU_ENV) != "1":
        raise RuntimeError("this job was planned for GPUs but CUDA sees none (check the driver and "
                           "CUDA_VISIBLE_DEVICES); refusing to run it on the CPU")
    else:
        if os.environ.get("TIER1_REQUIRE_GPU") == "1" and rank == 0:
            print(f"{REHEARSE_ON_CPU_ENV}=1: a job planned for GPUs runs on the CPU (a rehearsal; "
                  "its records name the CPU)", file=sys.stderr)
        device = torch.device("cpu")
    host_memory.keep_freed_memory()  # each step reuses the host memory the first one touched
    # Ranks on one machine share its cores; more threads than cores makes every rank slower.
    threads = max(1, available_cores() // local_world)
    torch.set_num_threads(threads)
    if world_size > 1 and not dist.is_initialized():
        if "TORCHELASTIC_RUN_ID" in os.environ:
            die_with_parent(signal.SIGKILL)  # a rank never outlives its torchrun
        if timeout_s is None:
            timeout_s = float(os.environ.get(COLLECTIVE_TIMEOUT_ENV, DEFAULT_COLLECTIVE_TIMEOUT_S))
        backend = "nccl" if device.type == "cuda" and not shared else "gloo"
        _init(backend, timeout_s, device)
    return Context(rank, world_size, local_rank, local_world, device, threads, shared and device.type == "cuda")


_local_peers: dict[int, int] = {}  # rank -> pid of the other ranks on this machine


def _init(backend: str, timeout_s: float, device: torch.device) -> None:
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s),
                            device_id=device if device.type == "cuda" else None)
    me = (socket.gethostname(), os.getpid())
    _local_peers.clear()
    everyone = all_gather_objects(me)
    for r, (host, pid) in enumerate(everyone):
        if host == me[0] and pid != me[1]:
            _local_peers[r] = pid
    provenance.note_nodes([host for host, _ in everyone], backend)  # a job across nodes: what ran between them


def end_local_peers(announce: Callable[[str], None]) -> None:
    """After this rank failed (a collective timed out, a peer died): kill the job's other ranks on
    this machine, so a stopped or hung one cannot hold the job open while torchrun waits for it
    to stop by itself. `announce` is told first which ranks it ends, which were gone already and
    which were stopped (a stopped peer is the usual culprit): said before the kills, the line is in
    the log whenever a kill was sent, and the failure screen tells these SIGKILLs from one by the
    kernel's out-of-memory killer."""
    to_end, gone, stopped = {}, [], []
    for r, pid in _local_peers.items():
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            state = None  # reaped already, or not Linux
        if state in (None, "Z", "X"):  # a zombie: dead, not yet reaped by its torchrun
            gone.append(r)
            continue
        to_end[r] = pid
        if state == "T":
            stopped.append(r)
    said = [f"killing rank{'s' if len(to_end) > 1 else ''} {', '.join(map(str, to_end))}" if to_end else "",
            *(f"rank {r} was gone already" for r in gone), *(f"rank {r} was stopped" for r in stopped)]
    announce("; ".join(p for p in said if p) or "no other rank on this machine")
    for pid in to_end.values():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass  # gone since


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def barrier() -> None:
    if active():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sends each rank the summed gradient of its own slice.

    The forward concatenates every rank's tensor. Every rank's loss may depend on every slice,
    so the gradient of the local slice is the sum over ranks of the gradients they computed for
    it: an all-reduce (sum) of the incoming gradient, then this rank's slice. (All-reduce rather
    than reduce-scatter because gloo has no reduce-scatter.)
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.n = dist.get_rank(), tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n: (ctx.rank + 1) * ctx.n]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-sized tensors from all ranks, keeping autograd. Identity without a group."""
    if not active():
        return tensor
    return _GatherWithGrad.apply(tensor)


def all_gather_objects(obj):
    """Every rank's `obj` as a list ordered by rank; [obj] without a group."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over ranks (a new tensor); `tensor` itself without a group."""
    if not active():
        return tensor
    total = tensor.clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    """The mean of `tensor` over ranks (a new tensor); `tensor` itself without a group."""
    return all_reduce_sum(tensor) / dist.get_world_size() if active() else tensor


def all_reduce_max(value: float, device: torch.device) -> float:
    if not active():
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def broadcast_object(obj, src: int = 0):
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
