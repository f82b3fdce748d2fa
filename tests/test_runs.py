"""Named runs: one folder each, one config hash each, and a side-by-side comparison."""

import dataclasses
import json

import pytest

from tier1.config import ConfigError, Tier1Config, config_hash
from tier1.records import EvaluationRecord, ManifestRecord, TrainRecord
from tier1.tools import compare_runs as compare

from helpers import record

# a value other than the default for every setting
CHANGED = {"run_name": "other", "train_samples": 100, "test_samples": 100, "num_epochs": 2, "batch_size": 16,
           "eval_batch_size": 32, "use_multi_gpu": False, "gradient_checkpointing": True, "gpu_counts": [1, 2],
           "model": "elsewhere", "trust_remote_code": True, "dataset": "pairs.jsonl", "seed": 1, "max_seq_length": 32,
           "learning_rate": 1e-4, "scaling": "weak", "grad_accum_steps": 2, "length_buckets": 2, "precision": "fp32",
           "optimizer": "sgd", "loss_scale": 10.0, "gather_embeddings": False, "warmup_ratio": 0.0, "weight_decay": 0.0,
           "checkpoint_every": 5, "corpus_chunk_size": 128, "ignore_identical_ids": False, "repeats": 3,
           "collective_timeout_s": 60.0, "bench_steps": 5, "bench_texts": 10, "bench_repeats": 1,
           "internode_busbw_gbps": 25.0, "batch_sweep": [8], "share_gpu": True, "pad_widths": [32, 64],
           "compile": "on", "encoder": "transformers", "parallelism": "fsdp", "nodes": 2}


def run_hash(**changes) -> str:
    base = {"gpu_counts": [1, 2, 4]}
    gpus = ["GPU-0"] if changes.get("share_gpu") else []  # share_gpu is refused without a GPU to share
    return config_hash(Tier1Config.from_dict({**base, **changes}).resolve(gpus).to_dict())


def test_every_setting_is_covered_here():
    assert set(CHANGED) == {f.name for f in dataclasses.fields(Tier1Config)}


@pytest.mark.parametrize("key", sorted(CHANGED))
def test_the_run_hash_changes_when_any_setting_changes(key):
    assert run_hash(**{key: CHANGED[key]}) != run_hash()


def test_the_run_hash_is_stable():
    assert run_hash() == run_hash()


@pytest.mark.parametrize("name", ["../up", "a b", "", "-x", "x" * 65])
def test_a_run_name_must_be_a_plain_folder_name(name):
    with pytest.raises(ConfigError, match="run_name"):
        Tier1Config(run_name=name)


DISTURBED = "disturbed: other processes used 0.95 of 2 cores during the timed window"


def _fake_run(results, name, train_samples, sha, verdict, seconds, cpu="AMD EPYC", marks=None, steps=16, documents=300):
    """A finished run at world sizes 1 and 2; `marks` (world size -> marks) marks its training times.
    The report's sources name its records under the results folder it was written in ("results")."""
    folder = results / name
    (folder / "report").mkdir(parents=True)
    (folder / "data").mkdir()
    marks = marks or {}
    for n in (1, 2):
        (folder / "train" / f"gpus{n}").mkdir(parents=True)
        record(TrainRecord, world_size=n, config={"batch_size": 32}, hardware={"cpu": cpu, "cores": 2},
               libraries={"torch": "2.13.0"}, run_config_hash=name * 2, marks=marks.get(n, []), steps=steps,
               resumed_from_step=0, samples_total=steps * 32, objective={"global_batch": 32, "max_seq_length": 64},
               ).write(folder / "train" / f"gpus{n}" / "train_metrics.json")
    (folder / "eval" / "base" / "ws1").mkdir(parents=True)
    record(EvaluationRecord, world_size=1, queries=documents, documents=documents, max_seq_length=256,
           marks=[]).write(folder / "eval" / "base" / "ws1" / "metrics.json")
    (folder / "report" / "performance.md").write_text(
        f"# tier1 performance report\n\n## Verdicts\n\n- **same model: {verdict}** — details\n"
        "- **scaling: n/a** — a CPU rehearsal\n\n## The table (measured)\n")
    train = {n: f"results/{name}/train/gpus{n}/train_metrics.json" for n in (1, 2)}
    ratio1 = "" if marks.get(1) else "1.0"
    (folder / "report" / "performance.csv").write_text(
        "metric,world_size,value,unit,source\n"
        f"training_time,1,{seconds},s,{train[1]}\ntraining_time,2,{seconds / 2},s,{train[2]}\n"
        f"training_throughput,1,{512 / seconds},samples/s,{train[1]}\n"
        f"training_time_ratio,1,{ratio1},x,{train[1]}\ntraining_time_ratio,2,,x,{train[2]}\n"
        f"evaluation_time,1,2.5,s,results/{name}/eval/base/ws1/metrics.json\n"
        f"trained_ndcg@10,1,0.8,,results/{name}/eval/gpus1/ws1/metrics.json\n"
        f"peak_memory_per_device,1,1168000000,bytes,{train[1]}\n")
    record(ManifestRecord, dataset={"source": "python-stdlib"}, counts={"train_pairs": train_samples},
           content_sha256={"train": sha * 64, "test": "c" * 64},
           config={"train_samples": train_samples}).write(folder / "data" / "manifest.json")


