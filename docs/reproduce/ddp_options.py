"""DDP constructor options side by side on this machine's ranks, with tier1's own training step:
    torchrun --nproc_per_node N docs/reproduce/ddp_options.py   (after `make run`: it reads the default run's data)"""
import functools
import json
import os
import statistics
import time

import torch

from tier1 import layout
from tier1.data.sources import read_jsonl
from tier1.encoder import model
from tier1.encoder.token_cache import load as load_cache
from tier1.encoder.token_cache import pair_tokens
from tier1.runtime import distributed
from tier1.runtime.cli import parse_stage_config
from tier1.training import builder

DDP = builder.DDP

OPTIONS = {"default": {}, "gradient_as_bucket_view": {"gradient_as_bucket_view": True},
           "bucket_cap_mb=100": {"bucket_cap_mb": 100}, "bucket_cap_mb=5": {"bucket_cap_mb": 5}}
STEPS, ROUNDS = int(os.environ.get("STEPS", 6)), int(os.environ.get("ROUNDS", 2))

ctx = distributed.setup()
cfg = parse_stage_config("config/config.yaml", "train")
run = layout.Run("default")
pairs = read_jsonl(run.path(layout.TRAIN_PAIRS))
tok = model.load_tokenizer(cfg.model, False)
ids = pair_tokens(tok, pairs, cfg.max_seq_length, load_cache(run.path(layout.TOKENS), cfg.max_seq_length))
times = {k: [] for k in OPTIONS}
params_after = {}
for _rnd in range(ROUNDS):
    for name, opts in OPTIONS.items():
        torch.manual_seed(cfg.seed)
        encoder, _ = model.load(cfg.model)
        builder.DDP = functools.partial(DDP, **opts)  # what builder.wrap constructs
        trainer = builder.build_trainer(cfg, ctx, encoder, ids)
        schedule = trainer.plan.schedule()
        trainer.train_step(schedule[0][1])  # first step: DDP's bucket rebuild, not timed
        distributed.barrier()
        for _epoch, batch in schedule[1:1 + STEPS]:
            t0 = time.perf_counter()
            trainer.train_step(batch)
            times[name].append(time.perf_counter() - t0)
        params_after[name] = torch.cat([p.detach().flatten() for p in encoder.parameters()])
if ctx.is_main:
    base = params_after["default"]
    out = {name: {"median_step_s": statistics.median(t), "steps": t,
                  "max_param_diff_vs_default": float((params_after[name] - base).abs().max())}
           for name, t in times.items()}
    print(json.dumps({"world_size": ctx.world_size, "threads_per_rank": ctx.threads, "rounds": ROUNDS,
                      "timed_steps_per_round": STEPS, **out}, indent=1))
distributed.teardown()
