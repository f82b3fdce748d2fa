"""Numbers derived from the measurements: speedups, efficiencies, verdicts, projections."""

from __future__ import annotations

import math
import statistics

from tier1.records import EvaluationRecord, TrainRecord
from tier1.report import bound, prediction, sweep
from tier1.report.collect import CARD_EXPECTATION, Results

NDCG_TOLERANCE = 0.01  # N-rank vs 1-rank nDCG@10; float reductions differ across world sizes
# On a small test set two models that differ only by dropout noise can differ by more than that in
# nDCG@10 (100 queries: 0.0106 between two 1-rank runs). A larger difference within this many
# standard errors of the per-query differences' mean is within the test set's noise: not judged,
# where a difference beyond it is a real one.
NDCG_NOISE_FACTOR = 3.0
# The per-step loss of an N-rank run may differ from the 1-rank run's by dropout noise: ranks draw
# their own masks. Allowed: this many times the difference between two 1-rank runs that differ only
# in their dropout masks, and never less than float noise (what remains without dropout).
DROPOUT_NOISE_FACTOR = 3.0
FLOAT_NOISE_RELATIVE = 1e-5
# Both RMS differences are estimated from the steps logged: over few steps, two runs with the same
# dropout noise often differ by the factor. Drawn (normal differences, 4e5 pairs of runs): one RMS
# over 3x the other in 5.3% of the pairs at 3 steps, 1.6% at 5, 0.1% at 10. Below this many steps the
# losses are not judged against dropout's noise (the float-noise tolerance, without dropout, holds at any).
DROPOUT_MIN_STEPS = 10


def speedup(base_s: float | None, s: float | None) -> float | None:
    return base_s / s if base_s and s else None


def _timing(prefix: str, m: TrainRecord | EvaluationRecord | None, base_s: float | None, n: int, rate: float | None,
            rate_name: str) -> dict:
    """Median, spread, throughput, speedup and efficiency of one timed stage at world size n (`m`
    None: not run there). A marked time (resumed, stalled, disturbed) gets no speedup: it is not a
    clean measurement."""
    t = m.wall_time_s if m else None
    s = speedup(base_s, t) if m and not m.marks else None
    return {
        f"{prefix}_marks": list(m.marks) if m else [],
        f"{prefix}_wall_s": t,
        f"{prefix}_wall_min_s": min(m.wall_times_s) if m else None,
        f"{prefix}_wall_max_s": max(m.wall_times_s) if m else None,
        rate_name: rate,
        f"{prefix}_speedup": s,
        f"{prefix}_efficiency": s / n if s else None,
    }


def scaling_rows(r: Results, kind: str | None = None) -> list[dict]:
    """One row per world size. `kind`: the peak memory to read (peak_kind's; by default `r`'s own)."""
    kind = kind or peak_kind(r)
    rows = []
    # a marked 1-rank time is no baseline either
    t1 = _clean_wall(r.train.get(1))
    e1 = _clean_wall(r.eval_base.get(1))
    for n in sorted(set(r.train) | set(r.eval_base)):
        tm, em, pm = r.train.get(n), r.eval_base.get(n), r.probe.get(n)
        ranks = tm.ranks if tm else []
        peaks = [peak_bytes(x["peak_memory"], kind) for x in ranks]
        capacities = [x.get("device_capacity_bytes") for x in ranks]
        rows.append({
            "world_size": n,
            **_timing("train", tm, t1, n, tm.samples_per_s if tm else None, "train_samples_per_s"),
            **_timing("eval", em, e1, n, em.documents_per_s if em else None, "eval_documents_per_s"),
            "peak_memory_per_device_bytes": max(peaks) if peaks else None,
            # whole-device use (CUDA context, NCCL buffers included); GPU only
            "peak_device_used_bytes": max((x.get("peak_device_used_bytes") or 0 for x in ranks), default=0) or None,
            "memory_capacity_bytes": sum(capacities) if capacities and all(capacities) else None,
            # the model states (parameters, gradients, optimizer state) the largest rank holds
            "model_state_per_rank_bytes": model_state_per_rank(tm),
            "max_batch_per_device": pm.max_train_batch_per_device if pm else None,
            "max_batch_global": pm.max_train_batch_global if pm else None,
            "objective": tm.objective if tm else {},
            "threads_per_rank": ranks[0]["threads"] if ranks else None,
            "allreduce_span_s": tm.time_split_median_s.get("gradient_allreduce_span") if tm else None,
            "steady_step_s": tm.steady_step_s if tm else None,
            "step_evenness": tm.step_evenness if tm else None,  # the wall-average step beside it
            "shapes": tm.shapes if tm else None,
            "tokens_per_s": tm.throughput.get("tokens_per_s") if tm else None,
            "mfu": tm.throughput.get("mfu") if tm else None,
        })
        rows[-1]["largest_model"] = largest_model(rows[-1], tm)
    return rows