def test_two_named_runs_side_by_side(tmp_path, capsys):
    results = tmp_path / "results"
    _fake_run(results, "default", 512, "a", "PASS", 40.0)
    _fake_run(results, "quick", 100, "b", "FAIL", 10.0)
    compare.main(["default", "quick", "--results", str(results)])
    text = (results / "compare" / "default_vs_quick.md").read_text()
    assert text in capsys.readouterr().out
    assert "| same model | PASS | FAIL |" in text
    assert "| training_time (2) | 20 s | 5 s |" in text
    # as the report shows them: a ratio with no value is n/a, memory in GB
    assert "| training_time_ratio (2) | n/a | n/a |" in text
    assert "| peak_memory_per_device (1) | 1.17 GB | 1.17 GB |" in text
    # where they differ: the data (hash and count) and the setting, not the hardware or libraries
    assert "| config: train_samples | 512 | 100 |" in text
    assert "| data: sha256 train | aaaaaaaaaaaaaaaa | bbbbbbbbbbbbbbbb |" in text
    assert "hardware:" not in text and "libraries:" not in text
    assert "Run config hashes: default defaultdefault, quick quickquick" in text
    assert "⚠" not in text and "different work" not in text  # clean times of the same work


def test_a_marked_time_stays_marked_side_by_side(tmp_path):
    """The 1-rank training of one run and the 2-rank training of the other were disturbed: their
    times, throughputs and ratios carry the mark, short in the markdown and whole in the JSON; the
    time that was never marked reads clean."""
    results = tmp_path / "results"
    _fake_run(results, "default", 512, "a", "PASS", 98.04, marks={1: [DISTURBED]})
    _fake_run(results, "mine", 512, "a", "PASS", 10.34, marks={2: [DISTURBED]})
    out = tmp_path / "cmp.md"
    compare.main(["default", "mine", "--results", str(results), "--out", str(out)])
    text = out.read_text()
    assert "| training_time (1) | 98.04 s ⚠ disturbed | 10.34 s |" in text
    assert "| training_time (2) | 49.02 s | 5.17 s ⚠ disturbed |" in text
    assert "| training_throughput (1) | 5.222 samples/s ⚠ disturbed | 49.52 samples/s |" in text
    assert "| training_time_ratio (2) | n/a ⚠ 1-rank disturbed | n/a ⚠ disturbed |" in text
    assert "| trained_ndcg@10 (1) | 0.8 | 0.8 |" in text  # not a time: nothing to mark
    assert "⚠: a number its run marked as not measured cleanly" in text
    data = json.loads(out.with_suffix(".json").read_text())
    cell = next(h for h in data["headline"] if (h["metric"], h["world_size"]) == ("training_time", 1))["runs"]
    assert cell["default"] == {"value": 98.04, "unit": "s", "text": "98.04 s ⚠ disturbed", "marks": [DISTURBED]}
    assert cell["mine"]["marks"] == []
    ratio = next(h for h in data["headline"] if (h["metric"], h["world_size"]) == ("training_time_ratio", 2))["runs"]
    assert ratio["default"]["marks"] == ["1-rank run: " + DISTURBED]


