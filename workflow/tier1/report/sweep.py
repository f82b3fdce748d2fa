"""The batch sweep: at which per-GPU batch the step stops being bound by fixed costs and DDP pays
off. Per global batch B and world size N: the 1-rank and N-rank steady steps (short runs, strong
scaling), speedup = 1-rank step / N-rank step (the same global batch), efficiency = speedup / N."""

from __future__ import annotations

from typing import Any

EFFICIENT = 0.8  # the efficiency the sentence looks for


def rows(r) -> list[dict[str, Any]]:
    out = []
    for (b, n), rec in sorted(r.sweep.items()):
        one = r.sweep.get((b, 1))
        step1 = one.steady_step_s if one else None
        speedup = step1 / rec.steady_step_s if step1 and rec.steady_step_s else None
        shared = rec.on_gpu and rec.gpus < n  # the shared-GPU rehearsal
        on_gpu = rec.on_gpu and not shared
        out.append({"global_batch": b, "world_size": n, "per_rank_batch": rec.per_rank_batch,
                    "step_s": rec.steady_step_s, "one_rank_step_s": step1, "speedup": speedup,
                    "efficiency": speedup / n if speedup else None, "busy_share": rec.gpu_busy_share,
                    "on_gpu": on_gpu, "shared_gpu": shared, "timed_steps": rec.timed_steps})
    return out


def sentence(r) -> str | None:
    """Where multi-GPU pays off, in one sentence: the smallest per-GPU batch that reaches EFFICIENT
    at the largest world size swept, or that none does; on a CPU, what the sweep cannot say."""
    all_rows = [x for x in rows(r) if x["world_size"] > 1 and x["speedup"] is not None]
    if not all_rows:
        return None
    n = max(x["world_size"] for x in all_rows)
    at_n = sorted((x for x in all_rows if x["world_size"] == n), key=lambda x: x["per_rank_batch"])
    best = max(at_n, key=lambda x: x["efficiency"])
    if not at_n[0]["on_gpu"]:
        ratios = ", ".join("{:.2f} at {} per rank".format(x["speedup"], x["per_rank_batch"]) for x in at_n)
        if at_n[0]["shared_gpu"]:
            return (f"shared-GPU rehearsal: not a speedup; the sweep's ratios at {n} ranks on one GPU ({ratios}) are "
                    "time ratios of ranks sharing it; where multi-GPU pays off needs one GPU per rank")
        return (f"CPU rehearsal: the sweep's ratios at {n} ranks ({ratios}) are time ratios of ranks sharing the "
                "CPU's cores, not speedups; where multi-GPU pays off needs GPUs")
    good = [x for x in at_n if x["efficiency"] >= EFFICIENT]
    if good:
        x = good[0]
        return (f"at {n} GPUs, the smallest per-GPU batch that reaches {EFFICIENT:.0%} efficiency here is "
                f"{x['per_rank_batch']} (global {x['global_batch']}: {x['speedup']:.2f}x, {x['efficiency']:.0%})")
    return (f"at {n} GPUs, none of the per-GPU batches swept ({', '.join(str(x['per_rank_batch']) for x in at_n)}) "
            f"reaches {EFFICIENT:.0%} efficiency here (best: {best['efficiency']:.0%}, {best['speedup']:.2f}x at "
            f"{best['per_rank_batch']} per GPU)")