# bytes a parameter takes gathered for a step under FSDP2, by the record's compute precision
GATHERED_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def largest_model(row: dict, tm: TrainRecord | None) -> dict | None:
    """A projection: the most parameters one rank could train at this run's batch, strategy and
    world size. Model states take the bytes per parameter measured (DDP ~16 for fp32 AdamW, FSDP2
    ~16/N, plus under FSDP2 the whole parameters gathered for the step); everything else at the
    peak (activations, buffers) is taken as measured for this model, though a larger model's
    activations grow with its width and depth. Against a GPU's memory; on a CPU against the rank's
    share of the machine's memory (the ranks share it)."""
    states, peak = row.get("model_state_per_rank_bytes"), row.get("peak_memory_per_device_bytes")
    if tm is None or not states or not peak or not tm.gradient_bytes:
        return None
    capacities = [x.get("device_capacity_bytes") for x in tm.ranks]
    if capacities and all(capacities):
        capacity, of = min(capacities), "GPU memory"
    elif tm.hardware.get("host_memory_bytes") and not tm.hardware.get("gpus"):
        capacity, of = tm.hardware["host_memory_bytes"] / tm.world_size, "host memory / ranks"
    else:
        return None
    n_params = tm.gradient_bytes / 4  # fp32 gradients, one per parameter
    per_param = states["total"] / n_params
    if tm.config.get("parallelism") == "fsdp" and tm.world_size > 1:
        # the whole parameters, gathered for the step (tier1.training.parallel keeps every layer
        # gathered through it; in the compute precision), grow with the model too
        per_param += GATHERED_BYTES.get(getattr(tm, "precision", None), 4)
    rest = max(peak - per_param * n_params, 0)
    return {"parameters": max(int((capacity - rest) / per_param), 0), "capacity_bytes": capacity, "of": of,
            "bytes_per_parameter": per_param, "other_bytes": rest, "measured_parameters": int(n_params)}


def model_state_per_rank(m: TrainRecord | None) -> dict | None:
    """The model-state bytes of the rank that holds the most: parameters, gradients and optimizer
    state, and their total (None for a record without them)."""
    held = [x.get("model_state_bytes") for x in (m.ranks if m else [])]
    if not held or not all(held):
        return None
    top = max(held, key=lambda b: sum(b.values()))
    return {**top, "total": sum(top.values())}


def _clean_wall(m: TrainRecord | EvaluationRecord | None) -> float | None:
    """A 1-rank time fit to be a baseline: none when it is marked."""
    return m.wall_time_s if m and not m.marks else None


# what a rank's peak memory is, best first: the GPU's allocated bytes, malloc's bytes in use at the
# step's points (a CPU), the process's resident set (a CPU whose C library cannot tell, older records)
PEAKS = {"max_memory_allocated": ("peak allocated", "torch.cuda.max_memory_allocated"),
         "peak_allocated": ("peak allocated (host)", "the host memory allocated and not yet freed (glibc "
                            "mallinfo2), read after each step's loss, backward and optimizer step"),
         "peak_rss": ("peak RSS (process)", "the process peak resident set, which also keeps pages freed long "
                      "before (the model as loaded whole before sharding, the allocator's kept memory)")}


def peak_key(mem: dict) -> str | None:
    return next((k for k in PEAKS if k in mem), None)


def peak_bytes(mem: dict, key: str | None = None) -> int:
    """The peak of `key` (by default the best one `mem` holds); 0 when absent."""
    key = key or peak_key(mem)
    return mem.get(key, 0) if key else 0


def peak_kind(r: Results) -> str | None:
    """The peak every rank of every training record in `r` (both strategies') has, so that one
    table or plot never mixes kinds (on a CPU, the resident set when any record lacks the allocated
    bytes)."""
    keys = [peak_key(x["peak_memory"]) for runs in (r.train, r.second_train) for tm in runs.values()
            for x in tm.ranks]
    if not keys or None in keys:
        return None
    return max(keys, key=list(PEAKS).index)


def peak_label(key: str | None) -> tuple[str, str]:
    """(short label, what it measures) of a peak kind."""
    return PEAKS.get(key, ("peak memory", "not recorded"))


