"""Token caches and checkpoints are data, never code: crafted, damaged and old files are refused
(the cache, naming the fix) or set aside (checkpoints, so a rerun heals), and nothing in them runs."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from tier1.encoder import token_cache
from tier1.training import checkpoint

CPU = torch.device("cpu")


class Payload:
    """Unpickling this creates `marker`: what a crafted file would do with a shell command."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def crafted(path, marker) -> None:
    """A torch file (as the old formats were) whose unpickling creates `marker`."""
    torch.save(Payload(marker), path)


def test_the_payload_runs_when_unpickled(tmp_path):
    """The control: loading a crafted file the old way runs it, so the tests below mean something."""
    crafted(tmp_path / "last.pt", tmp_path / "marker")
    torch.load(tmp_path / "last.pt", weights_only=False).close()
    assert (tmp_path / "marker").exists()


# -- token cache --------------------------------------------------------------------------------

CACHE = {"max_seq_length": 8, "vocab_size": 30522, "train_ids": ["a", "ünïcode", ""], "anchor": [[101, 7, 102], [], [5]],
         "doc_ids": [], "corpus": [], "query_ids": ["q1"], "queries": [[2**31 - 1, 0]]}


def test_token_cache_keeps_keys_and_types(tmp_path):
    token_cache.save(CACHE, tmp_path / "tokens.safetensors")
    back = token_cache.load(tmp_path / "tokens.safetensors", 8)
    assert back == CACHE
    assert all(type(i) is int for row in back["anchor"] for i in row) and type(back["max_seq_length"]) is int
    assert [p.name for p in tmp_path.iterdir()] == ["tokens.safetensors"]


def test_crafted_token_cache_is_refused_without_running(tmp_path, tiny_model):
    from tier1.config import Tier1Config, TrainConfig
    from tier1.runtime import distributed
    from tier1.stages.train import Outputs, train

    path, marker = tmp_path / "tokens.safetensors", tmp_path / "marker"
    crafted(path, marker)
    with pytest.raises(token_cache.TokenCacheError) as err:
        token_cache.load(path, 8)
    assert str(path) in str(err.value) and f"snakemake --cores 1 -f {path}" in str(err.value)
    assert "\n" not in str(err.value)
    # the way every rank of a training run reads it
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"id": "p0", "anchor": "a", "positive": "b"}) + "\n")
    cfg = Tier1Config(model=str(tiny_model), max_seq_length=8, gpu_counts=(1,)).view(TrainConfig)
    with pytest.raises(token_cache.TokenCacheError):
        train(cfg, distributed.setup(), data, Outputs.in_folder(tmp_path / "run"), tokens=path)
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "flipped", "empty", "other metadata"])
def test_damaged_token_cache_is_refused(tmp_path, damage):
    path = tmp_path / "tokens.safetensors"
    token_cache.save(CACHE, path)
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[:-5])
    elif damage == "flipped":
        path.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(2)}, path, metadata={"format": "something else"})
    with pytest.raises(token_cache.TokenCacheError, match="rerun the tokenize stage"):
        token_cache.load(path, 8)


# -- checkpoints --------------------------------------------------------------------------------

