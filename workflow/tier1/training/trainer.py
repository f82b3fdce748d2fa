"""The Trainer: handed its model, optimizer, scheduler, batch plan and token ids, it runs the steps.

Gradient accumulation caches embeddings so the micro-batches' negatives still span the global
batch. The Trainer is stateful (step, samples, loss rows), so a checkpoint of its state resumes
the run where it stopped.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from tier1.config import TrainConfig
from tier1.encoder.model import first_layers
from tier1.encoder.packed_ids import PackedIds
from tier1.encoder.shapes import ShapeLog
from tier1.encoder.token_cache import PairTokens
from tier1.measure import clock, flops, host_allocated
from tier1.runtime import device as devices
from tier1.runtime import distributed
from tier1.runtime.distributed import Context
from tier1.training import buckets, parallel
from tier1.training.buckets import LengthBuckets, bucket, planned_parts
from tier1.training.comm_hook import AllreduceSpan
from tier1.training.loss import in_batch_negatives_loss
from tier1.training.plan import BatchPlan
from tier1.training.step import forward_backward

# Steps run again without gradient sync after training (measure_unsynced): few, so that the
# default CPU pipeline stays about as fast, enough for a median.
UNSYNCED_STEPS = 3
# Steps between reads of the loss (and of the step clocks) from the device: a read waits for the
# device, so the step itself asks for none; the loss rows are complete after every read.
READ_EVERY = 25


@dataclass
class StepTimes:
    data: list[float] = field(default_factory=list)
    compute: list[float] = field(default_factory=list)
    optimizer: list[float] = field(default_factory=list)
    step: list[float] = field(default_factory=list)
    allreduce_span: list[float] = field(default_factory=list)


@dataclass
class Prepared:
    """One step's batches, collated and on their way to the device, with what they count."""

    tokens: list[tuple[LengthBuckets, LengthBuckets]]
    local: list[int]
    real: int
    padded: int
    flops: float
    shapes: list[tuple[int, int]]
    signatures: set[tuple[int, int, bool]]  # (rows, width, masked) of the encoder calls (warm_shapes)
    host_s: float


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
        self.first_gradient_norm: float | None = None  # the first step's, read in the warm-up (None after a resume)
        self.loss_rows: list[dict] = []
        self.last_loss: float | None = None  # the latest loss read from the device (progress display)
        self.times = StepTimes()
        self.rungs = cfg.widths(ctx.device.type)  # the padded widths (tier1.encoder.shapes)
        self.n_parts = cfg.length_parts(ctx.device.type)
        self.packed = (PackedIds.from_rows(tokens.anchor), PackedIds.from_rows(tokens.positive))
        self.shape_log = ShapeLog()
        self.compiled = cfg.compiled(ctx.device.type)
        self.signatures_met: set[tuple[int, int, bool]] = set()  # encoder calls run or warmed (warm_shapes)
        self.in_window = False  # inside fit: a shape met for the first time here was not warmed
        # step marks in the device's timeline, read only every READ_EVERY steps (no wait inside a step)
        self.clock = clock.Marks(ctx.device.type)
        self._unread: list[tuple[dict, torch.Tensor]] = []  # loss rows whose loss is still on the device
        self._marks: list[tuple] = []  # (data_s, start, computed, applied, allreduce span) per unread step

    # -- data -------------------------------------------------------------------------------
    def prepare(self, global_indices: list[int]) -> Prepared:
        """This rank's micro-batches of a step: collated (numpy), padded to the ladder and copied
        to the device without blocking, so on a GPU the next step's batch is made while the
        current step runs. Counted (tokens, FLOPs, shapes) only when the step runs."""
        t0 = clock.now()
        local = self.plan.local_slice(global_indices, self.ctx.rank)
        tokens, real, padded, work, met, signatures = [], 0, 0, 0.0, [], set()
        for micro in self.plan.micro_batches(local):
            pair = []
            for ids in self.packed:
                cpu = bucket(ids, micro, self.tokens.pad_id, self.n_parts, self.rungs)
                real += cpu.real_tokens
                for (sequences, width), part_padded in zip(cpu.shapes, cpu.padded):
                    padded += sequences * width
                    work += flops.train_flops(self.non_embedding_params, *self.shape, width, sequences)
                    met.append((sequences, width))
                    signatures.add((sequences, width, buckets.masked(part_padded, self.ctx.device)))
                pair.append(cpu.to(self.ctx.device))
            tokens.append(tuple(pair))
        return Prepared(tokens, local, real, padded, work, met, signatures, clock.now() - t0)

    def planned_shapes(self, steps: list[list[int]]) -> set[tuple[int, int]]:
        """The (rows, width) shapes these steps' batches will have on this rank, from the text
        lengths alone."""
        return set().union(*(self.shapes_of(global_indices, self.ctx.rank) for global_indices in steps))

    def shapes_of(self, global_indices: list[int], rank: int) -> set[tuple[int, int]]:
        """The (rows, width) shapes one step's batch has on `rank`, from the text lengths alone
        (the buckets `prepare` builds)."""
        return {(rows, width) for rows, width, _ in self._parts_of(global_indices, rank)}

    def positions_of(self, global_indices: list[int]) -> int:
        """Padded token positions of one step's batch over all ranks, from the text lengths alone
        (the same on every rank, so all of them warm up on the same step)."""
        return sum(rows * width for rank in range(self.plan.world_size)
                   for rows, width, _ in self._parts_of(global_indices, rank))

    def planned_signatures(self, steps: list[list[int]]) -> set[tuple[int, int, bool]]:
        """The (rows, width, masked) encoder calls these steps make on this rank: under
        torch.compile each is a graph of its own (a CPU drops the mask of a part without padding)."""
        return {(rows, width, buckets.masked(padded, self.ctx.device)) for global_indices in steps
                for rows, width, padded in self._parts_of(global_indices, self.ctx.rank)}

    def compiled_graphs(self) -> int:
        """The graphs a compiled encoder needs for the whole plan: one per encoder call signature
        and grad mode (tier1.training.builder raises dynamo's recompile limit to it)."""
        return len(self.planned_signatures([b for _, b in self.plan.schedule()])) * len(self._grad_modes())

    def _grad_modes(self) -> tuple[bool, ...]:
        # a compiled accumulation step first embeds every micro-batch without a graph (_cached_backward):
        # another graph per signature
        return (True, False) if self.compiled and self.plan.grad_accum_steps > 1 else (True,)

    def _parts_of(self, global_indices: list[int], rank: int) -> list[tuple[int, int, bool]]:
        """(rows, width, padded) of every part `prepare` builds of one step's batch on `rank`,
        repeats kept."""
        return [part for micro in self.plan.micro_batches(self.plan.local_slice(global_indices, rank))
                for ids in self.packed
                for part in planned_parts(ids.lengths[np.asarray(micro, dtype=np.int64)], self.n_parts, self.rungs)]

    def warm_shapes(self, layers: int | None = None) -> None:
        """One untimed forward and backward of every encoder call the remaining steps will make
        ((rows, width, masked), through the step's own path), so none is first met inside the
        timed window (on a GPU: kernel choice and set-up per shape; under torch.compile: a graph
        per call signature). Leaves no trace: gradients dropped, RNG state restored, no optimizer
        step. `layers`: through the embeddings and only the first `layers` layers: every layer has
        the same shapes, so that meets every (operation, shape) of the step at a fraction of its
        cost (the CPU's choice); a compiled encoder is warmed whole, as a cut one is another graph."""
        remaining = [b for _, b in self.plan.schedule()[self.step:]]
        planned = self.planned_signatures(remaining)
        todo = sorted(planned - self.signatures_met)  # the warm-up step made some
        # a sharded model gathers parameters for every pass (a collective): every rank warms the same
        sharded = parallel.is_sharded(self.model)
        if sharded:
            todo = sorted(set().union(*map(set, distributed.all_gather_objects(todo))))
        # an accumulation step embeds every micro-batch once without a graph first (_cached_backward)
        grad_modes = self._grad_modes()
        if self.compiled:
            layers = None
        device = self.ctx.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                first_layers(self.encoder.transformer, layers):
            buckets.warm_parts(self.encoder, todo, self.tokens.pad_id, device, self.autocast_dtype, grad_modes,
                               root=self.model if sharded else None)
        self.optimizer.zero_grad(set_to_none=True)
        devices.synchronize(device)
        self.signatures_met |= planned
        self.shape_log.warm(self.planned_shapes(remaining))  # those the warm-up step met are warm too

    def _seed_dropout(self, micro: int) -> None:
        # Dropout noise derives from (seed, step, micro-batch, rank, stream): a resumed run draws
        # the same masks as an uninterrupted one, the cached re-forward repeats the first one, and
        # gradient checkpointing's recompute replays them (it restores the RNG state).
        accum = self.plan.grad_accum_steps
        seed = (self.cfg.seed + 7919 * (self.step * accum + micro) + 104729 * self.ctx.rank
                + 15485863 * self.dropout_stream)
        # the generators dropout draws from, not torch.manual_seed: on a device not yet started
        # (CUDA on a CPU run; MTIA and XPU everywhere) that queues a call with its formatted stack
        # trace, every step (0.7 ms of a 30 ms CPU step under cProfile)
        torch.default_generator.manual_seed(seed)
        if self.ctx.device.type == "cuda":
            torch.cuda.manual_seed_all(seed)

    # -- one optimisation step --------------------------------------------------------------
    def compute_gradients(self, global_indices: list[int], sync: bool = True,
                          prepared: Prepared | None = None) -> torch.Tensor:
        """Forward and backward for one global batch; returns this rank's loss, on the device (no
        read, no wait: `read_losses` gives the global-batch values). `sync=False` skips DDP's
        gradient all-reduce (`no_sync()`): each rank keeps its own gradients. Only the step
        decomposition uses it, after training."""
        batch = prepared if prepared is not None else self.prepare(global_indices)
        start = self.clock.mark()
        self.optimizer.zero_grad(set_to_none=True)
        skip_sync = parallel.without_sync(self.model, self.ctx) if not sync else contextlib.nullcontext()
        with skip_sync, parallel.gathered_for_step(self.model):
            if len(batch.tokens) == 1:
                self._seed_dropout(0)
                loss = forward_backward(self.model, *batch.tokens[0], self.autocast_dtype, self.cfg.loss_scale,
                                        self.cfg.gather_embeddings)
            else:
                loss = self._cached_backward(batch.tokens)
        computed = self.clock.mark()
        self._marks.append([batch.host_s, start, computed, None, self.allreduce.take_marks()])
        self.samples_seen += len(batch.local)
        self.tokens_seen["real"] += batch.real
        self.tokens_seen["padded"] += batch.padded
        self.flops += batch.flops
        self.signatures_met |= batch.signatures
        for shape in batch.shapes:
            self.shape_log.meet(shape, timed=self.in_window)
        return loss.detach()

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
        self.note_host_memory()
        a_grads, p_grads = a_all.grad.split([len(a) for a in anchors]), p_all.grad.split([len(p) for p in positives])
        for i, (a_tok, p_tok) in enumerate(tokens):
            last = i == len(tokens) - 1
            sync = contextlib.nullcontext() if last else parallel.without_sync(self.model, self.ctx)
            with sync:
                self._seed_dropout(i)
                with devices.autocast(self.ctx.device, self.autocast_dtype):
                    a, p = self.model(a_tok, p_tok)
                self.note_host_memory()
                ((a * a_grads[i]).sum() + (p * p_grads[i]).sum()).backward()
            self.note_host_memory()
        return loss

    def apply_gradients(self) -> None:
        self.optimizer.step()
        self.note_host_memory()
        self.scheduler.step()
        self._marks[-1][3] = self.clock.mark()
        self.step += 1

    def note_host_memory(self) -> None:
        """On a CPU, a reading of the bytes in use into the peak (tier1.measure.host_allocated)."""
        if self.ctx.device.type == "cpu":
            host_allocated.note()

    def read_times(self) -> None:
        """The unread steps' phase times into `times` (on a GPU: one wait, for the last mark)."""
        for data_s, start, computed, applied, span in self._marks:
            compute = self.clock.seconds(start, computed)
            self.times.data.append(data_s)
            self.times.compute.append(compute)
            if applied is not None:
                optimizer = self.clock.seconds(computed, applied)
                self.times.optimizer.append(optimizer)
                # on a CPU the batch was made on the step's own clock; on a GPU, during the previous step
                self.times.step.append(compute + optimizer + (data_s if not self.clock.cuda else 0.0))
            seconds = AllreduceSpan.seconds(span)
            if seconds is not None:
                self.times.allreduce_span.append(seconds)
        self._marks = []

    def read_losses(self, losses: list[torch.Tensor]) -> list[float]:
        """Rank losses (device tensors) as global-batch losses: one all-reduce and one read."""
        if not losses:
            return []
        return distributed.all_reduce_mean(torch.stack(losses).float()).tolist()

    def read(self) -> None:
        """Fill the loss rows and step times kept on the device since the last read; every rank
        calls it at the same steps (the loss read is a collective). Device memory is read here
        too, never inside a step."""
        values = self.read_losses([loss for _, loss in self._unread])
        for (row, _), value in zip(self._unread, values):
            row["loss"] = value
        if values:
            self.last_loss = values[-1]
        self._unread = []
        self.read_times()
        used = devices.used_memory(self.ctx.device)
        if used is not None:
            self.peak_used_memory = max(used, self.peak_used_memory or 0)

    def train_step(self, global_indices: list[int], prepared: Prepared | None = None) -> torch.Tensor:
        """One optimisation step; this rank's loss, still on the device."""
        loss = self.compute_gradients(global_indices, prepared=prepared)
        self.apply_gradients()
        return loss

    def warm_up(self) -> None:
        """One untimed step on the largest remaining batch, leaving no trace: the first call's costs
        (CUDA context, cuBLAS handles, kernel selection, the first collectives, the optimizer's state
        and first update; on a CPU the first touch of the memory a step uses) stay out of the timed
        window. Parameters and optimizer state are put back bit for bit, in place: the state the
        step allocated stays allocated (`_restore_optimizer`), so the first timed step creates none.
        A fresh run first computes the first step's gradient and keeps its norm (`gradient_norm`);
        a resumed one follows the step with DDP's second forward and backward (`_rebuild_ddp_buckets`).
        The run's parameters, optimizer state, counters and dropout masks are those of a run without it."""
        remaining = [b for _, b in self.plan.schedule()[self.step:]]
        if not remaining:
            return
        # the batch with the most padded positions: the memory the largest step uses (every rank
        # the same batch, so that the ranks' collectives match)
        batch = max(remaining, key=self.positions_of)
        counters = (self.samples_seen, dict(self.tokens_seen), self.flops)
        first = self.step == 0
        if first:
            # the first step's gradient (the same batch, dropout masks and parameters), read here
            # rather than inside a step: the check of its scale across strategies and world sizes.
            # Under DDP this is the first backward, so the warm-up step's forward regroups the buckets.
            self.compute_gradients(self.plan.schedule()[0][1])
            self.first_gradient_norm = self.gradient_norm()
        parameters = [p.detach().clone() for p in self.encoder.parameters()]
        state = {p: {k: v.clone() if torch.is_tensor(v) else copy.deepcopy(v) for k, v in s.items()}
                 for p, s in self.optimizer.state.items()}
        self.compute_gradients(batch)
        self.optimizer.step()
        with torch.no_grad():
            for p, saved in zip(self.encoder.parameters(), parameters):
                p.copy_(saved)
        self._restore_optimizer(state)
        if self.ctx.distributed and not parallel.is_sharded(self.model) and not first:  # FSDP2 has no buckets
            self._rebuild_ddp_buckets(min(remaining, key=self.positions_of))
        self.optimizer.zero_grad(set_to_none=True)
        self._marks = []
        self.samples_seen, self.tokens_seen, self.flops = counters
        self.times = StepTimes()
        devices.synchronize(self.ctx.device)
        distributed.barrier()

    def gradient_norm(self) -> float:
        """The L2 norm of the whole gradient the last backward left (all-reduced or reduce-scattered):
        the same value on every rank. Under FSDP2 a collective, each rank holding a shard of it.
        AdamW's update hardly depends on the gradient's scale, so losses alone would not show a
        gradient summed where it should be averaged; this norm does."""
        grads = [parallel.local(p.grad).float() for p in self.encoder.parameters() if p.grad is not None]
        squares = sum((g.pow(2).sum() for g in grads), torch.zeros((), device=self.ctx.device))
        if parallel.is_sharded(self.model):
            squares = distributed.all_reduce_sum(squares)
        return float(squares.sqrt())

    def _restore_optimizer(self, saved: dict) -> None:
        """The optimizer state as `saved` (per parameter, taken before the warm-up step), written
        into the tensors the step left, so none is allocated again in the first timed step. State
        the step created is zeroed where zeros are what the optimizer starts from: Adam and AdamW
        begin each parameter at step 0 with zero moments (torch.optim.adam's _init_group), so a
        zeroed state updates exactly as an empty one. Any other optimizer's new state is dropped."""
        zero_start = isinstance(self.optimizer, (torch.optim.Adam, torch.optim.AdamW))
        with torch.no_grad():
            for p in list(self.optimizer.state):
                state, before = self.optimizer.state[p], saved.get(p)
                if before is None and not zero_start:
                    del self.optimizer.state[p]
                    continue
                for key, value in state.items():
                    if before is not None and not torch.is_tensor(value):
                        state[key] = before[key]
                    elif before is not None:
                        value.copy_(before[key])
                    else:
                        value.zero_()

    def _rebuild_ddp_buckets(self, batch: list[int]) -> None:
        """DDP regroups its gradient buckets in the order gradients became ready in the first
        backward, and does it in the forward after that one: without this pass, in the first timed
        step. A forward and backward on the smallest remaining batch (every rank the same) puts the
        rebuild, and the rebuilt buckets' first all-reduce, before the window; only gradients
        result, and they are dropped."""
        self.compute_gradients(batch)

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
        met = dict(self.shape_log.met)
        self.times = StepTimes()
        cuda = [self.ctx.device] if self.ctx.device.type == "cuda" else []
        distributed.barrier()
        try:
            with torch.random.fork_rng(devices=cuda):
                for i in indices:
                    self.step = i  # the step's own dropout masks (_seed_dropout)
                    self.compute_gradients(schedule[i][1], sync=False)
            self.read_times()
            unsynced = list(self.times.compute)
        finally:
            self.optimizer.zero_grad(set_to_none=True)
            self._marks = []
            self.shape_log.met = met
            self.step, self.samples_seen, self.tokens_seen, self.flops, self.times = saved
        distributed.barrier()
        return {"step_indices": indices, "synced_s": list(synced), "unsynced_s": unsynced}

    # -- the loop ---------------------------------------------------------------------------
    def fit(self, after_step: Callable[[Trainer], None] | None = None) -> None:
        """Run the plan's remaining steps; `after_step` (checkpoints, progress) follows each.
        The step asks the device for nothing: its loss stays there until `read`, every
        READ_EVERY steps, before each checkpoint and at the end; the next step's batch is made
        while the device runs the current one."""
        remaining = self.plan.schedule()[self.step:]
        self.in_window = True
        try:
            prepared = self.prepare(remaining[0][1]) if remaining else None
            for i, (epoch, batch) in enumerate(remaining):
                loss = self.train_step(batch, prepared)
                prepared = self.prepare(remaining[i + 1][1]) if i + 1 < len(remaining) else None
                row = {"step": self.step, "epoch": epoch, "samples_seen": self.step * self.plan.global_batch,
                       "loss": None, "lr": self.scheduler.get_last_lr()[0]}
                self.loss_rows.append(row)
                self._unread.append((row, loss))
                every = self.cfg.checkpoint_every
                if self.step % READ_EVERY == 0 or self.done or (every and self.step % every == 0):
                    self.read()
                if after_step is not None:
                    after_step(self)
        finally:
            self.in_window = False
        self.read()

    @property
    def done(self) -> bool:
        return self.step == self.plan.total_steps

    # -- checkpoint state -------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The run's state, whole (under FSDP2 gathered: every rank calls it; only the main rank,
        which saves it, keeps the model and optimizer states)."""
        keep = self.ctx.is_main
        return {
            "model": parallel.full_model_state(self.encoder, self.model, keep),
            "optimizer": parallel.full_optimizer_state(self.encoder, self.model, self.optimizer, keep),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "loss_rows": self.loss_rows,
        }

    def load_state_dict(self, state: dict) -> None:
        parallel.load_full_state(self.encoder, self.model, self.optimizer, state["model"], state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        self.loss_rows = list(state["loss_rows"])