def rms_difference(a: list[dict], b: list[dict]) -> float | None:
    """Root mean square of the per-step loss difference over the steps both runs logged."""
    by_step = {row["step"]: row["loss"] for row in b}
    diffs = [row["loss"] - by_step[row["step"]] for row in a if row["step"] in by_step]
    return (sum(d * d for d in diffs) / len(diffs)) ** 0.5 if diffs else None


def loss_agreement(r: Results) -> dict:
    """Per world size, the RMS per-step loss difference from 1 rank, and the tolerance it is held to."""
    base = r.loss.get(1, [])
    if not base:
        return {"tolerance": None, "dropout_rms": None, "rms": {}}
    floor = FLOAT_NOISE_RELATIVE * sum(abs(row["loss"]) for row in base) / len(base)
    dropout_rms = rms_difference(r.reference_loss, base) if r.reference_loss else None
    tolerance = max(floor, DROPOUT_NOISE_FACTOR * dropout_rms) if dropout_rms is not None else floor
    rms = {n: rms_difference(rows, base) for n, rows in sorted(r.loss.items()) if n != 1}
    # held to float noise (no dropout, or none it could measure): judged at any number of steps
    judged = tolerance <= floor or len(base) >= DROPOUT_MIN_STEPS
    return {"tolerance": tolerance, "dropout_rms": dropout_rms, "rms": rms, "float_floor": floor,
            "steps": len(base), "judged": judged}


def on_gpus(r: Results, n: int) -> bool:
    """Whether the n-rank run had one GPU per rank."""
    return len(r.train[n].hardware.get("gpus", [])) >= n


def shared_gpu(r: Results) -> bool:
    """Some world size ran more ranks than GPUs (share_gpu): a rehearsal, never a speedup."""
    return any(0 < len(tm.hardware.get("gpus", [])) < n for n, tm in r.train.items())


def cpu_rehearsal(r: Results) -> bool:
    """No run had a GPU: every rank was a CPU process on the same machine."""
    return bool(r.train) and not any(tm.hardware.get("gpus") for tm in r.train.values())


def oversubscription(r: Results) -> list[str]:
    """Sentences for the world sizes whose ranks share cores or devices."""
    notes = []
    for n, tm in sorted(r.train.items()):
        gpus = len(tm.hardware.get("gpus", []))
        if gpus and n > gpus:
            notes.append(f"Shared-GPU rehearsal: not a speedup. {n} ranks ran on {gpus} GPU(s) over gloo "
                         f"(`share_gpu`): ranks shared devices, so this is not a {n}-GPU measurement; it proves the "
                         "multi-rank CUDA path runs (DDP, the comm hook's CUDA events, the gathered negatives, "
                         "per-rank dropout, distributed evaluation) and that the ranks train the same model.")
    shared = [(n, tm) for n, tm in sorted(r.train.items()) if n > 1 and not tm.hardware.get("gpus")]
    if shared:
        cores = shared[0][1].hardware["cores"]
        threads = ", ".join(f"{tm.ranks[0]['threads']} at {n} ranks" for n, tm in shared)
        notes.append(
            f"CPU rehearsal: there is no GPU, so the {' and '.join(str(n) for n, _ in shared)} ranks are CPU "
            f"processes sharing this machine's {cores} cores (threads per rank: {threads}). A GPU speedup "
            "cannot be measured this way, so none is reported: the table gives the ratio of the 1-rank time "
            "to the N-rank time instead. What these numbers do measure: that the whole DDP code path runs end "
            "to end, whether N ranks train the same model as 1 rank (the same-model verdict), whether every "
            "rank did its share, and what the gloo collectives cost on this machine (the all-reduce column).")
    return notes


def first_gradient_norm(tm: TrainRecord | None) -> float | None:
    """The norm of the first step's whole gradient (tier1.training.trainer.Trainer.gradient_norm);
    None for a resumed run or a record from before it was kept."""
    return tm.ranks[0].get("first_step_gradient_norm") if tm and tm.ranks else None


def _gradient_ratio(r: Results, n: int) -> str:
    """`n` ranks' first-step gradient norm over 1 rank's: near 1 within dropout's noise, n or 1/n
    where the gradient is summed where it should be averaged (or the reverse)."""
    a, b = first_gradient_norm(r.train.get(n)), first_gradient_norm(r.train.get(1))
    return f", first-step gradient norm {a / b:.3f}x 1 rank's" if a and b else ""


