"""The data-parallel strategy: the one place where the model is wrapped, and what differs between
the wraps afterwards (skipping the gradient sync, gathering the full state, the bytes a rank holds).

- `ddp`: every rank holds the whole model, its gradients and the optimizer's state; gradients are
  all-reduced in buckets during backward (tier1.training.comm_hook times them).
- `fsdp`: FSDP2 (`torch.distributed.fsdp.fully_shard`). Each transformer layer is a unit of its
  own and the root (the pair encoder: embeddings, the last norm) another, so every rank holds one
  shard (1/N) of each parameter, of its gradient and of the optimizer's state. A unit's parameters
  are all-gathered at its first forward of the step and kept until the step's last backward is done
  (`reshard_after_forward=False`, and `gathered_for_step` around the step), then freed, and its
  gradients reduce-scattered. A training step calls the encoder several times (anchors and
  positives, each in its length parts), each call with a backward of its own: freeing after each
  forward or each backward would gather every layer again for the next, 4 to 8 all-gathers a step
  where one does. The default model at 2 ranks, FSDP2's step against DDP's: side by side
  (docs/reproduce/fsdp_step.py, 1 part a side) 1.32x freeing after each call, 1.13x kept; through
  the pipeline (2 length parts a side) 1.68x freeing after each call (marked disturbed), 1.31x kept
  through forward only, 1.20x kept through the step (clean windows). The cost is the whole
  parameters (not their gradients, not the optimizer's state) held during the step; between
  steps every rank holds its shards only. On bf16 the parameters are gathered in bf16 and the
  gradients reduced in fp32 (`MixedPrecisionPolicy`).
  The order follows torchtitan's parallelize: activation checkpointing (the encoder's own switch,
  set when it is loaded), then torch.compile (in place, tier1.training.builder), then sharding.

One rank is never wrapped: both strategies train the plain model there, so a world size of 1 is the
same baseline for both. The trainer never asks which strategy runs; it calls these functions.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from tier1.config import PARALLELISM as STRATEGIES
from tier1.config import PARALLELISM_NAMES as NAMES  # noqa: F401 (the names the report prints)
from tier1.runtime.distributed import Context
from tier1.training.comm_hook import AllreduceSpan, timed_allreduce

DEFAULT = "ddp"


def layers_of(transformer: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer's repeated blocks, each of which FSDP2 shards as a unit: BERT's
    `encoder.layer` (tier1's BERT and transformers' BertModel), a decoder's `layers` (Qwen2, Llama)."""
    for path in ("encoder.layer", "layers", "h", "transformer.h", "model.layers"):
        stack = transformer
        for name in path.split("."):
            stack = getattr(stack, name, None)
        if isinstance(stack, torch.nn.ModuleList) and len(stack):
            return list(stack)
    raise ValueError(f"{type(transformer).__name__}: no stack of layers (encoder.layer, layers, h) to shard")