def state(step: int = 2, repeat: int = 0) -> dict:
    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 0.5)
    layer(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    return {"model": layer.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "step": step, "repeat": repeat, "walls": [1.25], "loss_rows": [{"step": 1, "loss": 0.1 + 0.2}]}


def test_checkpoint_round_trip_restores_everything(tmp_path):
    saved = state()
    checkpoint.save(tmp_path, saved, "fp")
    back = checkpoint.load(tmp_path, "fp", CPU)
    assert {k: back[k] for k in ("step", "repeat", "walls", "loss_rows")} == \
           {k: saved[k] for k in ("step", "repeat", "walls", "loss_rows")}
    assert all(torch.equal(back["model"][k], saved["model"][k]) for k in saved["model"])
    optimizer = torch.optim.AdamW(torch.nn.Linear(4, 2).parameters(), lr=1e-3)
    optimizer.load_state_dict(back["optimizer"])  # int keys and tuples survive
    assert torch.equal(optimizer.state_dict()["state"][0]["exp_avg"], saved["optimizer"]["state"][0]["exp_avg"])
    assert back["scheduler"] == saved["scheduler"]
    checkpoint.clear(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_of_another_config_is_not_read(tmp_path):
    checkpoint.save(tmp_path, state(), "other")
    tensors, marker = tmp_path / "tensors-0-2.pt", tmp_path / "marker"
    crafted(tensors, marker)
    assert checkpoint.load(tmp_path, "mine", CPU) is None
    assert not marker.exists() and tensors.exists()  # ignored, not read and not set aside


def test_crafted_checkpoint_with_a_matching_sidecar_is_set_aside_without_running(tmp_path, caplog):
    """Even when the sidecar's fingerprint and checksum match, the tensor file is read as tensors only."""
    import hashlib

    checkpoint.save(tmp_path, state(), "fp")
    tensors, marker = tmp_path / "tensors-0-2.pt", tmp_path / "marker"
    crafted(tensors, marker)
    sidecar = json.loads((tmp_path / "last.json").read_text())
    sidecar["tensors"].update(bytes=tensors.stat().st_size, sha256=hashlib.sha256(tensors.read_bytes()).hexdigest())
    (tmp_path / "last.json").write_text(json.dumps(sidecar))
    with caplog.at_level(logging.WARNING, logger="tier1.checkpoint"):
        assert checkpoint.load(tmp_path, "fp", CPU) is None
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json.corrupt", "tensors-0-2.pt.corrupt"]
    assert str(tmp_path / "last.json") in caplog.text


def test_pickled_checkpoint_of_earlier_versions_is_never_loaded(tmp_path):
    marker = tmp_path / "marker"
    crafted(tmp_path / "last.pt", marker)
    assert checkpoint.load(tmp_path, "fp", CPU) is None
    assert not marker.exists() and (tmp_path / "last.pt.corrupt").exists()


@pytest.mark.parametrize("damage", ["truncated tensors", "flipped tensors", "missing tensors", "garbage sidecar",
                                    "wrong types"])
def test_damaged_checkpoint_is_set_aside_and_the_next_save_works(tmp_path, damage, caplog):
    checkpoint.save(tmp_path, state(), "fp")
    tensors, sidecar = tmp_path / "tensors-0-2.pt", tmp_path / "last.json"
    raw = tensors.read_bytes()
    if damage == "truncated tensors":
        tensors.write_bytes(raw[: len(raw) // 2])
    elif damage == "flipped tensors":
        tensors.write_bytes(raw[:100] + bytes([raw[100] ^ 1]) + raw[101:])
    elif damage == "missing tensors":
        tensors.unlink()
    elif damage == "garbage sidecar":
        sidecar.write_bytes(b"\x80\x04garbage")
    else:
        meta = json.loads(sidecar.read_text())
        meta["state"]["step"] = "2"
        sidecar.write_text(json.dumps(meta))
    with caplog.at_level(logging.WARNING, logger="tier1.checkpoint"):
        assert checkpoint.load(tmp_path, "fp", CPU) is None
    assert "moved aside" in caplog.text and (tmp_path / "last.json.corrupt").exists()
    assert checkpoint.load(tmp_path, "fp", CPU) is None  # nothing left to trip over
    checkpoint.save(tmp_path, state(step=4), "fp")
    assert checkpoint.load(tmp_path, "fp", CPU)["step"] == 4


def test_a_kill_between_the_two_writes_keeps_the_previous_checkpoint(tmp_path):
    checkpoint.save(tmp_path, state(step=2), "fp")
    torch.save({"half": torch.zeros(1)}, tmp_path / "tensors-0-4.pt")  # the next save's tensors, no sidecar yet
    assert checkpoint.load(tmp_path, "fp", CPU)["step"] == 2
    checkpoint.save(tmp_path, state(step=6), "fp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "tensors-0-6.pt"]


def test_opening_the_checkpoint_folder_removes_interrupted_saves(tmp_path):
    checkpoint.save(tmp_path, state(), "fp")
    killed_save = tmp_path / ".tier1-tmp.0123abcd.tensors-0-4.pt"
    earlier_version = tmp_path / ".last.pt.x1y2z3w4"  # mkdtemp's name, before temporaries had a prefix
    for folder, name in ((killed_save, "tensors-0-4.pt"), (earlier_version, "last.pt")):
        folder.mkdir()
        (folder / name).write_bytes(b"partial")
    assert checkpoint.load(tmp_path, "fp", CPU)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.json", "tensors-0-2.pt"]