def ndcg_standard_error(a: EvaluationRecord, b: EvaluationRecord) -> float | None:
    """The standard error of the mean of the per-query nDCG@10 differences of two models on the
    same queries: the spread their nDCG@10 difference has from the test set's size alone."""
    mine, theirs = a.ndcg10_per_query, b.ndcg10_per_query
    diffs = [mine[q] - theirs[q] for q in mine.keys() & theirs.keys()]
    return statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else None


def ndcg_judgement(diff: float, se: float | None) -> tuple[bool | None, str]:
    """An nDCG@10 difference against NDCG_TOLERANCE: True within it; beyond it, None while it is
    within NDCG_NOISE_FACTOR standard errors (the test set cannot tell), else False."""
    if diff <= NDCG_TOLERANCE:
        return True, ""
    if se is not None and diff <= NDCG_NOISE_FACTOR * se:
        return None, (f" (within the test set's noise: {NDCG_NOISE_FACTOR:g}x the standard error of the "
                      f"per-query differences is {NDCG_NOISE_FACTOR * se:.4f}; not judged)")
    return False, ""


def all_of(parts: list[bool | None]) -> bool | None:
    """False if any part failed, else None if any could not be judged, else True."""
    return False if any(p is False for p in parts) else None if any(p is None for p in parts) else True


def verdicts(r: Results) -> list[tuple[str, bool | None, str]]:
    out = []
    rows = scaling_rows(r)
    largest = max(r.train) if r.train else None
    if largest and largest > 1:
        row = next(x for x in rows if x["world_size"] == largest)
        card_eff = CARD_EXPECTATION["training_speedup"] / CARD_EXPECTATION["gpus"]
        eff = row["train_efficiency"]
        marked = row["train_marks"] + next(x for x in rows if x["world_size"] == 1)["train_marks"]
        judged = on_gpus(r, largest) and not marked
        if cpu_rehearsal(r):
            # no speedup figure beside a run that cannot have one: see the CPU rehearsal note
            out.append(("scaling", None, "not judged: a CPU rehearsal, the ranks share the CPU's cores "
                        "(see the note below the verdicts)"))
        else:
            why = ("not judged: the ranks did not each have a GPU of their own; " if not on_gpus(r, largest)
                   else f"not judged: a time is marked ({'; '.join(marked)}); " if marked else "")
            out.append(("scaling", (eff is not None and eff >= card_eff) if judged else None, why +
                        f"training at {largest} ranks: speedup {fmt(row['train_speedup'], 'x')}, efficiency "
                        f"{pct(eff)} (the card expected {pct(card_eff)} at {CARD_EXPECTATION['gpus']} GPUs); "
                        f"evaluation speedup {fmt(row['eval_speedup'], 'x')}, efficiency "
                        f"{pct(row['eval_efficiency'])}" + _host_bound(r)))
    if 1 in r.eval_trained:
        ref = r.eval_trained[1].metrics["ndcg@10"]
        diffs = {n: abs(m.metrics["ndcg@10"] - ref) for n, m in r.eval_trained.items() if n != 1}
        agree = loss_agreement(r)
        same_objective = all(r.train[n].objective["global_batch"] == r.train[1].objective["global_batch"]
                             and r.train[n].objective["negatives_per_anchor"]
                             == r.train[1].objective["negatives_per_anchor"]
                             for n in r.train)
        loss_ok = all(v is not None and v <= agree["tolerance"] for v in agree["rms"].values())
        ndcg = {n: ndcg_judgement(d, ndcg_standard_error(r.eval_trained[n], r.eval_trained[1]))
                for n, d in diffs.items()}
        # None where nothing failed but a part could not be judged (the losses held to dropout's
        # noise over too few steps, an nDCG@10 difference the test set is too small to resolve)
        ok = all_of([*(v for v, _ in ndcg.values()), same_objective, loss_ok if agree["judged"] else None])
        detail = ", ".join(f"{n} ranks: |ΔnDCG@10| {d:.4f}{ndcg[n][1]}, per-step loss RMS difference "
                           f"{_sci(agree['rms'].get(n))}{_gradient_ratio(r, n)}" for n, d in sorted(diffs.items()))
        if not agree["judged"]:
            yardstick = (f"per-step losses not judged: {agree['steps']} steps are too few to hold them to dropout's "
                         f"noise (the RMS difference between two 1-rank runs that differ only in dropout masks, "
                         f"{_sci(agree['dropout_rms'])}, is itself drawn from them); {DROPOUT_MIN_STEPS} or more "
                         "steps are judged")
        elif agree["dropout_rms"] is not None:
            yardstick = (f"loss tolerance {_sci(agree['tolerance'])} = {DROPOUT_NOISE_FACTOR:g}x the RMS difference "
                         f"between two 1-rank runs that differ only in dropout masks ({_sci(agree['dropout_rms'])})")
        else:
            yardstick = f"loss tolerance {_sci(agree['tolerance'])} (float noise; no dropout reference run)"
        out.append(("same model", ok if diffs else None,
                    f"1-rank nDCG@10 {ref:.4f}; {detail or 'no other world size'} (nDCG tolerance {NDCG_TOLERANCE}, "
                    f"beyond it judged once it exceeds {NDCG_NOISE_FACTOR:g} standard errors of the per-query "
                    f"differences ({r.eval_trained[1].queries_judged} queries judged); "
                    f"{yardstick}); objective identical across world sizes: {'yes' if same_objective else 'NO'}"))
    worked = []
    ok = True
    for n, tm in sorted(r.train.items()):
        counts = [x["samples"] for x in tm.ranks]
        good = all(c > 0 for c in counts) and sum(counts) == tm.expected_samples and tm.checksums_equal
        ok &= good
        worked.append(f"{n}: samples per rank {counts} (sum {sum(counts)} of {tm.expected_samples}), "
                      f"checksums {'equal' if tm.checksums_equal else 'DIFFER'}")
    out.append(("all ranks worked", ok, "; ".join(worked)))
    predicted = prediction_verdict(r)
    if predicted is not None:
        out.append(predicted)
    where = sweep.sentence(r)
    if where:
        out.append(("where multi-GPU pays off", None, where + " (the batch sweep, below)"))
    return out


