"""Named runs: one folder each, one config hash each, and a side-by-side comparison."""

import dataclasses

import pytest

from tier1.config import ConfigError, Tier1Config, config_hash
from tier1.records import ManifestRecord, TrainRecord
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


def _fake_run(results, name, train_samples, sha, verdict, seconds, cpu="AMD EPYC"):
    folder = results / name
    (folder / "report").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "train" / "gpus1").mkdir(parents=True)
    (folder / "report" / "performance.md").write_text(
        f"# tier1 performance report\n\n## Verdicts\n\n- **same model: {verdict}** — details\n"
        "- **scaling: n/a** — a CPU rehearsal\n\n## The table (measured)\n")
    (folder / "report" / "performance.csv").write_text(
        "metric,world_size,value,unit,source\n"
        f"training_time,1,{seconds},s,x\ntraining_time,2,{seconds / 2},s,x\ntrained_ndcg@10,1,0.8,,x\n"
        "training_time_ratio,2,,,x\npeak_memory_per_device,1,1168000000,bytes,x\n")
    record(ManifestRecord, dataset={"source": "python-stdlib"}, counts={"train_pairs": train_samples},
           content_sha256={"train": sha * 64, "test": "c" * 64},
           config={"train_samples": train_samples}).write(folder / "data" / "manifest.json")
    record(TrainRecord, config={"batch_size": 32}, hardware={"cpu": cpu, "cores": 2}, libraries={"torch": "2.13.0"},
           run_config_hash=name * 2).write(folder / "train" / "gpus1" / "train_metrics.json")


def test_two_named_runs_side_by_side(tmp_path, capsys):
    results = tmp_path / "results"
    _fake_run(results, "default", 512, "a", "PASS", 40.0)
    _fake_run(results, "quick", 100, "b", "FAIL", 10.0)
    compare.main(["default", "quick", "--results", str(results)])
    text = (results / "compare" / "default_vs_quick.md").read_text()
    assert text in capsys.readouterr().out
    assert "| same model | PASS | FAIL |" in text
    assert "| training_time (2) | 20 s | 5 s |" in text
    # as the report shows them: a ratio with no value (a marked time) is n/a, memory in GB
    assert "| training_time_ratio (2) | n/a | n/a |" in text
    assert "| peak_memory_per_device (1) | 1.17 GB | 1.17 GB |" in text
    # where they differ: the data (hash and count) and the setting, not the hardware or libraries
    assert "| config: train_samples | 512 | 100 |" in text
    assert "| data: sha256 train | aaaaaaaaaaaaaaaa | bbbbbbbbbbbbbbbb |" in text
    assert "hardware:" not in text and "libraries:" not in text
    assert "Run config hashes: default defaultdefault, quick quickquick" in text


def test_a_run_without_a_report_is_named_with_the_runs_that_have_one(tmp_path):
    results = tmp_path / "results"
    _fake_run(results, "default", 512, "a", "PASS", 40.0)
    with pytest.raises(Exception, match=r"run 'nope': no finished report.*runs with one: default"):
        compare.load_run(results, "nope")


def test_no_run_may_take_the_comparisons_folder():
    from tier1.config import ConfigError, Tier1Config

    with pytest.raises(ConfigError, match="run_name: 'compare' is the folder `tier1 compare` writes to"):
        Tier1Config(run_name="compare")
