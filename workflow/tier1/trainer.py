"""One training run: seeded global batches, each rank's slice, gradient caching for accumulation."""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass, field

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from tier1 import distributed
from tier1.comm_timing import AllreduceSpan, timed_allreduce
from tier1.config import Tier1Config
from tier1.distributed import Context
from tier1.loss import in_batch_negatives_loss
from tier1.evaluation.sharding import collate
from tier1.model import SentenceEncoder
from tier1.tokenize import token_ids


class PairEncoder(torch.nn.Module):
    """Encodes anchors and positives in one forward, so DDP sees one forward per backward."""

    def __init__(self, encoder: SentenceEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, anchors: dict, positives: dict) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(**anchors), self.encoder(**positives)


def global_batches(n_pairs: int, global_batch: int, seed: int, epoch: int) -> list[list[int]]:
    """The epoch's global batches: the same for every world size (drop_last keeps them equal)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(n_pairs, generator=g).tolist()
    return [order[i: i + global_batch] for i in range(0, n_pairs - global_batch + 1, global_batch)]


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def linear_warmup_decay(step: int, warmup: int, total: int) -> float:
    """Learning-rate factor: linear warm-up over `warmup` steps, then linear decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def parameter_checksum(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class StepTimes:
    data: list[float] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)
    optimizer: list[float] = field(default_factory=list)
    step: list[float] = field(default_factory=list)
    allreduce_span: list[float] = field(default_factory=list)