def _host_bound(r: Results) -> str:
    """The host-bound cause, said beside the scaling figures it explains (GPU runs only)."""
    rows = [x for x in bound.per_world_size(r) if x["host_bound"]]
    return "".join(f"; {x['world_size']} GPUs: {x['text']}" for x in rows)


def projection(r: Results, targets=(8, 16, 32)) -> list[dict]:
    """Projected training speedup at larger world sizes, one GPU per rank: the predicted ceiling
    (tier1.report.prediction) with the bus bandwidth measured at the largest world size run, or
    the config's internode_busbw_gbps beyond the machine's GPUs. Empty on a CPU (ranks share cores)."""
    return prediction.projection_rows(r, r.internode_busbw_gbps, tuple(targets))


def prediction_verdict(r: Results) -> tuple[str, bool | None, str] | None:
    """Every world size above 1 at FLAG_BELOW or more of its predicted speedup, judged only where
    the run's own spread (tier1.report.noise) puts the ratio clear of the threshold; None when no
    prediction can be made (no 1-rank run, or only one world size). The measured side is the
    steady-step ratio, the one the prediction models; the wall-time ratio is named beside it."""
    rows = [x for x in prediction.world_size_rows(r) if x["world_size"] > 1]
    if not rows:
        return None
    walls = {x["world_size"]: x["train_speedup"] for x in scaling_rows(r)}
    judged = [x for x in rows if x["flagged"] is not None]
    flagged = [x for x in judged if x["flagged"]]
    # a CPU rehearsal's ratios are time ratios (1 rank / n ranks), never written as speedups
    unit, what, wall = ("x", "speedup", "wall-time speedup") if rows[0]["on_gpu"] else ("", "time ratio", "wall-time ratio")
    parts = []
    for x in rows:
        n = x["world_size"]
        state = ("not judged: a time is marked" if x["marks"] else "n/a" if x["ratio"] is None
                 else f"{pct(x['ratio'])} of predicted, {x['judgement']}" + (" — BELOW" if x["flagged"] else ""))
        parts.append(f"{n} ranks: steady-step {what} {fmt(x['measured_step_speedup'], unit)} vs predicted "
                     f"{fmt(x['predicted_speedup'], unit)} ({state}; {wall} {fmt(walls.get(n), unit)})")
    worst = "; ".join(f"largest gap at {x['world_size']} ranks: {x['why']}" for x in flagged if x["why"])
    text = (f"A world size under {pct(prediction.FLAG_BELOW)} of its prediction is flagged. " + "; ".join(parts)
            + (f". {worst}" if worst else ""))
    cause = bound.sentence(r)
    if cause:
        text += f". What bounds the step: {cause}"
    if cpu_rehearsal(r):
        text = ("CPU rehearsal: this judges whether the model of this machine (ranks sharing its cores, gloo "
                "collectives) explains the measured steps, not GPU scaling. ") + text
    return ("vs prediction", (not flagged) if judged else None, text)


def _sci(x) -> str:
    return "n/a" if x is None else f"{x:.2e}"


def fmt(x, unit: str = "", digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}{unit}"


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"