def test_a_ratio_of_one_rank_to_itself_is_shown_for_neither_run(tmp_path):
    """The report writes 1 for a clean 1-rank time over itself and nothing for a marked one: the
    row said "n/a | 1 x" though neither measured anything. Neither run shows it."""
    results = tmp_path / "results"
    _fake_run(results, "default", 512, "a", "PASS", 98.0, marks={1: [DISTURBED]})
    _fake_run(results, "mine", 512, "a", "PASS", 5.0)
    compare.main(["default", "mine", "--results", str(results)])
    text = (results / "compare" / "default_vs_mine.md").read_text()
    assert "training_time_ratio (1)" not in text and "| training_time_ratio (2) |" in text


def test_unlike_workloads_are_said_above_the_times(tmp_path):
    results = tmp_path / "results"
    _fake_run(results, "default", 512, "a", "PASS", 98.0)
    _fake_run(results, "mine", 198, "b", "PASS", 5.0, steps=6, documents=100)
    compare.main(["default", "mine", "--results", str(results)])
    text = (results / "compare" / "default_vs_mine.md").read_text()
    line = next(x for x in text.splitlines() if "different work" in x)
    assert "Training at 1 rank(s): pairs trained default 512, mine 192; steps default 16, mine 6" in line
    assert "Evaluation at 1 rank(s): queries default 300, mine 100; documents default 300, mine 100" in line
    assert text.index(line) < text.index("| training_time (1) |")
    assert ("| training_workload (1) | 512 pairs in 16 steps of 32, max_seq_length 64 "
            "| 192 pairs in 6 steps of 32, max_seq_length 64 |") in text
    assert "| evaluation_workload (1) | 300 queries, 300 documents, max_seq_length 256 |" in text


def test_a_time_whose_record_is_missing_is_not_shown_clean(tmp_path):
    results = tmp_path / "results"
    _fake_run(results, "default", 512, "a", "PASS", 40.0)
    _fake_run(results, "mine", 512, "a", "PASS", 40.0)
    (results / "mine" / "train" / "gpus2" / "train_metrics.json").unlink()
    run = compare.load_run(results, "mine")
    cell = run["cells"][("training_time", "2")]
    assert cell["text"] == "20 s ⚠ unchecked" and "results/mine/train/gpus2/train_metrics.json" in cell["marks"][0]


def test_a_run_without_a_report_is_named_with_the_runs_that_have_one(tmp_path):
    results = tmp_path / "results"
    _fake_run(results, "default", 512, "a", "PASS", 40.0)
    with pytest.raises(Exception, match=r"run 'nope': no finished report.*runs with one: default"):
        compare.load_run(results, "nope")


def test_no_run_may_take_the_comparisons_folder():
    from tier1.config import ConfigError, Tier1Config

    with pytest.raises(ConfigError, match="run_name: 'compare' is the folder `tier1 compare` writes to"):
        Tier1Config(run_name="compare")


def test_a_record_of_an_older_schema_still_gives_its_marks(tmp_path):
    """An older run's record that its class no longer reads: the marks it wrote are carried; with
    none written, the time is unchecked, not clean."""
    results = tmp_path / "results"
    _fake_run(results, "old", 512, "a", "PASS", 40.0)
    path = results / "old" / "eval" / "base" / "ws1" / "metrics.json"
    written = {**json.loads(path.read_text()), "schema": "evaluation/0", "marks": [DISTURBED]}
    path.write_text(json.dumps(written))
    assert compare.load_run(results, "old")["cells"][("evaluation_time", "1")]["text"] == "2.5 s ⚠ disturbed"
    path.write_text(json.dumps({k: v for k, v in written.items() if k != "marks"}))
    cell = compare.load_run(results, "old")["cells"][("evaluation_time", "1")]
    assert cell["text"] == "2.5 s ⚠ unchecked" and "evaluation/0" in cell["marks"][0]