def wrap(pair_model: torch.nn.Module, ctx: Context, allreduce: AllreduceSpan, strategy: str,
         dtype: torch.dtype | None) -> torch.nn.Module:
    """`pair_model` (tier1.training.step.PairEncoder) wrapped for `strategy` when there are several
    ranks; as it is on one. DDP returns a wrapper; FSDP2 shards the module in place and returns it."""
    if strategy not in STRATEGIES:
        raise ValueError(f"parallelism: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if not ctx.distributed:
        return pair_model
    if strategy == "ddp":
        model = DDP(pair_model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
        model.register_comm_hook(allreduce, timed_allreduce)
        return model
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype is not None \
        else MixedPrecisionPolicy()
    # every unit kept gathered from its first forward of the step (the module docstring says why;
    # the report's largest-model projection counts the gathered parameters)
    for layer in layers_of(pair_model.encoder.transformer):
        fully_shard(layer, mp_policy=policy, reshard_after_forward=False)
    fully_shard(pair_model, mp_policy=policy, reshard_after_forward=False)
    return pair_model


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def gathered_for_step(model: torch.nn.Module):
    """Under FSDP2, a context in which each layer stays gathered from its first forward to the end
    of the step's last backward, then is freed: the step's several encoder calls each run a backward
    through the layer, and freeing it after the first would gather it again for the next (measured:
    4 all-gathers a layer a step with 2 length parts a side). Nothing changes for an unsharded model."""
    if not is_sharded(model):
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.set_reshard_after_backward(False, recurse=False)
    try:
        yield
    finally:
        for unit in units:
            unit.set_reshard_after_backward(True, recurse=False)
            unit.reshard()  # before the optimizer updates the shards: no stale gathered copy is kept


def without_sync(model: torch.nn.Module, ctx: Context):
    """A context in which backward leaves each rank its own gradients (no all-reduce, no
    reduce-scatter): DDP's `no_sync()`, FSDP2's `set_requires_gradient_sync(False)`."""
    if not ctx.distributed:
        return contextlib.nullcontext()
    if is_sharded(model):
        return _fsdp_no_sync(model)
    return model.no_sync()


@contextlib.contextmanager
def _fsdp_no_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


def local(tensor: torch.Tensor) -> torch.Tensor:
    """The part of `tensor` this rank holds (a DTensor's shard; a plain tensor as it is)."""
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def whole(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` whole: a DTensor's shards all-gathered (a collective), a plain tensor as it is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def checksum_fold(h, name: str, tensor: torch.Tensor) -> None:
    """Fold one named tensor into the hash `h` (tier1.training.record.parameter_checksum's way)."""
    h.update(name.encode())
    h.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())


def full_model_state(encoder: torch.nn.Module, model: torch.nn.Module, keep: bool = True,
                     digest=None) -> dict[str, torch.Tensor]:
    """The encoder's state dict with every tensor whole, as one process would hold it (the names
    and tensors its own state-dict hooks give, e.g. tier1's BERT's query/key/value split).

    Under FSDP2 a collective: every rank calls it, in the same (name) order. Each tensor is gathered
    in turn, moved to host memory and kept only where `keep` (the rank that saves; the others get
    an empty dict), so no rank holds a second whole model, and none on its GPU. `digest` (a hashlib
    object), when given, takes every whole tensor by name order on every rank: the checksum of the
    gathered state, which each rank can give without keeping it."""
    if not is_sharded(model):
        state = encoder.state_dict()
        if digest is not None:
            for name, tensor in sorted(state.items()):
                checksum_fold(digest, name, tensor)
        return state if keep else {}
    out = {}
    with torch.no_grad():
        for name, tensor in sorted(encoder.state_dict().items()):
            full = whole(tensor).detach().cpu()
            if digest is not None:
                checksum_fold(digest, name, full)
            if keep:
                out[name] = full
    return out


def full_optimizer_state(encoder: torch.nn.Module, model: torch.nn.Module, optimizer, keep: bool = True) -> dict:
    """The optimizer's state dict; under FSDP2 (a collective) each parameter's state whole and keyed
    by the parameter's name, beside the parameters themselves whole (`parameters`, by the same names:
    load_full_state puts them back without the module's state-dict hooks), in host memory and kept
    only where `keep` (an empty dict elsewhere), as full_model_state."""
    if not is_sharded(model):
        return optimizer.state_dict() if keep else {}
    names = {p: name for name, p in encoder.named_parameters()}

    def gathered(t):
        full = whole(t).detach().cpu()
        return full if keep else None

    with torch.no_grad():
        state = {names[p]: {k: gathered(v) if torch.is_tensor(v) else v for k, v in s.items()}
                 for p, s in sorted(optimizer.state.items(), key=lambda item: names[item[0]])}
        parameters = {name: gathered(p) for name, p in sorted(encoder.named_parameters())}
    if not keep:
        return {}
    return {"param_groups": [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups],
            "state": state, "parameters": parameters}


def _shard_like(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` split as `like` is (this rank's shard of it, taken locally: every rank holds `full`)."""
    if not hasattr(like, "device_mesh"):
        return full.to(like.device)
    from torch.distributed.tensor import distribute_tensor

    return distribute_tensor(full.to(like.to_local().device), like.device_mesh, like.placements, src_data_rank=None)


def load_full_state(encoder: torch.nn.Module, model: torch.nn.Module, optimizer, model_state: dict,
                    optimizer_state: dict) -> None:
    """Put back what full_model_state and full_optimizer_state gave (every rank holds the whole
    state: under FSDP2 each keeps its shard of it)."""
    if not is_sharded(model):
        encoder.load_state_dict(model_state)
        optimizer.load_state_dict(optimizer_state)
        return
    with torch.no_grad():
        for name, p in encoder.named_parameters():
            p.copy_(_shard_like(optimizer_state["parameters"][name], p))
        for name, b in encoder.named_buffers():
            if name in model_state:
                b.copy_(model_state[name])
        for group, saved in zip(optimizer.param_groups, optimizer_state["param_groups"]):
            group.update(saved)
        params = dict(encoder.named_parameters())
        for name, saved in optimizer_state["state"].items():
            p = params[name]
            optimizer.state[p] = {k: _shard_like(v, p) if torch.is_tensor(v) and v.dim() else v
                                  for k, v in saved.items()}


def _bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in (local(t) for t in tensors) if t is not None)


def model_state_bytes(encoder: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """The bytes of the model states this rank holds, from its own tensors: parameters, their
    gradients (counted at their parameters' size and dtype whether or not a backward left them
    allocated: the step holds them at its peak) and the optimizer's state (AdamW's two moments;
    its step counters too)."""
    params = list(encoder.parameters())
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return {"parameters": _bytes(params), "gradients": _bytes(p for p in params if p.requires_grad),
            "optimizer": _bytes(state)}
