"""Stage 6, probe: the largest training and encoding batch per device, found over out-of-memory.

    torchrun --standalone --nproc_per_node N -m tier1.stages.probe --config '<json>' \\
        --tokens TOKENS.safetensors --out PROBE.json

GPU only. On a CPU there is no device memory limit to find, so the file says "not applicable"
rather than inventing a number.

Trial batches hold real token ids from the tokenize stage's cache, padded as the real batches
are: a batch's memory depends on its padded width and its attention mask, not only on its size.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Callable
from pathlib import Path

import torch

from tier1.config import ProbeConfig
from tier1.encoder import model, token_cache
from tier1.encoder.token_cache import collate
from tier1.measure import clock
from tier1.measure.batch_search import SearchLog, attempt, largest_fitting, summarise
from tier1.records.probe import write_not_applicable, write_record
from tier1.runtime import cli, distributed, provenance
from tier1.runtime import device as devices
from tier1.runtime.cli import run_main
from tier1.runtime.distributed import Context
from tier1.training.step import PairEncoder, forward_backward

log = logging.getLogger("tier1.stages.probe")

# Fused attention kernels put the batch in a CUDA grid dimension, which is capped at 65535: a
# larger batch fails with a launch error, not an out-of-memory, so the search stops there.
KERNEL_BATCH_LIMIT = 65535
TRIAL_BATCHES = ("real token ids from the token cache, longest first, cycled: anchors and positives each padded "
                 "to their longest (as training pads each slice); the longest documents (evaluation sorts by "
                 "length, so its last batches are this worst case)")


@dataclasses.dataclass(frozen=True)
class TrialTokens:
    """Token ids the trial batches are cut from, each list longest first."""

    anchor: list[list[int]]
    positive: list[list[int]]
    corpus: list[list[int]]
    pad_id: int


def trial_tokens(cache: dict, pad_id: int) -> TrialTokens:
    """The cache's anchors, positives and documents, each sorted longest first (ties by index).

    A batch's shapes are set by its longest text, so every trial batch is then as wide as the
    widest real batch of its size can be. Anchors and positives are sorted separately: which
    anchor meets which positive changes the loss, not the memory.
    """
    def longest_first(ids: list[list[int]]) -> list[list[int]]:
        return [ids[i] for i in sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))]

    return TrialTokens(longest_first(cache["anchor"]), longest_first(cache["positive"]),
                       longest_first(cache["corpus"]), pad_id)


def _cycled(n_rows: int, b: int) -> list[int]:
    return [i % n_rows for i in range(b)]


def train_batch(tokens: TrialTokens, b: int) -> tuple[dict, dict]:
    """b pairs (cycling when b exceeds the pairs), anchors and positives each padded to their longest."""
    rows = _cycled(len(tokens.anchor), b)
    return collate(tokens.anchor, rows, tokens.pad_id), collate(tokens.positive, rows, tokens.pad_id)


def encode_batch(tokens: TrialTokens, b: int) -> dict:
    """The b longest documents (cycling when b exceeds the corpus), padded to the longest."""
    return collate(tokens.corpus, _cycled(len(tokens.corpus), b), tokens.pad_id)


def _width(ids: list[list[int]], b: int) -> int:
    return max(len(ids[i]) for i in range(min(b, len(ids)))) if b else 0


def agreed_fit(trial: Callable[[], object], b: int, search: SearchLog, device: torch.device,
               cleanup: Callable[[], object] = lambda: None) -> bool:
    """Run one trial of batch b; True only if it fitted on every rank (one all-reduced flag per decision).

    Whatever happened, `cleanup` runs and cached memory goes back to the device before the next trial.
    """
    def synchronized():
        trial()
        devices.synchronize(device)  # an asynchronous kernel error surfaces here, inside the trial

    failure = attempt(synchronized)
    cleanup()
    gc.collect()
    devices.free_cached(device)
    search.record(b, failure)
    if failure is not None:
        log.info("batch %d does not fit on rank %d: %s: %s", b, distributed.rank(), failure.kind, failure.message)
    return distributed.all_reduce_max(float(failure is not None), device) == 0.0


def probe(cfg: ProbeConfig, ctx: Context, cache: dict) -> dict:
    encoder, tokenizer = model.load(cfg.model, cfg.gradient_checkpointing, cfg.trust_remote_code, cfg.encoder)
    encoder = encoder.to(ctx.device)
    tokens = trial_tokens(cache, tokenizer.pad_token_id)
    pair_model = PairEncoder(encoder)
    dtype = devices.autocast_dtype(cfg.precision, ctx.device)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-9)

    def on_device(batch: dict) -> dict:
        return {k: v.to(ctx.device) for k, v in batch.items()}

    # A trial runs no collective: a rank that runs out of memory mid-step would otherwise leave
    # the others waiting in an all-gather. DDP's gradient buckets (one more copy of the
    # gradients) are held as a plain buffer instead, and the gathered negatives' extra scores
    # (b x N*b floats) are negligible beside the activations.
    buckets = torch.empty(sum(p.numel() for p in encoder.parameters()), device=ctx.device)

    train_log = SearchLog(KERNEL_BATCH_LIMIT)
    # Evaluation never encodes more documents at once than the corpus holds.
    encode_log = SearchLog(min(KERNEL_BATCH_LIMIT, len(tokens.corpus)))

    def train_step(b: int) -> bool:
        def run():
            anchors, positives = (on_device(t) for t in train_batch(tokens, b))
            forward_backward(pair_model, anchors, positives, dtype, cfg.loss_scale, gather=False)
            optimizer.step()
        return agreed_fit(run, b, train_log, ctx.device, cleanup=lambda: optimizer.zero_grad(set_to_none=True))

    def encode(b: int) -> bool:
        def run():
            with torch.inference_mode(), devices.autocast(ctx.device, dtype):
                encoder(**on_device(encode_batch(tokens, b))).float()
        return agreed_fit(run, b, encode_log, ctx.device)

    started = clock.now()  # the search only: loading the model and tokens is start-up
    train_found = largest_fitting(train_step, train_log.limit)
    encode_found = largest_fitting(encode, encode_log.limit)
    work_s = clock.now() - started
    del buckets
    train_search = summarise(distributed.all_gather_objects(train_log), train_found)
    train_search["padded_length"] = {"anchor": _width(tokens.anchor, train_found),
                                     "positive": _width(tokens.positive, train_found)}
    encode_search = summarise(distributed.all_gather_objects(encode_log), encode_found)
    encode_search["padded_length"] = _width(tokens.corpus, encode_found)
    return {"max_train_batch_per_device": train_found, "max_train_batch_global": train_found * ctx.world_size,
            "max_encode_batch_per_device": encode_found,
            "device_capacity_bytes": devices.capacity(ctx.device),
            "train_search": train_search, "encode_search": encode_search, "trial_batches": TRIAL_BATCHES,
            "not_applicable": None, "work_s": work_s, "encoder": model.identity(encoder, ctx.device)}


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--tokens", type=Path, required=True, help="the tokenize stage's cache (trial batches)")
    parser.add_argument("--out", type=Path, nargs="+", required=True,
                        help="the record to write; on a CPU one per --world-size, in the same order")
    parser.add_argument("--world-size", type=int, nargs="+", default=[1],
                        help="the world size each file stands for; on GPUs one, run on N ranks (tier1.runtime.launch --ranks "
                             "N); on a CPU one process records 'not applicable' for each")
    args = parser.parse_args(argv)
    if len(args.out) != len(args.world_size):
        parser.error(f"{len(args.out)} --out file(s) for {len(args.world_size)} --world-size value(s): give one each")
    with cli.stage(args, "probe") as run:
        cfg: ProbeConfig = run.cfg
        ctx = run.ctx
        started_at = provenance.utc_now()
        if ctx.device.type != "cuda":
            if ctx.is_main:
                write_not_applicable(args.out, args.world_size, dataclasses.asdict(cfg), started_at)
                log.info("probe: no GPU, not applicable (world sizes %s)", args.world_size)
            return
        if len(args.out) != 1:
            parser.error("on GPUs a probe launch stands for its own world size: one --out and --world-size")
        result = probe(cfg, ctx, token_cache.load(args.tokens, cfg.max_seq_length))
        if ctx.is_main:
            write_record(args.out[0], ctx.world_size, started_at, result, dataclasses.asdict(cfg))
            log.info("probe x%d: %s", ctx.world_size, result)

if __name__ == "__main__":
    run_main(main)
