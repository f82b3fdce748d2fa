"""Stage 5, evaluate: retrieval quality of one model, with encoding and top-k spread over ranks.

One process:
    python -m tier1.stages.evaluate --config '<json>' --model MODEL_DIR \
        --corpus CORPUS.jsonl --queries QUERIES.jsonl \
        --qrels QRELS.tsv --tokens TOKENS.safetensors \
        --metrics-out METRICS.json --run-out RUN.trec
N processes (each encodes its share of the corpus and ranks it; rank 0 merges):
    torchrun --standalone --nproc_per_node N -m tier1.stages.evaluate ...
The metrics are the same at any world size; only the time changes. Several models in one launch
(`--model A --metrics-out .. --run-out .. --model B ...`) share its start-up, and each is warmed up
and timed on its own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tier1 import layout
from tier1.config import EvalConfig, config_hash
from tier1.data.sources import BeirSet, read_beir_files
from tier1.encoder import model, shapes, token_cache
from tier1.encoder.model import CPU_WARM_LAYERS, first_layers
from tier1.encoder.packed_ids import PackedIds
from tier1.encoder.shapes import ShapeLog
from tier1.evaluation import metrics as ir_metrics
from tier1.evaluation import sharding, topk
from tier1.measure import clock, disturbance
from tier1.records import EvaluationRecord
from tier1.runtime import atomic, cli, distributed, provenance
from tier1.runtime import device as devices
from tier1.runtime.cli import progress, run_main
from tier1.runtime.distributed import Context
from tier1.runtime.provenance import available_cores
from tier1.training import buckets

log = logging.getLogger("tier1.stages.evaluate")
TOP_K = 100


def batch_tensors(packed: PackedIds, rows: list[int], pad_id: int, rungs: tuple[int, ...], device) -> tuple[dict, bool]:
    """A batch padded to the ladder's rung above its longest text, on `device` (from pinned
    memory without blocking on a GPU), and whether it holds padding."""
    longest = int(packed.lengths[rows].max())
    width = shapes.width(longest, rungs)
    ids, mask = packed.pad(np.asarray(rows), width, pad_id)
    tensors = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    return {k: devices.to_device(v, device) for k, v in tensors.items()}, int(packed.lengths[rows].min()) < width


def encode_share(encoder, packed, batches, share, pad_id, device, dtype, bar, rungs, seen: ShapeLog
                 ) -> tuple[list[int], torch.Tensor]:
    """Encode this rank's batches; returns (item indices, embeddings) in that order."""
    items, outs = [], []
    with torch.inference_mode(), devices.autocast(device, dtype):
        for b in share:
            batch, padded = batch_tensors(packed, batches[b], pad_id, rungs, device)
            seen.meet(tuple(batch["input_ids"].shape))
            outs.append(buckets.encode(encoder, batch, padded).float())
            items.extend(batches[b])
            bar.update(len(batches[b]))
    dim = encoder.transformer.config.hidden_size
    return items, torch.cat(outs) if outs else torch.empty(0, dim, device=device)


def plan_shapes(packed: PackedIds, batch_size: int, rungs: tuple[int, ...]) -> set[tuple[int, int]]:
    """The (rows, width) of every batch of `packed` (the plan is the same on every rank)."""
    lengths = packed.lengths
    return {(len(b), shapes.width(int(lengths[b].max()), rungs))
            for b in sharding.plan_batches(lengths.tolist(), batch_size)}


def encode_sharded(encoder, packed, batch_size, pad_id, ctx: Context, dtype, desc, rungs, seen: ShapeLog
                   ) -> tuple[list[int], torch.Tensor, dict]:
    lengths = packed.lengths.tolist()
    batches = sharding.plan_batches(lengths, batch_size)
    share = sharding.deal(batches, lengths, ctx.world_size)[ctx.rank]
    n_mine = sum(len(batches[b]) for b in share)
    bar = progress(n_mine, f"{desc} (rank {ctx.rank})", enabled=ctx.is_main)
    t0 = clock.now()
    items, emb = encode_share(encoder, packed, batches, share, pad_id, ctx.device, dtype, bar, rungs, seen)
    devices.synchronize(ctx.device)
    bar.close()
    stats = {"items": len(items), "batches": len(share), "tokens": sum(lengths[i] for i in items),
             "seconds": clock.now() - t0}
    return items, emb, stats


def gather_rows(items: list[int], emb: torch.Tensor, total: int) -> torch.Tensor:
    """Every rank's (indices, rows) assembled into one matrix in index order, on every rank."""
    out = torch.empty(total, emb.shape[1], device=emb.device)
    for idx, rows in distributed.all_gather_objects((items, emb.cpu())):
        if idx:
            out[torch.tensor(idx, device=emb.device)] = rows.to(emb.device)
    return out


