"""The Trainer: handed its model, optimizer, scheduler, batch plan and token ids, it runs the steps.

Gradient accumulation caches embeddings so the micro-batches' negatives still span the global
batch. The Trainer is stateful (step, samples, loss rows), so a checkpoint of its state resumes
the run where it stopped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tier1 import device as devices
from tier1 import distributed, flops
from tier1.config import TrainConfig
from tier1.distributed import Context
from tier1.token_cache import PairTokens
from tier1.training.buckets import LengthBuckets, bucket
from tier1.training.comm_hook import AllreduceSpan
from tier1.training.loss import in_batch_negatives_loss
from tier1.training.plan import BatchPlan
from tier1.training.step import forward_backward

# Steps run again without gradient sync after training (measure_unsynced): few, so that the
# default CPU pipeline stays about as fast, enough for a median.
UNSYNCED_STEPS = 3


@dataclass
class StepTimes:
    data: list[float] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)
    optimizer: list[float] = field(default_factory=list)
    step: list[float] = field(default_factory=list)
    allreduce_span: list[float] = field(default_factory=list)


class Trainer:
    def __init__(self, cfg: TrainConfig, ctx: Context, encoder: torch.nn.Module, model: torch.nn.Module,
                 optimizer: torch.optim.Optimizer, scheduler, plan: BatchPlan, tokens: PairTokens,
                 allreduce: AllreduceSpan, dtype: torch.dtype | None, dropout_stream: int = 0):
        """`encoder` is the bare model (checkpoints, checksums); `model` is what runs the step
        (the pair encoder, wrapped in DDP when there are several ranks)."""
        self.cfg, self.ctx, self.encoder, self.model = cfg, ctx, encoder, model
        self.optimizer, self.scheduler, self.plan, self.tokens = optimizer, scheduler, plan, tokens
        self.allreduce, self.autocast_dtype, self.dropout_stream = allreduce, dtype, dropout_stream
        self.step = 0
        self.samples_seen = 0  # by this rank
        self.tokens_seen = {"real": 0, "padded": 0}  # by this rank: text tokens, and with padding
        self.flops = 0.0  # model FLOPs this rank's batches cost (forward and backward, padded)
        self.shape = flops.layers_and_hidden(encoder)
        self.non_embedding_params = flops.non_embedding_parameters(encoder)
        self.peak_used_memory: int | None = None  # whole-device bytes in use after a step (GPU)
        self.loss_rows: list[dict] = []
        self.times = StepTimes()

    # -- data -------------------------------------------------------------------------------
    def _tokens(self, indices: list[int]) -> tuple[LengthBuckets, LengthBuckets]:
        def batch(ids):
            cpu = bucket(ids, indices, self.tokens.pad_id, self.cfg.length_parts(self.ctx.device.type))
            self.tokens_seen["real"] += cpu.real_tokens
            for sequences, width in cpu.shapes:
                self.tokens_seen["padded"] += sequences * width
                self.flops += flops.train_flops(self.non_embedding_params, *self.shape, width, sequences)
            return cpu.to(self.ctx.device)

        return batch(self.tokens.anchor), batch(self.tokens.positive)

    def _seed_dropout(self, micro: int) -> None:
        # Dropout noise derives from (seed, step, micro-batch, rank, stream): a resumed run draws
        # the same masks as an uninterrupted one, the cached re-forward repeats the first one, and
        # gradient checkpointing's recompute replays them (it restores the RNG state).
        accum = self.plan.grad_accum_steps
        torch.manual_seed(self.cfg.seed + 7919 * (self.step * accum + micro) + 104729 * self.ctx.rank
                          + 15485863 * self.dropout_stream)

    # -- one optimisation step --------------------------------------------------------------
    def compute_gradients(self, global_indices: list[int], sync: bool = True) -> float:
        """Forward and backward for one global batch; returns the global-batch loss.
        `sync=False` skips DDP's gradient all-reduce (`no_sync()`): each rank keeps its own
        gradients. Only the step decomposition uses it, after training."""
        t0 = time.perf_counter()
        local = self.plan.local_slice(global_indices, self.ctx.rank)
        tokens = [self._tokens(m) for m in self.plan.micro_batches(local)]
        t1 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        skip_sync = self.model.no_sync() if not sync and self.ctx.distributed else contextlib.nullcontext()
        with skip_sync:
            if len(tokens) == 1:
                self._seed_dropout(0)
                loss = forward_backward(self.model, *tokens[0], self.autocast_dtype, self.cfg.loss_scale,
                                        self.cfg.gather_embeddings)
            else:
                loss = self._cached_backward(tokens)
        devices.synchronize(self.ctx.device)
        t2 = time.perf_counter()
        self.times.data.append(t1 - t0)
        self.times.compute.append(t2 - t1)
        span = self.allreduce.take()
        if span is not None:
            self.times.allreduce_span.append(span)
        self.samples_seen += len(local)
        return float(distributed.all_reduce_mean(loss.detach()).item())

    def _cached_backward(self, tokens: list[tuple[LengthBuckets, LengthBuckets]]) -> torch.Tensor:
        """Gradient accumulation that keeps the global batch's negatives.

        Micro-batches are first embedded without a graph; the loss over all of them gives the
        gradient of each embedding; each micro-batch is then embedded again with a graph and
        back-propagates its cached embedding gradients. The result equals the one-pass
        gradient, while activations are held for one micro-batch at a time.
        """
        anchors, positives = [], []
        with torch.no_grad(), devices.autocast(self.ctx.device, self.autocast_dtype):
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
                with devices.autocast(self.ctx.device, self.autocast_dtype):
                    a, p = self.model(a_tok, p_tok)
                ((a * a_grads[i]).sum() + (p * p_grads[i]).sum()).backward()
        return loss

    def apply_gradients(self) -> None:
        t0 = time.perf_counter()
        self.optimizer.step()
        self.scheduler.step()
        devices.synchronize(self.ctx.device)
        self.times.optimizer.append(time.perf_counter() - t0)
        self.step += 1

    def train_step(self, global_indices: list[int]) -> float:
        t0 = time.perf_counter()
        loss = self.compute_gradients(global_indices)
        self.apply_gradients()
        self.times.step.append(time.perf_counter() - t0)
        used = devices.used_memory(self.ctx.device)
        if used is not None:
            self.peak_used_memory = max(used, self.peak_used_memory or 0)
        return loss

    def warm_up(self) -> None:
        """One untimed forward and backward on the next step's batch, leaving no trace: the
        first call's costs (CUDA context, cuBLAS handles, kernel selection, DDP's bucket set-up,
        the first collectives) stay out of the timed window. No optimizer step, so the run's
        parameters, optimizer state, counters and dropout masks are those of a run without it."""
        schedule = self.plan.schedule()
        if self.step >= len(schedule):
            return
        counters = (self.samples_seen, dict(self.tokens_seen), self.flops)
        self.compute_gradients(schedule[self.step][1])
        self.optimizer.zero_grad(set_to_none=True)
        self.samples_seen, self.tokens_seen, self.flops = counters
        self.times = StepTimes()
        distributed.barrier()

    def measure_unsynced(self, steps: int = UNSYNCED_STEPS, indices: list[int] | None = None) -> dict[str, list]:
        """After `fit`: the last `steps` steps' forward and backward again, on the same batches
        with the same dropout masks, with DDP's gradient sync skipped. Beside the same steps'
        timed (synced) forward and backward, that gives compute and exposed communication.

        Outside the timed window and leaving no trace: no optimizer step, the gradients are
        dropped, and the counters, step times and RNG state are put back. One rank has no sync to
        skip: its unsynced times are its synced ones and nothing runs again."""
        first_timed = self.step - len(self.times.compute)
        if indices is None:  # the last steps; training.warm_steps picks steps whose shapes were met before
            k = min(steps, len(self.times.compute))
            indices = list(range(self.step - k, self.step))
        indices = [i for i in indices if first_timed <= i < self.step]
        k = len(indices)
        synced = [self.times.compute[i - first_timed] for i in indices]
        if not self.ctx.distributed or k == 0:
            return {"step_indices": indices, "synced_s": list(synced), "unsynced_s": list(synced)}
        schedule = self.plan.schedule()
        saved = (self.step, self.samples_seen, dict(self.tokens_seen), self.flops, self.times)
        self.times = StepTimes()
        cuda = [self.ctx.device] if self.ctx.device.type == "cuda" else []
        distributed.barrier()
        try:
            with torch.random.fork_rng(devices=cuda):
                for i in indices:
                    self.step = i  # the step's own dropout masks (_seed_dropout)
                    self.compute_gradients(schedule[i][1], sync=False)
            unsynced = list(self.times.compute)
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            self.step, self.samples_seen, self.tokens_seen, self.flops, self.times = saved
        distributed.barrier()
        return {"step_indices": indices, "synced_s": list(synced), "unsynced_s": unsynced}

    # -- the loop ---------------------------------------------------------------------------
    def fit(self, after_step: Callable[[Trainer], None] | None = None) -> None:
        """Run the plan's remaining steps; `after_step` (checkpoints, progress) follows each."""
        for epoch, batch in self.plan.schedule()[self.step:]:
            loss = self.train_step(batch)
            self.loss_rows.append({"step": self.step, "epoch": epoch,
                                   "samples_seen": self.step * self.plan.global_batch,
                                   "loss": loss, "lr": self.scheduler.get_last_lr()[0]})
            if after_step is not None:
                after_step(self)

    @property
    def done(self) -> bool:
        return self.step == self.plan.total_steps

    # -- checkpoint state -------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "model": self.encoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "loss_rows": self.loss_rows,
        }

    def load_state_dict(self, state: dict) -> None:
        self.encoder.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        self.loss_rows = list(state["loss_rows"])
