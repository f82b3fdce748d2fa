"""tier1's side: its Trainer and its evaluation encoder, as the pipeline runs them."""

from __future__ import annotations

import statistics

import torch

from tier1.bench import floor
from tier1.bench.workload import Workload, bench_device, encode_texts, fingerprint, short_precision, training_pairs
from tier1.config import TrainConfig
from tier1.encoder import model, shapes
from tier1.encoder.packed_ids import PackedIds
from tier1.encoder.shapes import ShapeLog
from tier1.encoder.token_cache import pair_tokens, token_ids
from tier1.evaluation import sharding
from tier1.measure import clock
from tier1.runtime import device as devices
from tier1.runtime.distributed import Context
from tier1.stages.evaluate import batch_tensors, warm_up
from tier1.training import buckets
from tier1.training.builder import build_trainer


def _context(w: Workload) -> Context:
    device = bench_device()
    torch.set_num_threads(w.threads)
    return Context(0, 1, 0, 1, device, w.threads)


def train(w: Workload) -> dict:
    """Steps/s over steps 2..N (step 1 takes the first-call costs on both sides), with the
    tokenisation of the pairs those steps train on counted in, as sentence-transformers' collator
    counts its own: the pipeline tokenises once per run (its tokenize stage), so that work is timed
    apart and added to the window. On a GPU every shape the steps meet is warmed first; the device
    is waited for at the end of step 1 and of step N only."""
    ctx = _context(w)
    pairs = training_pairs(w)
    tokenizer = model.load_tokenizer(w.model, encoder=w.encoder)
    ids = pair_tokens(tokenizer, pairs, w.max_seq_length)
    cfg = TrainConfig(model=w.model, trust_remote_code=False, encoder=w.encoder, num_epochs=1, batch_size=w.batch_size,
                      scaling="strong", grad_accum_steps=1, length_buckets=w.length_buckets, pad_widths=w.pad_widths, compile="auto",
                      optimizer="adamw",
                      learning_rate=w.learning_rate, warmup_ratio=w.warmup_ratio,
                      weight_decay=w.weight_decay, loss_scale=w.loss_scale, gather_embeddings=True,
                      max_seq_length=w.max_seq_length, precision=w.precision, gradient_checkpointing=False,
                      seed=w.seed, checkpoint_every=0, repeats=1)
    torch.manual_seed(w.seed)
    encoder, _ = model.load(w.model, encoder=w.encoder)
    trainer = build_trainer(cfg, ctx, encoder, ids)
    timed_pairs = [pairs[i] for _, batch in trainer.plan.schedule()[1:] for i in batch]
    t0 = clock.now()
    pair_tokens(tokenizer, timed_pairs, w.max_seq_length)
    tokenize_s = clock.now() - t0
    if devices.first_calls_cost(ctx.device):
        trainer.warm_up()
        trainer.warm_shapes()
    ends: list[float] = []

    def after_step(t):
        ends.append(clock.synced(ctx.device) if t.step in (1, t.plan.total_steps) else clock.now())

    trainer.fit(after_step)
    window = ends[-1] - ends[0]
    timed = window + tokenize_s
    shapes = trainer.shape_log.record(trainer.rungs, "")
    host = {}
    if w.recipe == "host_overhead":  # the same batches' arithmetic alone, as the step feeds it to the encoder
        batches = [trainer.prepare(indices).tokens[0] for _, indices in trainer.plan.schedule()]
        floor_s = floor.floor_steps(lambda a, p: buckets.embed(trainer.encoder, a, p), trainer.encoder.parameters(),
                                    batches, w.loss_scale, w.learning_rate, w.weight_decay, ctx.device)
        host = floor.host_fields(ends, floor_s, tokenize_s, ctx.device)
    return {
        "steps_timed": len(ends) - 1, "seconds": timed, "steps_per_s": (len(ends) - 1) / timed, **host,
        "steps_seconds": window, "tokenize_s": tokenize_s, "losses": [r["loss"] for r in trainer.loss_rows],
        "model_flops_per_step": trainer.flops / len(ends),
        "shapes": {"met": len(shapes["met"]), "warmed": len(shapes["warmed"]),
                   "first_met_in_window": shapes["first_met_in_window"]},
        "encoder": model.identity(trainer.encoder, ctx.device),
        "inputs": fingerprint(w, [p["anchor"] for p in pairs], [p["positive"] for p in pairs], encode_texts(w),
                              str(ctx.device), torch.get_num_threads(), short_precision(trainer.autocast_dtype),
                              learning_rate=w.learning_rate, weight_decay=w.weight_decay,
                              warmup_steps=int(w.warmup_ratio * w.steps), loss_scale=w.loss_scale, grad_clip=None),
    }


