import dataclasses
import json

import pytest
import yaml

from tier1 import ConfigError, Tier1Config
from tier1.config import STAGE_VIEWS, TrainConfig, config_hash, parse_stage_json, stage_json

from helpers import REPO


def test_the_dataclass_defaults_are_the_default_run():
    """One set of defaults: config/config.yaml and Tier1Config must not drift apart."""
    yaml_values = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    defaults = Tier1Config().to_dict()
    assert set(yaml_values) == set(defaults)
    for key, value in yaml_values.items():
        assert defaults[key] == value, key


def test_the_schema_and_the_dataclass_know_the_same_keys():
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    assert set(schema["properties"]) == {f.name for f in dataclasses.fields(Tier1Config)}


def test_every_view_key_is_a_setting_and_each_stage_sees_only_its_own():
    fields = {f.name for f in dataclasses.fields(Tier1Config)}
    for stage, view in STAGE_VIEWS.items():
        assert {f.name for f in dataclasses.fields(view)} <= fields, stage
    base, bigger = Tier1Config(), Tier1Config(batch_size=64)
    assert stage_json(base, "prepare") == stage_json(bigger, "prepare")  # a batch change keeps the data
    assert stage_json(base, "train") != stage_json(bigger, "train")
    assert stage_json(base, "evaluate") == stage_json(bigger, "evaluate")


def test_a_stage_gets_its_typed_view_from_the_json_its_rule_passes():
    cfg = Tier1Config(batch_size=16, optimizer="sgd")
    view = parse_stage_json(stage_json(cfg, "train"), "train")
    assert isinstance(view, TrainConfig) and view.batch_size == 16 and view.optimizer == "sgd"
    with pytest.raises(ConfigError, match="lacks keys"):
        parse_stage_json(json.dumps({"model": "m"}), "train")
    with pytest.raises(ConfigError, match="optimizer"):
        parse_stage_json(stage_json(cfg, "train").replace('"sgd"', '"lion"'), "train")


def test_strong_scaling_splits_the_global_batch():
    cfg = Tier1Config(batch_size=32, gpu_counts=(1, 4)).view(TrainConfig)
    assert cfg.global_batch(4) == 32 and cfg.per_device_batch(4) == 8


def test_weak_scaling_keeps_the_per_device_batch():
    cfg = Tier1Config(batch_size=32, gpu_counts=(1, 4), scaling="weak").view(TrainConfig)
    assert cfg.global_batch(4) == 128 and cfg.per_device_batch(4) == 32


def test_indivisible_batch_is_a_named_config_error():
    with pytest.raises(ConfigError, match=r"batch_size: 30 is not divisible by world size x grad_accum_steps = 4"):
        Tier1Config(batch_size=30, gpu_counts=(1, 4))
    with pytest.raises(ConfigError, match="grad_accum_steps"):
        Tier1Config(batch_size=32, gpu_counts=(1, 2), grad_accum_steps=3)


def test_use_multi_gpu_off_trains_only_the_baseline():
    assert Tier1Config(use_multi_gpu=False, gpu_counts=(1, 2)).world_sizes == (1,)
    assert Tier1Config(gpu_counts=(1, 2)).world_sizes == (1, 2)
    with pytest.raises(ValueError, match="resolve"):
        _ = Tier1Config().world_sizes  # "auto" means nothing until the machine is known


def test_unknown_keys_are_refused():
    with pytest.raises(ConfigError, match="bogus"):
        Tier1Config.from_dict({"bogus": 1})


def test_round_trip():
    cfg = Tier1Config.from_dict({"batch_size": 16, "gpu_counts": [2, 1]})
    assert cfg.gpu_counts == (1, 2)
    assert Tier1Config.from_dict(cfg.to_dict()) == cfg


def test_config_hash_ignores_key_order():
    assert config_hash({"a": 1, "b": 2}) == config_hash({"b": 2, "a": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})


def test_a_training_job_checks_only_its_own_world_size():
    view = Tier1Config(batch_size=6, gpu_counts=(1, 3)).view(TrainConfig)
    view.check_world_size(3)
    assert view.per_device_batch(3) == 2
    with pytest.raises(ConfigError, match="batch_size"):
        view.check_world_size(4)


def test_the_encoder_setting_reruns_every_stage_that_loads_the_model_and_no_other():
    """`encoder` changes which code turns text into embeddings: the token ids (tokenize: AutoTokenizer
    under transformers), training, evaluation, the memory probe and the bench rerun; the data and
    the collectives (sized from the parameter count, the same under both) stay cached."""
    auto, reference = Tier1Config(), Tier1Config(encoder="transformers")
    for stage in ("tokenize", "train", "evaluate", "probe", "bench"):
        assert stage_json(auto, stage) != stage_json(reference, stage), stage
        assert parse_stage_json(stage_json(reference, stage), stage).encoder == "transformers"
    for stage in ("prepare", "commbench", "report"):
        assert stage_json(auto, stage) == stage_json(reference, stage), stage
    assert config_hash(auto.to_dict()) != config_hash(reference.to_dict())


def test_an_unknown_encoder_is_a_named_config_error():
    with pytest.raises(ConfigError, match=r"encoder: 'bert' is not one of 'auto', 'transformers'"):
        Tier1Config(encoder="bert")


def test_nodes_divide_every_multi_rank_world_size():
    cfg = Tier1Config(gpu_counts=[1, 2, 4], nodes=2)
    assert [(cfg.nodes_for(n), cfg.ranks_per_node(n)) for n in (1, 2, 4)] == [(1, 1), (2, 1), (2, 2)]
    with pytest.raises(ConfigError, match=r"nodes: 2 does not divide world size 3 .*multiples of 2"):
        Tier1Config(gpu_counts=[1, 3], nodes=2, batch_size=24)
    with pytest.raises(ConfigError, match=r"nodes: 0 is not a whole number >= 1"):
        Tier1Config(nodes=0)
    # auto keeps the world sizes the nodes divide; GPUs are counted per node (TIER1_GPUS declares one node's)
    assert Tier1Config(gpu_counts="auto", nodes=2).resolve(["gpu0", "gpu1"]).gpu_counts == (1, 2, 4)
    with pytest.raises(ConfigError, match="world size 8 needs 4 GPUs per node, but jobs here see 2"):
        Tier1Config(gpu_counts=[1, 8], nodes=2).resolve(["gpu0", "gpu1"])
