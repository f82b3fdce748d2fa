"""Floating-point work of a step, the device's peak rate, and model FLOPs utilisation (MFU).

Counts follow the usual transformer convention: 2 FLOPs (a multiply and an add) per parameter
per token for each matmul pass, so a forward is 2N per token and forward + backward 6N, where N
counts the parameters outside the embedding tables (a table lookup does no arithmetic). On top
comes attention, whose score (Q K^T) and value (A V) matmuls have no parameters: per layer and
token 2 x hidden x seq for each of the two, so 4 x layers x hidden x seq forward and three times
that, 12 x layers x hidden x seq, forward + backward. Softmax, layer norms, activations and the
loss are elementwise and left out; a recomputed forward (gradient checkpointing) is not counted
either, since MFU measures the model's work, not the hardware's.

Sequence lengths are the padded ones: a batch is computed at its longest text's length for
every row, and the GPU does that work whether or not a position is masked out.

torch is imported only inside the functions that need it.
"""

from __future__ import annotations

import re

from tier1.measure.clock import Stopwatch, synced


def train_flops_per_token(non_embedding_params: int, layers: int, hidden: int, seq_len: int) -> int:
    """Forward + backward FLOPs per token: 6N + 12 x layers x hidden x seq_len."""
    return 6 * non_embedding_params + 12 * layers * hidden * seq_len


def train_flops(non_embedding_params: int, layers: int, hidden: int, padded_len: int, sequences: int) -> int:
    """Forward + backward FLOPs of one padded batch: `sequences` rows, each `padded_len` tokens long.

    A training step on pairs is two such batches (anchors and positives, each padded to its own
    longest text): add the two.
    """
    return sequences * padded_len * train_flops_per_token(non_embedding_params, layers, hidden, padded_len)


def non_embedding_parameters(model) -> int:
    """Parameters outside the embedding tables (word, position and token-type embeddings).

    Every other parameter (linear layers, layer norms, the embeddings' layer norm) counts; a
    parameter shared by several modules counts once.
    """
    from torch import nn

    tables = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    unique = {id(p): p for p in model.parameters()}
    return sum(p.numel() for key, p in unique.items() if key not in tables)


def layers_and_hidden(model) -> tuple[int, int]:
    """(num_hidden_layers, hidden_size) from a Hugging Face model's config, or from the
    `transformer` a sentence encoder wraps."""
    config = getattr(model, "config", None) or model.transformer.config
    return config.num_hidden_layers, config.hidden_size


# Dense peak TFLOP/s (no 2:4 sparsity; the datasheets' "*" figures are halved), by precision:
# "bfloat16" = BF16 tensor cores with FP32 accumulate, "tf32" = TF32 tensor cores,
# "float32" = plain FP32 without tensor cores (PyTorch's default for float32 matmuls).
# Patterns are matched against torch.cuda.get_device_name(); the first match wins, so the
# specific variants (PCIe, NVL) come before the general ones.
_PEAKS: list[tuple[str, str, dict[str, float]]] = [
    # NVIDIA A100 Tensor Core GPU datasheet: SXM and PCIe, 40 and 80 GB, share these rates.
    (r"\bA100\b", "NVIDIA A100", {"bfloat16": 312, "tf32": 156, "float32": 19.5}),
    # NVIDIA A40 datasheet.
    (r"\bA40\b", "NVIDIA A40", {"bfloat16": 149.7, "tf32": 74.8, "float32": 37.4}),
    # NVIDIA L40S datasheet.
    (r"\bL40S\b", "NVIDIA L40S", {"bfloat16": 362.05, "tf32": 183, "float32": 91.6}),
    # NVIDIA H100 Tensor Core GPU datasheet, H100 PCIe column (1,513 / 756 TFLOPS with sparsity).
    (r"\bH100\b.*\bPCIe\b", "NVIDIA H100 PCIe", {"bfloat16": 756.5, "tf32": 378, "float32": 51}),
    # NVIDIA H100 Tensor Core GPU datasheet, H100 NVL column (1,671 / 835 TFLOPS with sparsity).
    (r"\bH100 NVL\b", "NVIDIA H100 NVL", {"bfloat16": 835.5, "tf32": 417.5, "float32": 60}),
    # NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column (1,979 / 989 TFLOPS with sparsity);
    # the SXM part reports itself as "NVIDIA H100 80GB HBM3".
    (r"\bH100\b.*(\bHBM3\b|\bSXM)", "NVIDIA H100 SXM", {"bfloat16": 989.5, "tf32": 494.5, "float32": 67}),
    # NVIDIA H200 Tensor Core GPU datasheet, H200 NVL column (1,671 / 835 TFLOPS with sparsity).
    (r"\bH200 NVL\b", "NVIDIA H200 NVL", {"bfloat16": 835.5, "tf32": 417.5, "float32": 60}),
    # NVIDIA H200 Tensor Core GPU datasheet, H200 SXM column (1,979 / 989 TFLOPS with sparsity).
    (r"\bH200\b", "NVIDIA H200 SXM", {"bfloat16": 989.5, "tf32": 494.5, "float32": 67}),
    # NVIDIA Ada GPU Architecture whitepaper, appendix table for the GeForce RTX 4090: BF16 with
    # FP32 accumulate runs at half the FP16-accumulate rate on GeForce cards. Not the 4090 D or
    # the laptop part, which are slower.
    (r"\bRTX 4090$", "NVIDIA GeForce RTX 4090", {"bfloat16": 165.2, "tf32": 82.6, "float32": 82.6}),
]
_DTYPE_ALIASES = {"bf16": "bfloat16", "fp32": "float32", "float": "float32"}


def peak_flops(device_name: str, dtype_name: str) -> tuple[float | None, str | None]:
    """(dense peak FLOP/s, "datasheet: <card>") for a CUDA device name and a precision
    ("bfloat16", "float32", "tf32"); (None, None) for a card or precision not in the table."""
    dtype_name = _DTYPE_ALIASES.get(dtype_name, dtype_name)
    for pattern, card, tflops in _PEAKS:
        if re.search(pattern, device_name.strip()):
            if dtype_name not in tflops:
                return None, None
            return tflops[dtype_name] * 1e12, f"datasheet: {card}"
    return None, None


def measured_matmul_peak(device, dtype, size: int = 8192, repeats: int = 10) -> float:
    """Achieved FLOP/s of a dense size x size matmul in `dtype` on `device` (a torch.device or a
    string), timed after one untimed warm-up on tier1.measure.clock's stopwatch (CUDA events on a GPU).

    For cards missing from the peak table; callers label it "measured matmul". It is a lower
    bound on the datasheet peak, so an MFU against it reads higher than one against a datasheet.
    """
    import torch

    device = torch.device(device)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    torch.matmul(a, b)  # warm-up: kernel selection, workspace, clocks
    synced(device)  # the warm-up done before the stopwatch starts
    with Stopwatch(device) as watch:
        for _ in range(repeats):
            torch.matmul(a, b)
    return 2 * size**3 * repeats / watch.seconds


def mfu(flops_per_step: float, step_seconds: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation: achieved FLOP/s over the peak; None when the peak is unknown."""
    if peak is None:
        return None
    if step_seconds <= 0 or peak <= 0:
        raise ValueError(f"mfu needs a positive step time and peak, got {step_seconds} s and {peak} FLOP/s")
    return flops_per_step / step_seconds / peak