def _encode(encoder, ids: list[list[int]], pad_id: int, w: Workload, device, dtype) -> torch.Tensor:
    """Length-sorted batches padded to the ladder, as the evaluation stage encodes them;
    embeddings kept on the device until the end."""
    packed = PackedIds.from_rows(ids)
    rungs = shapes.ladder(w.pad_widths, w.max_seq_length, device.type)
    order, outs = [], []
    with torch.inference_mode(), devices.autocast(device, dtype):
        for batch in sharding.plan_batches(packed.lengths.tolist(), w.eval_batch_size):
            tensors, padded = batch_tensors(packed, batch, pad_id, rungs, device)
            outs.append(buckets.encode(encoder, tensors, padded))
            order.extend(batch)
        emb = torch.empty(len(ids), outs[0].shape[1], device=device)
        emb[torch.tensor(order, device=device)] = torch.cat(outs).float()
    return emb


def encode(w: Workload) -> tuple[dict, torch.Tensor]:
    """Texts/s of the evaluation encoder, which reads token ids the tokenize stage cached once per
    run (`texts_per_s`), and with that tokenisation counted in (`texts_per_s_with_tokenize`),
    each the median of `w.encode_passes` timed passes; the embeddings in text order."""
    ctx = _context(w)
    texts = encode_texts(w)
    encoder, tokenizer = model.load(w.model, encoder=w.encoder)
    encoder = encoder.to(ctx.device).eval()
    dtype = devices.autocast_dtype(w.precision, ctx.device)
    # first-call costs, untimed: on a GPU every shape the timed encoding meets (as the evaluation
    # stage warms them), on a CPU one batch
    if devices.first_calls_cost(ctx.device):
        packed = PackedIds.from_rows(token_ids(tokenizer, texts, w.max_seq_length))
        warm_up(encoder, [packed], w.eval_batch_size, tokenizer.pad_token_id, ctx, dtype,
                shapes.ladder(w.pad_widths, w.max_seq_length, ctx.device.type), ShapeLog())
    else:
        warm = token_ids(tokenizer, texts[: w.eval_batch_size], w.max_seq_length)
        _encode(encoder, warm, tokenizer.pad_token_id, w, ctx.device, dtype)
    tokenize, encode_s = [], []
    for _ in range(w.encode_passes):
        t0 = clock.synced(ctx.device)
        ids = token_ids(tokenizer, texts, w.max_seq_length)
        t1 = clock.now()
        emb = _encode(encoder, ids, tokenizer.pad_token_id, w, ctx.device, dtype)
        t2 = clock.synced(ctx.device)
        tokenize.append(t1 - t0)
        encode_s.append(t2 - t1)
    median, with_tokenize = statistics.median(encode_s), statistics.median([a + b for a, b in zip(tokenize, encode_s)])
    return {"texts": len(texts), "passes": w.encode_passes, "tokenize_s": statistics.median(tokenize),
            "encode_s": median, "encode_s_all": encode_s, "texts_per_s": len(texts) / median,
            "texts_per_s_with_tokenize": len(texts) / with_tokenize, "precision": short_precision(dtype)}, emb.cpu()
