"""The benchmark's order of processes, without running them (tests/test_bench.py runs them)."""

import torch

from tier1.bench import compare
from tier1.bench.workload import Workload
from tier1.records import BenchRecord
from tier1.runtime import provenance


def fake_side(calls: list[str]):
    """A side whose warm-up process is four times slower than the measured ones."""
    def run_side(side, workload, out, embeddings):
        calls.append(out.name)
        slow = out.name.endswith("_warmup.json")
        if embeddings is not None:
            torch.save(torch.eye(3), embeddings)
        inputs = {"precision": "fp32", "n_texts": 3}
        return {"train": {"steps_per_s": 1.0 if slow else 4.0, "inputs": inputs, "marks": [], "model_flops_per_step": 1.0},
                "encode": {"texts_per_s": 10.0 if slow else 40.0, "passes": 3, "precision": "fp32", "marks": []}}
    return run_side


def bench_record(repeats: int, matched: dict) -> BenchRecord:
    return BenchRecord(device="d", threads=1, repeats=repeats, config={}, recipes={"matched": matched},
                       host_overhead_ratio=None, host_overhead_ms_per_step=None, **provenance.stamp("n/a"))


def workload(tmp_path) -> Workload:
    return Workload(model="m", pairs="p", corpus="c", steps=2, batch_size=4, max_seq_length=8, precision="fp32",
                    texts=3, eval_batch_size=4, learning_rate=1e-5, warmup_ratio=0.0, weight_decay=0.0,
                    loss_scale=20.0, seed=0, threads=1)


def test_a_warm_up_round_runs_first_and_stays_out_of_the_medians(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(compare, "run_side", fake_side(calls))
    result = compare.measure(workload(tmp_path), 2, tmp_path, warm_up=True)
    assert calls == ["tier1_warmup.json", "sentence-transformers_warmup.json", "tier1_1.json",
                     "sentence-transformers_1.json", "sentence-transformers_2.json", "tier1_2.json"]
    for side in compare.SIDES:
        assert result["sides"][side]["train_steps_per_s"]["all"] == [4.0, 4.0]
        assert result["warm_up"][side] == {"train_steps_per_s": 1.0, "encode_texts_per_s": 10.0}
    md = compare.markdown(bench_record(2, result))
    assert "one process per side ran untimed" in md


def test_without_a_warm_up_every_process_is_measured(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(compare, "run_side", fake_side(calls))
    result = compare.measure(workload(tmp_path), 1, tmp_path)
    assert calls == ["tier1_1.json", "sentence-transformers_1.json"]
    assert result["warm_up"] is None
    md = compare.markdown(bench_record(1, result))
    assert "untimed" not in md
