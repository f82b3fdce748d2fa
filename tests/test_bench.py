"""The benchmark against sentence-transformers measures the same work on both sides.

Speed is never asserted here: compare.json's ratios are measurements (docs/performance.md)."""

import json
import statistics

import pytest

from tier1.bench import compare
from tier1.config import Tier1Config, stage_json
from tier1.records import BenchRecord

from helpers import real_pairs

pytest.importorskip("sentence_transformers")
pytestmark = pytest.mark.slow  # four fresh processes, each importing torch and a model


def test_both_sides_get_identical_inputs(tmp_path, tiny_model):
    pairs = real_pairs(24)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    docs = [{"_id": f"d{i}", "title": "", "text": p["positive"]} for i, p in enumerate(pairs)]
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    cfg = Tier1Config.from_dict({"gpu_counts": [1], "model": str(tiny_model), "batch_size": 8, "max_seq_length": 32,
                                 "eval_batch_size": 8, "bench_steps": 3, "bench_texts": 20, "bench_repeats": 1})
    out = tmp_path / "bench"
    compare.main(["--config", stage_json(cfg, "bench"), "--pairs", str(tmp_path / "train.jsonl"),
                  "--corpus", str(tmp_path / "corpus.jsonl"), "--md", str(out / "compare.md"),
                  "--json", str(out / "compare.json")])
    report = BenchRecord.read(out / "compare.json")
    result = report.recipes["matched"]
    tier1, st = result["sides"]["tier1"]["inputs"], result["sides"]["sentence-transformers"]["inputs"]
    assert result["inputs_differ"] == {}
    assert tier1 == st
    assert tier1["n_pairs"] == 24 and tier1["n_texts"] == 20 and tier1["steps"] == 3
    assert tier1["precision"] == "fp32" and tier1["warmup_steps"] == 0 and tier1["grad_clip"] is None
    # the same model gives the same embeddings through either library
    assert result["encode_min_cosine"] > 0.9999
    for key in ("train_steps_ratio", "encode_texts_ratio", "encode_with_tokenize_ratio"):
        assert result[key] > 0
    # each side timed the steps after the first, in its own process
    for side in ("tier1", "sentence-transformers"):
        measured = json.loads((out / "measurements" / "matched" / f"{side}_1.json").read_text())
        assert measured["train"]["steps_timed"] == 2
    assert "| training steps/s |" in (out / "compare.md").read_text()
    # host_overhead: each side's step less its arithmetic floor on the same batches
    host = report.recipes["host_overhead"]
    for side in ("tier1", "sentence-transformers"):
        measured = json.loads((out / "measurements" / "host_overhead" / f"{side}_1.json").read_text())["train"]
        assert 0 < measured["floor_s"]
        assert len(measured["step_s"]) == len(measured["floor_step_s"]) == measured["steps_timed"]
        assert measured["floor_s"] == pytest.approx(sum(measured["floor_step_s"]))
        tokenize = measured.get("tokenize_s", 0.0)  # tier1's, timed apart from its steps
        assert measured["host_ms_per_step"] == pytest.approx(1000 * (
            statistics.median(measured["step_s"]) + tokenize / measured["steps_timed"]
            - statistics.median(measured["floor_step_s"])))
        assert host["host_ms_per_step"][side] == measured["host_ms_per_step"]
    assert report.host_overhead_ratio == pytest.approx(
        host["host_ms_per_step"]["sentence-transformers"] / host["host_ms_per_step"]["tier1"])
    assert "| host (step - floor) |" in (out / "compare.md").read_text()
