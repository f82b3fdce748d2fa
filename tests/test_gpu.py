"""What only a GPU can show: CUDA-event timing, whole-device memory, NVML by UUID, bf16 training.

Marked `gpu`: skipped without CUDA; scripts/gpu_session.sh runs them on a GPU machine.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu


def test_device_memory_counts_more_than_the_allocator():
    from tier1.runtime.device import used_memory

    device = torch.device("cuda", 0)
    x = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    assert used_memory(device) >= torch.cuda.memory_allocated(device) + x.numel()  # + context


def test_nvml_samples_this_device_by_uuid():
    from tier1.measure.gpu_activity import GpuSampler

    device = torch.device("cuda", 0)
    with GpuSampler(device, interval=0.02) as sampler:
        a = torch.randn(8192, 8192, device=device)
        for _ in range(50):
            a = (a @ a) / 8192
        torch.cuda.synchronize()
    summary = sampler.summary()
    assert sampler.available and summary["sampled"] and summary["samples"] > 0 and "unobserved" not in summary
    assert summary["sm_clock_mhz_min"] > 0 and summary["gpu_util_max_pct"] is not None


def test_this_process_is_not_its_own_gpu_neighbour():
    """On a machine of its own, whether NVML reports this namespace's pids or a sandbox's host
    pids (gVisor), the sampler finds no other process beside this one's context."""
    from tier1.measure.gpu_activity import GpuSampler

    device = torch.device("cuda", 0)
    x = torch.ones(64 * 2**20, device=device)  # a context and some reserved memory
    with GpuSampler(device, interval=0.02) as sampler:
        for _ in range(20):
            x = x * 1.0001
        torch.cuda.synchronize()
    summary = sampler.summary()
    assert summary["sampled"] and summary["other_process_ids"] == [], summary


def test_a_bf16_training_step_on_the_gpu(tiny_model, pairs):
    from tier1.config import Tier1Config, TrainConfig
    from tier1.encoder import model
    from tier1.encoder.token_cache import pair_tokens
    from tier1.runtime import distributed
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


def _gpu_trainer(tiny_model, pairs, **kw):
    from tier1.config import Tier1Config, TrainConfig
    from tier1.encoder import model
    from tier1.encoder.token_cache import pair_tokens
    from tier1.runtime import distributed
    from tier1.training.builder import build_trainer

    ctx = distributed.setup()
    cfg = Tier1Config(model=str(tiny_model), batch_size=16, max_seq_length=128, gpu_counts=(1,), precision="bf16",
                      checkpoint_every=0, **kw).view(TrainConfig)
    encoder, tokenizer = model.load(str(tiny_model))
    return build_trainer(cfg, ctx, encoder, pair_tokens(tokenizer, pairs[:96], 128))


@pytest.mark.parametrize("length_buckets", [1, 2])
def test_steps_run_without_a_host_sync(tiny_model, pairs, monkeypatch, length_buckets):
    """Under CUDA's sync debug mode "error", any synchronising call inside a step raises; only
    Trainer.read (every READ_EVERY steps and at the end) may wait for the device. The shapes the
    window meets were all warmed first."""
    from tier1.training import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "READ_EVERY", 3)
    trainer = _gpu_trainer(tiny_model, pairs, length_buckets=length_buckets)
    trainer.warm_up()
    trainer.warm_shapes()
    original_read = trainer.read

    def read():
        torch.cuda.set_sync_debug_mode(0)
        try:
            original_read()
        finally:
            torch.cuda.set_sync_debug_mode("error")

    monkeypatch.setattr(trainer, "read", read)
    trainer.plan.schedule()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        trainer.fit()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert trainer.step == 6 and all(torch.isfinite(torch.tensor(r["loss"])) for r in trainer.loss_rows)
    record = trainer.shape_log.record(trainer.rungs, "")
    assert record["first_met_in_window"] == 0 and record["met"]
    assert len(trainer.times.step) == 6 and all(t > 0 for t in trainer.times.step)


@pytest.mark.parametrize("width", [64, 128, 192, 256])
def test_masked_bf16_attention_matches_fp32_with_finite_gradients(width):
    """The chosen kernel (tier1.encoder.bert.CUDA_BACKENDS) at ladder widths, including width % 128 == 64
    where cuDNN's masked backward returns NaN on torch 2.11 (pytorch/pytorch#196678)."""
    from types import SimpleNamespace

    from tier1.encoder import bert

    torch.manual_seed(0)
    config = SimpleNamespace(**{**bert.DEFAULTS, "vocab_size": 1000, "hidden_size": 128, "num_hidden_layers": 2,
                                "num_attention_heads": 2, "intermediate_size": 256,
                                "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0})
    model = bert.Bert(config).cuda()
    ids = torch.randint(1, 1000, (8, width), device="cuda")
    mask = torch.ones_like(ids)
    mask[::2, width // 3:] = 0
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(ids, mask)
    out.float().sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert all(torch.isfinite(g).all() for g in grads)
    with torch.no_grad():
        reference = model(ids, mask)  # fp32
    keep = mask.bool()
    cosine = torch.nn.functional.cosine_similarity(out.float()[keep], reference[keep], dim=-1)
    assert cosine.min() > 0.99