def warm_up(encoder, packed: list[PackedIds], batch_size: int, pad_id: int, ctx: Context, dtype, rungs,
            seen: ShapeLog) -> None:
    """Before the timed window: one untimed forward of every (rows, width) shape the queries' and
    the corpus's batches have, and one collective. On a GPU through the whole model (kernel choice
    and set-up per shape, CUDA context, cuBLAS handles); on a CPU, where first calls cost little,
    through the embeddings and the first layer only (every layer has the same shapes)."""
    layers = None if devices.first_calls_cost(ctx.device) else CPU_WARM_LAYERS
    todo = sorted(set().union(*(plan_shapes(p, batch_size, rungs) for p in packed if len(p))))
    transformer = getattr(encoder, "transformer", None)
    with torch.inference_mode(), \
            (first_layers(transformer, layers) if transformer is not None else contextlib.nullcontext()):
        buckets.warm_shapes(encoder, todo, pad_id, ctx.device, dtype, backward=False)
    seen.warm(todo)
    devices.synchronize(ctx.device)
    distributed.all_gather_objects(ctx.rank)


def evaluate_once(encoder, tokenizer, corpus_tokens, query_tokens, exclude, cfg: EvalConfig, ctx: Context, dtype,
                  seen: ShapeLog):
    """`corpus_tokens`, `query_tokens`: PackedIds. Run inside a timed window (clock.window),
    which holds the barriers at both ends."""
    pad = tokenizer.pad_token_id
    rungs = cfg.widths(ctx.device.type)
    t0 = clock.now()
    q_items, q_emb, q_stats = encode_sharded(encoder, query_tokens, cfg.eval_batch_size, pad, ctx, dtype, "queries",
                                             rungs, seen)
    queries = gather_rows(q_items, q_emb, len(query_tokens))
    d_items, d_emb, d_stats = encode_sharded(encoder, corpus_tokens, cfg.eval_batch_size, pad, ctx, dtype, "corpus",
                                             rungs, seen)
    t1 = clock.now()
    best = topk.search(queries, d_emb, torch.tensor(d_items, dtype=torch.long), TOP_K,
                       cfg.corpus_chunk_size, exclude.to(ctx.device))
    t2 = clock.synced(ctx.device)
    shards = distributed.all_gather_objects((best[0].cpu(), best[1].cpu()))
    merged = topk.empty(len(query_tokens), TOP_K, torch.device("cpu"))
    for shard in shards:
        merged = topk.merge(merged, shard, TOP_K)
    t3 = clock.now()
    rank_stats = {"rank": ctx.rank, "queries": q_stats, "corpus": d_stats, "encode_s": t1 - t0,
                  "search_s": t2 - t1, "merge_s": t3 - t2}
    return merged, rank_stats


@dataclass(frozen=True)
class Outputs:
    """Where an evaluation job writes: the metrics record and the TREC run file."""

    metrics: Path
    run: Path

    @classmethod
    def in_folder(cls, folder: Path) -> Outputs:
        """The files of an evaluation's folder, named as in a run's eval/<model>/ws<w>/."""
        return cls(folder / layout.EVAL_METRICS, folder / layout.EVAL_RUN)


