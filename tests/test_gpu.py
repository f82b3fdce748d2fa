"""What only a GPU can show: CUDA-event timing, whole-device memory, NVML by UUID, bf16 training.

Marked `gpu`: skipped without CUDA; scripts/gpu_check.sh runs them on a GPU machine.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def test_stopwatch_times_the_kernels_not_the_launch():
    from tier1.device import Stopwatch

    device = torch.device("cuda", 0)
    a = torch.randn(4096, 4096, device=device)
    torch.cuda.synchronize()
    with Stopwatch(device) as clock:
        for _ in range(20):
            a = a @ a
            a = a / a.norm()
    assert clock.seconds > 0
    # 20 dense 4096^3 products are 2.7 TFLOP: no card does them in under 0.1 ms
    assert clock.seconds > 1e-4


def test_device_memory_counts_more_than_the_allocator():
    from tier1.device import used_memory

    device = torch.device("cuda", 0)
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    assert used_memory(device) >= torch.cuda.memory_allocated(device) + x.numel()  # + context


def test_nvml_samples_this_device_by_uuid():
    from tier1.gpu_activity import GpuSampler

    device = torch.device("cuda", 0)
    with GpuSampler(device, interval=0.02) as sampler:
        a = torch.randn(8192, 8192, device=device)
        for _ in range(50):
            a = (a @ a) / 8192
        torch.cuda.synchronize()
    summary = sampler.summary()
    assert sampler.available and summary["sampled"] and summary["samples"] > 0 and "unobserved" not in summary
    assert summary["sm_clock_mhz_min"] > 0 and summary["gpu_util_max_pct"] is not None


def test_a_bf16_training_step_on_the_gpu(tiny_model, pairs):
    from tier1 import distributed, model
    from tier1.config import Tier1Config, TrainConfig
    from tier1.token_cache import pair_tokens
    from tier1.training.builder import build_trainer

    ctx = distributed.setup()
    assert ctx.device.type == "cuda"
    cfg = Tier1Config(model=str(tiny_model), batch_size=8, max_seq_length=32, gpu_counts=(1,),
                      precision="bf16").view(TrainConfig)
    encoder, tokenizer = model.load(str(tiny_model))
    trainer = build_trainer(cfg, ctx, encoder, pair_tokens(tokenizer, pairs[:32], 32))
    trainer.warm_up()
    trainer.fit()
    assert trainer.autocast_dtype == torch.bfloat16 and trainer.step == 4
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in trainer.loss_rows)
    assert trainer.peak_used_memory and trainer.peak_used_memory > torch.cuda.max_memory_allocated()