class Trainer:
    def __init__(self, cfg: Tier1Config, ctx: Context, encoder: SentenceEncoder, tokenizer,
                 pairs: list[dict[str, str]], token_cache: dict | None = None):
        """`token_cache` holds the pairs' ids from the tokenize stage; without it they are
        tokenised here, once."""
        self.cfg, self.ctx, self.tokenizer, self.pairs = cfg, ctx, tokenizer, pairs
        if token_cache is None:
            token_cache = {"anchor": token_ids(tokenizer, [p["anchor"] for p in pairs], cfg.max_seq_length),
                           "positive": token_ids(tokenizer, [p["positive"] for p in pairs], cfg.max_seq_length)}
        elif token_cache.get("train_ids") != [p["id"] for p in pairs]:
            raise ValueError("the token cache was built from other training pairs: rerun the tokenize stage")
        self.anchor_ids, self.positive_ids = token_cache["anchor"], token_cache["positive"]
        self.world = ctx.world_size
        self.global_batch = cfg.global_batch(self.world)
        self.per_device = cfg.per_device_batch(self.world)
        self.accum = cfg.grad_accum_steps
        if len(pairs) < self.global_batch:
            raise ValueError(f"{len(pairs)} training pairs are fewer than one global batch of {self.global_batch}")
        self.steps_per_epoch = len(pairs) // self.global_batch
        self.total_steps = self.steps_per_epoch * cfg.num_epochs
        self.encoder = encoder.to(ctx.device)
        pair_model = PairEncoder(self.encoder)
        self.model = (
            DDP(pair_model, device_ids=[ctx.device] if ctx.device.type == "cuda" else None)
            if ctx.distributed else pair_model
        )
        self.allreduce = AllreduceSpan()
        if ctx.distributed:
            self.model.register_comm_hook(self.allreduce, timed_allreduce)
        self.autocast_dtype = resolve_dtype(cfg.precision, ctx.device)
        self.optimizer = self._make_optimizer()
        warmup = int(cfg.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: linear_warmup_decay(s, warmup, self.total_steps))
        self.step = 0
        self.samples_seen = 0  # by this rank
        self.times = StepTimes()

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = self.encoder.parameters()
        if self.cfg.extra.get("optimizer", "adamw") == "sgd":
            return torch.optim.SGD(params, lr=self.cfg.learning_rate)
        return torch.optim.AdamW(params, lr=self.cfg.learning_rate, weight_decay=self.cfg.weight_decay)

    # -- data -------------------------------------------------------------------------------
    def local_slice(self, global_indices: list[int]) -> list[int]:
        r = self.ctx.rank
        return global_indices[r * self.per_device: (r + 1) * self.per_device]

    def _tokens(self, indices: list[int]) -> tuple[dict, dict]:
        pad = self.tokenizer.pad_token_id

        def batch(ids):
            return {k: v.to(self.ctx.device, non_blocking=True) for k, v in collate(ids, indices, pad).items()}

        return batch(self.anchor_ids), batch(self.positive_ids)

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.ctx.device.type, dtype=self.autocast_dtype)

    def _seed_dropout(self, micro: int) -> None:
        # Dropout noise derives from (seed, step, micro-batch, rank): a resumed run draws the
        # same masks as an uninterrupted one, and the cached re-forward repeats the first one.
        torch.manual_seed(self.cfg.seed + 7919 * (self.step * self.accum + micro) + 104729 * self.ctx.rank)

    # -- one optimisation step --------------------------------------------------------------
    def compute_gradients(self, global_indices: list[int]) -> float:
        """Forward and backward for one global batch; returns the global-batch loss."""
        t0 = time.perf_counter()
        local = self.local_slice(global_indices)
        micro = [local[i: i + self.per_device // self.accum] for i in range(0, self.per_device, self.per_device // self.accum)]
        tokens = [self._tokens(m) for m in micro]
        t1 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        if self.accum == 1:
            self._seed_dropout(0)
            with self._autocast():
                a, p = self.model(*tokens[0])
            loss = in_batch_negatives_loss(a, p, self.cfg.loss_scale, self.cfg.gather_embeddings)
            loss.backward()
        else:
            loss = self._cached_backward(tokens)
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize(self.ctx.device)
        t2 = time.perf_counter()
        self.times.data.append(t1 - t0)
        self.times.compute.append(t2 - t1)
        span = self.allreduce.take()
        if span is not None:
            self.times.allreduce_span.append(span)
        self.samples_seen += len(local)
        return self._global_mean(loss.detach())

    def _cached_backward(self, tokens: list[tuple[dict, dict]]) -> torch.Tensor:
        """Gradient accumulation that keeps the global batch's negatives.

        Micro-batches are first embedded without a graph; the loss over all of them gives the
        gradient of each embedding; each micro-batch is then embedded again with a graph and
        back-propagates its cached embedding gradients. The result equals the one-pass
        gradient, while activations are held for one micro-batch at a time.
        """
        anchors, positives = [], []
        with torch.no_grad(), self._autocast():
            for i, (a_tok, p_tok) in enumerate(tokens):
                self._seed_dropout(i)
                a, p = self.model(a_tok, p_tok)
                anchors.append(a)
                positives.append(p)
        a_all = torch.cat(anchors).requires_grad_()
        p_all = torch.cat(positives).requires_grad_()
        loss = in_batch_negatives_loss(a_all, p_all, self.cfg.loss_scale, self.cfg.gather_embeddings)
        loss.backward()
        a_grads, p_grads = a_all.grad.split([len(a) for a in anchors]), p_all.grad.split([len(p) for p in positives])
        for i, (a_tok, p_tok) in enumerate(tokens):
            last = i == len(tokens) - 1
            sync = contextlib.nullcontext() if last or not self.ctx.distributed else self.model.no_sync()
            with sync:
                self._seed_dropout(i)
                with self._autocast():
                    a, p = self.model(a_tok, p_tok)
                ((a * a_grads[i]).sum() + (p * p_grads[i]).sum()).backward()
        return loss

    def _global_mean(self, loss: torch.Tensor) -> float:
        if distributed.active():
            import torch.distributed as dist

            loss = loss.clone()
            dist.all_reduce(loss, op=dist.ReduceOp.SUM)
            loss /= self.world
        return float(loss.item())

    def apply_gradients(self) -> None:
        t0 = time.perf_counter()
        self.optimizer.step()
        self.scheduler.step()
        if self.ctx.device.type == "cuda":
            torch.cuda.synchronize(self.ctx.device)
        self.times.optimizer.append(time.perf_counter() - t0)
        self.step += 1

    def train_step(self, global_indices: list[int]) -> float:
        t0 = time.perf_counter()
        loss = self.compute_gradients(global_indices)
        self.apply_gradients()
        self.times.step.append(time.perf_counter() - t0)
        return loss

    def schedule(self) -> list[tuple[int, list[int]]]:
        """(epoch, global batch) for every step of the run, in order."""
        return [(e, b) for e in range(self.cfg.num_epochs)
                for b in global_batches(len(self.pairs), self.global_batch, self.cfg.seed, e)]

    # -- checkpoint state -------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": self.encoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict) -> None:
        self.encoder.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]


def median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def allreduce_seconds(numel: int, ctx: Context, repeats: int = 5) -> float | None:
    """Median time to all-reduce `numel` fp32 values: the gradient exchange of one step."""
    if not distributed.active():
        return None
    import torch.distributed as dist

    buf = torch.ones(numel, dtype=torch.float32, device=ctx.device)
    times = []
    for _ in range(repeats + 1):
        distributed.barrier()
        t0 = time.perf_counter()
        dist.all_reduce(buf)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize(ctx.device)
        times.append(time.perf_counter() - t0)
    return median(times[1:])
