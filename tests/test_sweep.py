"""The batch sweep: its config key, the sentence in the verdicts, the table and the plot."""

from __future__ import annotations

import dataclasses

import pytest

from test_prediction import decomposition, record
from tier1.config import ConfigError, Tier1Config, from_command_line
from tier1.records import SweepRecord
from tier1.report import analysis, plots, sweep, table
from tier1.report.collect import Results

from helpers import record as record_of


def test_batch_sweep_is_empty_by_default_and_read_from_the_command_line():
    assert Tier1Config().batch_sweep == ()
    cfg = Tier1Config.from_dict(from_command_line({"batch_sweep": ["32", "8"], "gpu_counts": [1, 2, 4]}))
    assert cfg.batch_sweep == (8, 32) and cfg.to_dict()["batch_sweep"] == [8, 32]
    assert Tier1Config.from_dict(from_command_line({"batch_sweep": "[]"})).batch_sweep == ()
    with pytest.raises(ConfigError, match="batch_sweep: global batch 6 does not split over 4 ranks"):
        Tier1Config.from_dict({"batch_sweep": [6], "gpu_counts": [1, 2, 4]})
    with pytest.raises(ConfigError, match="batch_sweep: global batch 1024 needs at least 1024 training pairs"):
        Tier1Config.from_dict({"batch_sweep": [1024], "gpu_counts": [1, 2, 4], "train_samples": 512})
    with pytest.raises(ConfigError, match="batch_sweep: 'a,b' is not a list"):
        from_command_line({"batch_sweep": "a,b"})


def sweep_record(b: int, n: int, step: float, on_gpu: bool = True, busy: float | None = None) -> SweepRecord:
    return record_of(SweepRecord, global_batch=b, world_size=n, per_rank_batch=b // n, steady_step_s=step,
                     timed_steps=6, on_gpu=on_gpu, gpus=n if on_gpu else 0, gpu_busy_share=busy)


def gpu_sweep() -> Results:
    """A step of 0.1 s fixed + 1 ms per pair: small per-GPU batches are host-bound."""
    r = Results()
    r.train[1] = record(1, decomposition(1.0, 0.8), gpus=4)
    for b in (32, 128, 1024):
        for n in (1, 2, 4):
            step = 0.1 + 0.001 * b / n
            r.sweep[(b, n)] = sweep_record(b, n, step, busy=(0.001 * b / n) / step)
    return r


def test_the_sentence_names_the_smallest_per_gpu_batch_that_reaches_80_percent():
    rows = {(x["global_batch"], x["world_size"]): x for x in sweep.rows(gpu_sweep())}
    assert rows[(1024, 4)]["speedup"] == pytest.approx(1.124 / 0.356)
    assert rows[(32, 4)]["efficiency"] < 0.4
    text = sweep.sentence(gpu_sweep())
    # 256 per GPU (global 1024) reaches 79%: none of the swept batches reaches 80%
    assert text.startswith("at 4 GPUs, none of the per-GPU batches swept (8, 32, 256) reaches 80% efficiency")
    r = gpu_sweep()
    for n in (1, 2, 4):
        r.sweep[(4096, n)] = sweep_record(4096, n, 0.1 + 0.001 * 4096 / n)
    assert "the smallest per-GPU batch that reaches 80% efficiency here is 1024 (global 4096" in sweep.sentence(r)
    r.train[1] = dataclasses.replace(r.train[1], expected_samples=10, checksums_equal=True)
    r.train[1].ranks[0]["samples"] = 10
    verdict = next(v for v in analysis.verdicts(r) if v[0] == "where multi-GPU pays off")
    assert verdict[1] is None and "1024 (global 4096" in verdict[2]


def test_the_table_and_the_plot_are_drawn(tmp_path):
    r = gpu_sweep()
    text = "\n".join(table.sweep_section(r))
    assert "## Where multi-GPU pays off (batch sweep)" in text and "| 1024 | 4 | 256 |" in text
    fig = plots.sweep(r, tmp_path / "sweep.png")
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert "4 GPUs (measured)" in labels and "ideal at 4 GPUs (4x)" in labels
    assert any(label.startswith("the card: 3.0x at 4 GPUs") for label in labels)
    assert (tmp_path / "sweep.png").stat().st_size > 0


def test_on_a_cpu_the_sweep_says_its_ratios_are_not_speedups():
    r = Results()
    r.train[1] = record(1, decomposition(1.0, 0.8), gpus=0, cores=2, threads=2)
    for b in (8, 32):
        for n in (1, 2, 4):
            r.sweep[(b, n)] = sweep_record(b, n, 0.5 + 0.01 * b, on_gpu=False)
    assert sweep.sentence(r).startswith("CPU rehearsal: the sweep's ratios at 4 ranks")
    assert "n/a (CPU rehearsal)" in "\n".join(table.sweep_section(r))


@pytest.mark.slow
def test_the_sweep_stage_times_its_steps_through_its_command_line_on_two_ranks(tiny_model, pairs, tmp_path):
    """One size of the sweep as its rule runs it: tier1.runtime.launch with 2 ranks, the stage's own command line."""
    import json
    import subprocess
    import sys

    from tier1.config import stage_json
    from tier1.stages import sweep_step

    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs[:64]))
    cfg = stage_json(Tier1Config.from_dict({"model": str(tiny_model), "batch_size": 8, "gpu_counts": [1, 2]}), "train")
    out = tmp_path / "b8" / "gpus2.json"
    subprocess.run([sys.executable, "-m", "tier1.runtime.launch", "--ranks", "2", "tier1.stages.sweep_step", "--config", cfg,
                    "--batch", "8", "--data", str(data), "--out", str(out)], check=True, timeout=600)
    rec = SweepRecord.read(out)
    assert (rec.global_batch, rec.world_size, rec.per_rank_batch) == (8, 2, 4)
    assert rec.timed_steps == len(rec.step_times_s) == sweep_step.SWEEP_STEPS
    assert all(t > 0 for t in rec.step_times_s) and rec.steady_step_s > 0
    assert len(rec.ranks) == 2 and rec.gpu_busy is None and not rec.on_gpu
    assert rec.encoder["implementation"] == "tier1-bert"
