"""torch.compile of the encoder in training: the first step's cost and the steps after, one
process per setting (docs/performance.md).

    python docs/reproduce/compile_measure.py MODEL on|off STEPS TRAIN_JSONL
"""

import statistics
import sys
import time
from pathlib import Path

from tier1.config import Tier1Config, TrainConfig
from tier1.data.sources import read_jsonl
from tier1.encoder import model
from tier1.encoder.token_cache import pair_tokens
from tier1.runtime import distributed
from tier1.training.builder import build_trainer

spec, mode, steps, data = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
pairs = read_jsonl(data)[:32 * steps]
cfg = Tier1Config.from_dict({"gpu_counts": [1], "model": spec, "checkpoint_every": 0, "compile": mode}).view(TrainConfig)
encoder, tokenizer = model.load(spec)
trainer = build_trainer(cfg, distributed.setup(), encoder, pair_tokens(tokenizer, pairs, cfg.max_seq_length))
ends = [time.perf_counter()]
trainer.fit(lambda t: ends.append(time.perf_counter()))
d = [b - a for a, b in zip(ends, ends[1:])]
print(f"{Path(spec).name} compile={mode}: first step {d[0]:.2f} s, steps 2-{steps} median {statistics.median(d[1:]):.3f} s "
      f"(min {min(d[1:]):.3f}), shapes met {len(trainer.shape_log.met)}")
