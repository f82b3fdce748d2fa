"""FLOP counts against a hand count for the tiny BERT, the datasheet peak table, MFU and the matmul probe."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tier1.encoder import model
from tier1.measure import flops

# The tiny BERT of helpers.make_tiny_model: hidden 32, 2 layers, intermediate 64.
H, LAYERS, INTER = 32, 2, 64
# Per layer: Q, K, V and the attention output (4 x (H*H + H)), the FFN in and out
# (H*I + I and I*H + H), two layer norms (2 x 2H). Plus the embeddings' layer norm (2H).
PER_LAYER = 4 * (H * H + H) + (H * INTER + INTER) + (INTER * H + H) + 2 * 2 * H
HAND_COUNT = LAYERS * PER_LAYER + 2 * H


@pytest.fixture(scope="module")
def tiny(tiny_model):
    encoder, _ = model.load(str(tiny_model))
    return encoder


def test_non_embedding_parameters_match_a_hand_count(tiny):
    assert flops.non_embedding_parameters(tiny) == HAND_COUNT == 17152


def test_non_embedding_parameters_are_the_linear_and_layer_norm_parameters(tiny):
    independent = sum(p.numel() for m in tiny.modules() if isinstance(m, (nn.Linear, nn.LayerNorm))
                      for p in m.parameters(recurse=False))
    assert flops.non_embedding_parameters(tiny) == independent
    tables = sum(p.numel() for m in tiny.modules() if isinstance(m, nn.Embedding) for p in m.parameters())
    assert independent + tables == sum(p.numel() for p in tiny.parameters())


def test_layers_and_hidden_read_from_the_config(tiny):
    assert flops.layers_and_hidden(tiny) == (LAYERS, H)
    assert flops.layers_and_hidden(tiny.transformer) == (LAYERS, H)


def test_counts_for_the_tiny_model_by_hand():
    seq = 24
    train = 6 * HAND_COUNT + 12 * LAYERS * H * seq
    assert flops.train_flops_per_token(HAND_COUNT, LAYERS, H, seq) == train == 121_344
    # 8 sequences padded to 24 tokens: every padded position is computed.
    assert flops.train_flops(HAND_COUNT, LAYERS, H, seq, 8) == 8 * 24 * train


@pytest.mark.parametrize("name, card", [
    ("NVIDIA A40", "NVIDIA A40"),
    ("NVIDIA A100-SXM4-40GB", "NVIDIA A100"),
    ("NVIDIA A100-SXM4-80GB", "NVIDIA A100"),
    ("NVIDIA A100-PCIE-40GB", "NVIDIA A100"),
    ("NVIDIA A100 80GB PCIe", "NVIDIA A100"),
    ("NVIDIA L40S", "NVIDIA L40S"),
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100 SXM"),
    ("NVIDIA H100 PCIe", "NVIDIA H100 PCIe"),
    ("NVIDIA H100 NVL", "NVIDIA H100 NVL"),
    ("NVIDIA H200", "NVIDIA H200 SXM"),
    ("NVIDIA H200 NVL", "NVIDIA H200 NVL"),
    ("NVIDIA GeForce RTX 4090", "NVIDIA GeForce RTX 4090"),
])
def test_card_names_match_their_datasheet(name, card):
    peak, source = flops.peak_flops(name, "bfloat16")
    assert source == f"datasheet: {card}"
    fp32, _ = flops.peak_flops(name, "float32")
    assert peak > fp32 > 1e13


@pytest.mark.parametrize("name, dtype, tflops", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989.5),
    ("NVIDIA H100 80GB HBM3", "float32", 67),
    ("NVIDIA H100 PCIe", "bf16", 756.5),
    ("NVIDIA A100-SXM4-80GB", "tf32", 156),
    ("NVIDIA A40", "fp32", 37.4),
])
def test_dense_peaks(name, dtype, tflops):
    assert flops.peak_flops(name, dtype)[0] == pytest.approx(tflops * 1e12)


@pytest.mark.parametrize("name", ["NVIDIA RTX A4000", "NVIDIA L40", "NVIDIA GeForce RTX 4090 D",
                                  "NVIDIA GeForce RTX 4090 Laptop GPU", "Tesla V100-SXM2-16GB", "cpu (x86_64)"])
def test_unknown_cards_have_no_peak(name):
    assert flops.peak_flops(name, "bfloat16") == (None, None)


def test_unknown_precision_has_no_peak():
    assert flops.peak_flops("NVIDIA H100 80GB HBM3", "float8") == (None, None)


def test_mfu_arithmetic():
    # 5e14 FLOPs in 2 s is 2.5e14 FLOP/s; against a 1e15 peak that is 25 %.
    assert flops.mfu(5e14, 2.0, 1e15) == pytest.approx(0.25)
    assert flops.mfu(5e14, 2.0, None) is None
    with pytest.raises(ValueError):
        flops.mfu(5e14, 0.0, 1e15)


def test_cpu_matmul_probe_returns_a_rate():
    rate = flops.measured_matmul_peak("cpu", torch.float32, size=128, repeats=2)
    assert rate > 0


def test_module_imports_without_torch():
    import subprocess
    import sys

    code = "import sys; import tier1.measure.flops; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_step_counts_the_padded_positions_it_ran_and_mfu_uses_them(tiny_model, pairs, monkeypatch):
    """Model FLOPs of a step are counted on the (rows, width) each length part was padded to and run
    at, not on the texts' real tokens; the MFU figure divides that count. A batch of 32 with short
    and long texts, in 4 length parts on the CPU ladder (multiples of 16 up to 64)."""
    import dataclasses

    from tier1.config import Tier1Config, TrainConfig
    from tier1.encoder.token_cache import pair_tokens
    from tier1.runtime import distributed
    from tier1.training import record
    from tier1.training.builder import build_trainer

    mixed = [{k: " ".join(v.split()[:4]) if i % 3 else v for k, v in p.items()} for i, p in enumerate(pairs[:64])]
    cfg = Tier1Config.from_dict({"model": str(tiny_model), "batch_size": 32, "gpu_counts": [1], "max_seq_length": 64,
                                 "length_buckets": 4}).view(TrainConfig)
    encoder, tokenizer = model.load(str(tiny_model))
    trainer = build_trainer(cfg, distributed.setup(), encoder, pair_tokens(tokenizer, mixed, 64))
    ran = []  # (rows, width) of every encoder call the step makes, as executed
    trainer.encoder.transformer.register_forward_pre_hook(
        lambda m, args, kw: ran.append(tuple((kw.get("inputs_embeds") if kw.get("inputs_embeds") is not None
                                              else kw["input_ids"]).shape[:2])), with_kwargs=True)
    batch = trainer.plan.schedule()[0][1]
    trainer.train_step(batch)

    n, (layers, hidden) = flops.non_embedding_parameters(trainer.encoder), flops.layers_and_hidden(trainer.encoder)
    assert len(ran) == 8 and len({width for _, width in ran}) > 1  # 4 parts a side, padded to their own widths
    executed = sum(flops.train_flops(n, layers, hidden, width, rows) for rows, width in ran)
    assert trainer.flops == executed
    # real tokens and padded positions differ, so the count at real lengths would be another figure
    real, padded = trainer.tokens_seen["real"], trainer.tokens_seen["padded"]
    assert padded == sum(rows * width for rows, width in ran) > real
    assert trainer.flops > flops.train_flops_per_token(n, layers, hidden, 0) * real

    # MFU: this count per step over the steady step time and the peak (a GPU's, faked here)
    monkeypatch.setattr(record.devices, "device_name", lambda device: "NVIDIA H200")
    trainer.ctx = dataclasses.replace(trainer.ctx, device=torch.device("cuda", 0))
    got = record.utilisation(trainer, [{"model_flops": trainer.flops, "steps": 1}], 0.5)
    peak = flops.peak_flops("NVIDIA H200", "float32")[0]
    assert got["model_flops_per_step"] == executed
    assert got["mfu"] == pytest.approx(executed / 0.5 / peak)


@pytest.mark.parametrize("shared, gpus", [(False, 2), (True, 1)])
def test_mfu_counts_the_gpus_the_ranks_ran_on(monkeypatch, shared, gpus):
    """2 ranks on 2 GPUs are measured against 2 peaks; 2 ranks sharing one GPU (share_gpu) against
    that GPU's one peak, not a peak per rank."""
    from types import SimpleNamespace

    from tier1.runtime.distributed import Context
    from tier1.training import record

    monkeypatch.setattr(record.devices, "device_name", lambda device: "NVIDIA H200")
    ctx = Context(rank=0, world_size=2, local_rank=0, local_world_size=2, device=torch.device("cuda", 0), threads=1,
                  shared_gpu=shared)
    trainer = SimpleNamespace(ctx=ctx, autocast_dtype=torch.bfloat16, plan=SimpleNamespace(world_size=2))
    got = record.utilisation(trainer, [{"model_flops": 3e12, "steps": 1}, {"model_flops": 3e12, "steps": 1}], 0.1)
    peak = flops.peak_flops("NVIDIA H200", "bfloat16")[0]
    assert got["mfu"] == pytest.approx(6e12 / 0.1 / (peak * gpus))
