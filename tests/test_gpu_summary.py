"""The one-GPU check's summary table (tier1.tools.gpu_summary) on hand-made stage files in the
standard layout, and the session script's plan (scripts/gpu_session.sh --dry-run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile

import pytest
import torch

from tier1 import layout
from tier1.records import CosineRecord, EvaluationRecord, ProbeRecord, Record, RecordError, TrainRecord
from tier1.tools import gpu_summary

from helpers import REPO, record

GIB = 2**30


def train_metrics(precision: str, step_s: float, samples_per_s: float) -> TrainRecord:
    return record(
        TrainRecord, stage="train", world_size=1, steps=400, precision=precision, wall_time_s=61.5,
        samples_per_s=samples_per_s, final_loss=0.123456, objective={"global_batch": 128},
        time_split_median_s={"step": step_s}, steady_step_s=step_s / 2,
        throughput={"tokens_per_s": 1.5e6, "padded_tokens_per_s": 3.5e6, "mfu": 0.312},
        ranks=[{"rank": 0, "device_name": "NVIDIA H100 80GB HBM3", "median_step_s": step_s,
                "peak_memory": {"max_memory_allocated": 3 * GIB, "max_memory_reserved": 4 * GIB}}],
        hardware={"gpus": ["NVIDIA H100 80GB HBM3"]}, libraries={"torch": "2.11.0", "transformers": "5.17.0"},
        encoder={"implementation": "tier1-bert", "version": "0.1", "attention": "sdpa (flash)"},
    )


def write(path, rec: Record) -> str:
    rec.write(path)
    return str(path)


def stage_files(tmp_path) -> list[str]:
    """The check's records where its runs put them (gpu-check and gpu-check-fp32 under tmp_path)."""
    eval_base = record(EvaluationRecord, stage="evaluate", metrics={"ndcg@10": 0.41}, documents_per_s=25000.0,
                       wall_time_s=0.04)
    eval_trained = record(EvaluationRecord, stage="evaluate", metrics={"ndcg@10": 0.58}, documents_per_s=26000.0,
                          wall_time_s=0.038, ranks=[{"peak_memory": {"max_memory_allocated": GIB // 2}}])
    probe = record(ProbeRecord, stage="probe", max_train_batch_per_device=1536, max_encode_batch_per_device=57344,
                   device_capacity_bytes=80 * GIB)
    cosine = record(CosineRecord, min_cosine=0.99871, mean_cosine=0.99993)
    run, fp32, one = layout.Run("gpu-check", tmp_path), layout.Run("gpu-check-fp32", tmp_path), layout.trained_on(1)
    steps = run.path(layout.GPU_CHECK_STEPS)
    steps.parent.mkdir(parents=True)
    steps.write_text("gpu_tests\t12.5\t5\nprepare\t30.25\t0\ntrain_bf16\t40.0\t0\nprobe\t3.0\t1\n")
    write(run.path(layout.train_record(one)), train_metrics("bfloat16", 0.0124, 10300.0))
    write(fp32.path(layout.train_record(one)), train_metrics("float32", 0.101, 1270.0))
    write(run.path(layout.eval_metrics(layout.BASE, 1)), eval_base)
    write(run.path(layout.eval_metrics(one, 1)), eval_trained)
    write(run.path(layout.probe(1)), probe)
    write(run.path(layout.GPU_COSINE), cosine)
    return ["table", "--results", str(tmp_path), "--run", run.name, "--fp32-run", fp32.name]


def test_table_reads_every_value_from_its_file(tmp_path, capsys):
    args = stage_files(tmp_path)
    gpu_summary.main([*args, "--md", str(tmp_path / "out" / "s.md"), "--json", str(tmp_path / "out" / "s.json")])
    table = json.loads((tmp_path / "out" / "s.json").read_text())
    assert table["Device"] == "NVIDIA H100 80GB HBM3"
    assert table["torch / transformers"] == "2.11.0 / 5.17.0"
    assert table["Training steps (global batch)"] == "400 (128)"
    assert table["Train step time, median"] == "6.20 ms"  # the steady step
    assert table["Encoder"] == "tier1-bert 0.1, attention: sdpa (flash)"
    assert table["bf16 speed-up per step (fp32 step / bf16 step)"] == "8.15x"
    assert table["Train samples/s"] == "10,300"
    assert table["Train tokens/s"] == "1,500,000"
    assert table["Train padded tokens/s"] == "3,500,000"
    assert table["Train MFU"] == "31.2%"
    assert table["Train peak memory allocated"] == "3.00 GiB"
    assert table["Train wall time"] == "61.50 s"
    assert table["Train samples/s (fp32 run)"] == "1,270"
    assert gpu_summary.rate(1.4049) == "1.4" and gpu_summary.rate(None) == "n/a"
    assert table["nDCG@10 before training"] == "0.4100" and table["nDCG@10 after training"] == "0.5800"
    assert table["Encode documents/s (base model)"] == "25,000"
    assert table["Max train batch per device (probe)"] == "1,536"
    assert table["Max encode batch per device (probe)"] == "57,344"
    assert table["Device memory (probe)"] == "80.00 GiB"
    assert table["bf16 vs fp32 embedding cosine, min"] == "0.998710"
    assert table["Time: gpu_tests"] == "12.5 s (no tests collected)"
    assert table["Time: prepare"] == "30.2 s"
    assert table["Time: probe"] == "3.0 s (FAILED, exit 1)"
    assert table["Time: all steps"] == "85.8 s"
    md = (tmp_path / "out" / "s.md").read_text()
    assert md == capsys.readouterr().out
    assert "| Train MFU" in md and md.count("\n|") == len(table) + 2  # header, rule, one row each


def test_missing_files_print_na_and_a_damaged_one_is_named(tmp_path):
    args = stage_files(tmp_path)
    layout.Run("gpu-check", tmp_path).path(layout.probe(1)).unlink()  # the probe step did not run
    gpu_summary.main([*args, "--json", str(tmp_path / "s.json")])
    table = json.loads((tmp_path / "s.json").read_text())
    assert table["Train MFU"] == "31.2%"
    for label in ("Max train batch per device (probe)", "Device memory (probe)"):
        assert table[label] == "n/a", label
    # a record with a field renamed is not read as n/a: the error names the file and the field
    fp32_record = layout.Run("gpu-check-fp32", tmp_path).path(layout.train_record(layout.trained_on(1)))
    data = json.loads(fp32_record.read_text())
    data["steady_step"] = data.pop("steady_step_s")
    fp32_record.write_text(json.dumps(data))
    named = rf"{fp32_record}: .*missing field\(s\) 'steady_step_s'.*unknown field\(s\) 'steady_step'"
    with pytest.raises(RecordError, match=named):
        gpu_summary.main([*args, "--json", str(tmp_path / "s.json")])


def test_no_files_at_all_is_a_table_of_na(tmp_path):
    gpu_summary.main(["table", "--results", str(tmp_path), "--json", str(tmp_path / "s.json")])
    table = json.loads((tmp_path / "s.json").read_text())
    assert table["Device"] == "n/a" and table["torch / transformers"] == "n/a"
    assert not any(label.startswith("Time:") for label in table)


def test_bf16_and_fp32_embeddings_agree_on_cpu(tiny_model, pairs):
    texts = [p["anchor"] for p in pairs[:6]] + [p["positive"] for p in pairs[:6]]
    result = gpu_summary.cosine_agreement(str(tiny_model), texts, 32, torch.device("cpu"), batch_size=4)
    assert result.texts == 12
    assert 0.98 < result.min_cosine <= result.mean_cosine <= 1.0 + 1e-6


def test_files_keep_the_records_and_leave_out_weights_and_data(tmp_path):
    stage_files(tmp_path)
    run = layout.Run("gpu-check", tmp_path)
    for big in (layout.model_dir(layout.trained_on(1)) + "/model.safetensors", layout.TOKENS, layout.TRAIN_PAIRS,
                layout.eval_run(layout.BASE, 1), layout.train_folder("gpus1") + "/checkpoints/state.json",
                layout.MANIFEST):
        run.path(big).parent.mkdir(parents=True, exist_ok=True)
        run.path(big).write_text("{}")
    gpu_summary.main(["files", "--results", str(tmp_path), "--run", "gpu-check", "--run", "gpu-check-fp32",
                      "--out", str(tmp_path / "files.tar.gz")])
    with tarfile.open(tmp_path / "files.tar.gz") as tar:
        packed = {m.name for m in tar.getmembers() if m.isfile()}
    assert f"gpu-check/{layout.train_record('gpus1')}" in packed and f"gpu-check-fp32/{layout.train_record('gpus1')}" in packed
    assert f"gpu-check/{layout.MANIFEST}" in packed and f"gpu-check/{layout.GPU_CHECK_STEPS}" in packed
    assert not [name for name in packed if any(x in name for x in ("model", "tokens.", "train.jsonl", "trec", "checkpoints"))]


def test_gpu_session_dry_run_prints_every_job_and_runs_nothing(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "BUNDLE": str(tmp_path / "none"), "OUT": str(tmp_path / "out")}
    out = subprocess.run(["bash", str(REPO / "scripts" / "gpu_session.sh"), "--dry-run"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=300, check=True).stdout
    planned = [line.split(" ", 2)[1] for line in out.splitlines() if line.startswith("== gpu-check")]
    for name in ("gpu-check/preflight", "gpu-check/prepare", "gpu-check/tokenize", "gpu-check/train_gpus1",
                 "gpu-check/eval_ws1", "gpu-check/probe_gpus1", "gpu-check-fp32/train_gpus1", "gpu-check-fp32/eval_ws1",
                 "gpu-check/cosine", "gpu-check/train_gpus2", "gpu-check/report", "gpu-check/bench",
                 "gpu-check/gpu_tests", "gpu-check-parts2/train_gpus1"):
        assert name in planned, name
    assert "-m pytest -q -p no:cacheprovider -m gpu tests" in out and "gpu_summary table" in out
    assert "== milestone: bf16 1-rank steady step" in out
    assert '"precision": "fp32"' in out and '"dataset": "python-source"' in out
    assert not (REPO / layout.run_folder("gpu-check")).exists() and not any((tmp_path / "out").glob("*"))


def test_the_targets_are_judged_from_the_records_and_say_why_when_they_cannot_be(tmp_path):
    """On a GPU record each target reads PASS or FAIL with its figure; on a CPU rehearsal's, n/a and
    why; the same-model row compares 2 ranks' per-step losses with the dropout reference's."""
    args = stage_files(tmp_path)
    run = layout.Run("gpu-check", tmp_path)
    falling = [1.0 - 0.02 * i for i in range(10)]  # 10 steps: enough to judge against dropout's noise
    for model, losses in ((layout.trained_on(1), falling), (layout.trained_on(2), [v + 1e-4 * i for i, v in enumerate(falling)]),
                          (layout.REFERENCE, [v + (-1) ** i * 0.01 for i, v in enumerate(falling)])):
        path = run.path(layout.loss_csv(model))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("step,loss\n" + "".join(f"{i},{v}\n" for i, v in enumerate(losses)))
    gpu_summary.main([*args, "--json", str(tmp_path / "s.json")])
    table = json.loads((tmp_path / "s.json").read_text())
    assert table["Same model, 2 ranks sharing the GPU vs 1 rank"].startswith("PASS: per-step loss RMS difference")
    # the fixture's bf16 step is 6.2 ms at 31.2% MFU; fp32's 50.5 ms: 8.15x
    assert table["Target: bf16 step <= 25 ms, MFU >= 15%"] == "PASS: 6.20 ms, MFU 31.2%"
    assert table["Target: bf16 >= 2x fp32 per step"] == "PASS: 8.15x"
    assert table["Target: bench training >= 1.5x sentence-transformers"] == "n/a: the bench did not run"

    cpu = train_metrics("float32", 0.5, 30.0)
    write(run.path(layout.train_record(layout.trained_on(1))), record(TrainRecord, **{
        **{f: getattr(cpu, f) for f in TrainRecord.field_names()}, "hardware": {"gpus": []}}))
    gpu_summary.main([*args, "--json", str(tmp_path / "s.json")])
    table = json.loads((tmp_path / "s.json").read_text())
    assert table["Target: bf16 step, MFU, evenness, bf16 against fp32"] == "n/a: no GPU (a CPU rehearsal)"


def test_the_first_step_gradient_norms_are_set_beside_one_ranks():
    import dataclasses

    def with_norm(norm):
        one = train_metrics("bfloat16", 0.0124, 10300.0)
        return dataclasses.replace(one, ranks=[{**one.ranks[0], "first_step_gradient_norm": norm}])

    records = {"train": with_norm(4.0), "train_2": with_norm(4.0004), "train_fsdp2": with_norm(8.0)}
    assert gpu_summary.first_gradient_norms(records) == "1 rank 4; DDP 2 ranks 4 (1.000x); FSDP2 2 ranks 8 (2.000x)"
    # a record from before the norm was kept, or a resumed run: left out, not shown as zero
    assert gpu_summary.first_gradient_norms({"train": train_metrics("bfloat16", 0.0124, 10300.0)}) == "n/a"
