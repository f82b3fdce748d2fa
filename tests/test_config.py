import pytest

from tier1 import ConfigError, Tier1Config
from tier1.config import STAGE_KEYS, config_hash


def test_defaults_keep_the_seed_names():
    cfg = Tier1Config()
    for key in ("train_samples", "test_samples", "num_epochs", "batch_size", "eval_batch_size",
                "use_multi_gpu", "gradient_checkpointing", "gpu_counts", "model", "dataset", "seed",
                "max_seq_length", "learning_rate"):
        assert hasattr(cfg, key)
    assert cfg.gpu_counts == (1, 2, 4)


def test_strong_scaling_splits_the_global_batch():
    cfg = Tier1Config(batch_size=32, gpu_counts=(1, 4))
    assert cfg.global_batch(4) == 32 and cfg.per_device_batch(4) == 8


def test_weak_scaling_keeps_the_per_device_batch():
    cfg = Tier1Config(batch_size=32, gpu_counts=(1, 4), scaling="weak")
    assert cfg.global_batch(4) == 128 and cfg.per_device_batch(4) == 32


def test_indivisible_batch_is_a_named_config_error():
    with pytest.raises(ConfigError, match=r"batch_size: 30 is not divisible by world size x grad_accum_steps = 4"):
        Tier1Config(batch_size=30, gpu_counts=(1, 4))
    with pytest.raises(ConfigError, match="grad_accum_steps"):
        Tier1Config(batch_size=32, gpu_counts=(1, 2), grad_accum_steps=3)


def test_use_multi_gpu_off_trains_only_the_baseline():
    assert Tier1Config(use_multi_gpu=False).world_sizes == (1,)


def test_round_trip_and_stage_subsets():
    cfg = Tier1Config.from_dict({"batch_size": 16, "gpu_counts": [2, 1]})
    assert cfg.gpu_counts == (1, 2)
    assert Tier1Config.from_dict(cfg.to_dict()) == cfg
    for stage, keys in STAGE_KEYS.items():
        assert set(cfg.subset(keys)) == set(keys), stage
    assert "batch_size" not in STAGE_KEYS["prepare"]  # so a batch change never re-prepares data


def test_config_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_a_training_job_checks_only_its_own_world_size():
    from tier1.train import run_config

    stage = Tier1Config(batch_size=6, gpu_counts=(1, 3)).subset(STAGE_KEYS["train"])
    assert run_config(stage, 3).per_device_batch(3) == 2
    with pytest.raises(ConfigError, match="batch_size"):
        run_config(stage, 4)