def evaluate(model_spec: str, beir: BeirSet, cfg: EvalConfig, ctx: Context, out: Outputs,
             cache: dict | None = None) -> EvaluationRecord | None:
    """`cache`: the tokenize stage's token cache (token_cache.load), read once for every model of
    a launch; without it the texts are tokenised here."""
    started_at = provenance.utc_now()
    t_load = clock.now()
    encoder, tokenizer = model.load(model_spec, trust_remote_code=cfg.trust_remote_code, encoder=cfg.encoder)
    encoder = encoder.to(ctx.device).eval()
    dtype = devices.autocast_dtype(cfg.precision, ctx.device)
    doc_ids = sorted(beir.corpus)  # index order = id order, so index ties break by document id
    query_ids = sorted(beir.queries)
    doc_pos = {d: i for i, d in enumerate(doc_ids)}
    if cache is not None:
        if cache["doc_ids"] != doc_ids or cache["query_ids"] != query_ids:
            raise ValueError("the token cache was built from another evaluation set: rerun the tokenize stage")
        corpus_tokens, query_tokens = cache["corpus"], cache["queries"]
    else:
        n = cfg.max_seq_length
        corpus_tokens = token_cache.token_ids(tokenizer, [token_cache.doc_text(beir.corpus[d]) for d in doc_ids], n)
        query_tokens = token_cache.token_ids(tokenizer, [beir.queries[q] for q in query_ids], n)
    exclude = torch.tensor([doc_pos.get(q, -1) if cfg.ignore_identical_ids else -1 for q in query_ids])
    corpus_tokens, query_tokens = PackedIds.from_rows(corpus_tokens), PackedIds.from_rows(query_tokens)
    load_s = clock.now() - t_load

    shape_log, rungs = ShapeLog(), cfg.widths(ctx.device.type)
    warm_up(encoder, [query_tokens, corpus_tokens], cfg.eval_batch_size, tokenizer.pad_token_id, ctx, dtype, rungs,
            shape_log)
    devices.reset_peak(ctx.device)
    walls, rank_stats, merged = [], None, None
    windows = []
    for _ in range(cfg.repeats):
        with clock.window(ctx.device) as window:
            merged, rank_stats = evaluate_once(encoder, tokenizer, corpus_tokens, query_tokens, exclude, cfg, ctx,
                                               dtype, shape_log)
        walls.append(window.seconds)
        windows.append(window.disturbance)
    rank_stats["window"] = disturbance.combine(windows)
    rank_stats["shapes"] = shape_log.record(rungs, shapes.note(devices.first_calls_cost(ctx.device)))
    rank_stats["peak_memory"] = devices.peak_memory(ctx.device)
    rank_stats["device_name"] = devices.device_name(ctx.device)
    rank_stats["threads"] = ctx.threads
    ranks = distributed.all_gather_objects(rank_stats)
    if not ctx.is_main:
        return None

    scores, index = merged
    ranking: dict[str, list[tuple[str, float]]] = {}
    for qi, qid in enumerate(query_ids):
        ranking[qid] = [(doc_ids[j], float(s)) for s, j in zip(scores[qi].tolist(), index[qi].tolist())
                        if j != topk.NO_DOC]
    per_q = ir_metrics.per_query({q: [d for d, _ in r] for q, r in ranking.items()}, beir.qrels)
    wall = statistics.median(walls)
    settings = dataclasses.asdict(cfg)
    disturbed_by, marks = disturbance.judge([r["window"] for r in ranks], available_cores())
    result = EvaluationRecord(
        stage="evaluate",
        model=model_spec,
        model_head=encoder.head.record(),  # the pooling that ran, the folder's own max_seq_length
        max_seq_length=cfg.max_seq_length,
        world_size=ctx.world_size,
        started_at=started_at,
        metrics=ir_metrics.mean(per_q),
        ndcg10_per_query={q: m["ndcg@10"] for q, m in per_q.items()},
        queries=len(query_ids),
        queries_judged=len(per_q),
        documents=len(doc_ids),
        wall_time_s=wall,
        wall_times_s=walls,
        documents_per_s=len(doc_ids) / wall if wall else None,
        timings_s={
            "load": load_s,
            "encode_per_rank": [r["encode_s"] for r in ranks],
            "similarity_topk_per_rank": [r["search_s"] for r in ranks],
            "merge": ranks[0]["merge_s"],
        },
        precision=devices.dtype_name(dtype),
        shapes=shapes.combine([r["shapes"] for r in ranks]),
        encoder=model.identity(encoder, ctx.device),
        disturbance=disturbed_by,
        marks=marks,
        ranks=ranks,
        config=settings,
        **provenance.stamp(config_hash(settings)),
        finished_at=None,
    )
    run_lines = "".join(
        f"{qid} Q0 {doc} {rank} {score:.6f} tier1\n"
        for qid, docs in ranking.items() for rank, (doc, score) in enumerate(docs, start=1)
    )
    atomic.write_text(out.run, run_lines)
    result = dataclasses.replace(result, finished_at=provenance.utc_now())
    result.write(out.metrics)
    log.info("%s on %d rank(s): nDCG@10 %.4f, %.1f s (%.0f documents/s)", model_spec, ctx.world_size,
             result.metrics["ndcg@10"], wall, result.documents_per_s or 0)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__)
    parser.add_argument("--model", action="append", default=None,
                        help="model folder or spec (default: the config's model); repeat it, with a --metrics-out "
                             "and --run-out each, to evaluate several models in one launch, each timed on its own")
    parser.add_argument("--corpus", type=Path, required=True, help="BEIR corpus.jsonl")
    parser.add_argument("--queries", type=Path, required=True, help="BEIR queries.jsonl")
    parser.add_argument("--qrels", type=Path, required=True, help="BEIR qrels (tsv)")
    parser.add_argument("--tokens", type=Path, default=None, help="token ids from the tokenize stage")
    parser.add_argument("--metrics-out", type=Path, action="append", required=True, help="metrics.json")
    parser.add_argument("--run-out", type=Path, action="append", required=True, help="TREC run file")
    args = parser.parse_args(argv)
    models = args.model or [None]
    if not len(models) == len(args.metrics_out) == len(args.run_out):
        parser.error(f"{len(models)} --model, {len(args.metrics_out)} --metrics-out and {len(args.run_out)} "
                     "--run-out: give one of each per model")
    with cli.stage(args, "evaluate") as run:
        cfg: EvalConfig = run.cfg
        beir = read_beir_files(args.corpus, args.queries, args.qrels)
        cache = token_cache.load(args.tokens, cfg.max_seq_length) if args.tokens else None
        for spec, metrics_out, run_out in zip(models, args.metrics_out, args.run_out):
            evaluate(spec or cfg.model, beir, cfg, run.ctx, Outputs(metrics_out, run_out), cache)


if __name__ == "__main__":
    run_main(main)
