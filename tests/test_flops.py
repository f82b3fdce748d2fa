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
