"""The max-batch probe: the search and its caps, what counts as "does not fit", ranks agreeing,
and trial batches cut from the token cache. All on CPU, with failures raised by fakes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tier1.config import ProbeConfig
from tier1.measure.batch_search import Failure, SearchLog, attempt, largest_fitting, summarise
from tier1.runtime.distributed import Context
from tier1.stages import probe as probe_mod

import helpers

CPU = Context(rank=0, world_size=1, local_rank=0, local_world_size=1, device=torch.device("cpu"), threads=1)


# -- the search --------------------------------------------------------------------------------
@pytest.mark.parametrize("limit", [1, 2, 3, 37, 64, 100, 1000, 4097])
def test_largest_fitting_finds_non_powers_of_two(limit):
    tried = []

    def fits(n):
        tried.append(n)
        return n <= limit

    assert largest_fitting(fits, limit=1 << 16) == limit
    assert len(tried) <= 2 * limit.bit_length() + 2


def test_largest_fitting_when_nothing_fits():
    assert largest_fitting(lambda n: False, limit=100) == 0


def test_largest_fitting_stops_at_the_limit():
    assert largest_fitting(lambda n: True, limit=50) == 50


def test_search_never_tries_the_batches_fused_kernels_reject():
    tried = []

    def fits(n):
        tried.append(n)
        return True

    assert largest_fitting(fits, limit=probe_mod.KERNEL_BATCH_LIMIT) == 65535
    assert max(tried) == 65535


def test_an_empty_range_tries_nothing():
    assert largest_fitting(lambda n: pytest.fail("no trial expected"), limit=0) == 0


# -- what counts as "does not fit" -------------------------------------------------------------
def raiser(err: BaseException):
    def trial():
        raise err
    return trial


def test_out_of_memory_does_not_fit():
    got = attempt(raiser(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB.\nSee docs")))
    assert got == Failure("OutOfMemoryError", "CUDA out of memory. Tried to allocate 2.00 GiB.")


@pytest.mark.parametrize("message", [
    "CUDA error: invalid configuration argument\nCUDA kernel errors might be asynchronously reported",
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
    "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if you passed in a non-contiguous input.",
])
def test_a_cuda_runtime_error_does_not_fit(message):
    got = attempt(raiser(RuntimeError(message)))
    assert got == Failure("RuntimeError", message.splitlines()[0])


def test_an_accelerator_error_does_not_fit():
    got = attempt(raiser(torch.AcceleratorError("CUDA error: an illegal memory access was encountered")))
    assert got is not None and got.kind == "AcceleratorError"


def test_a_trial_that_runs_fits():
    ran = []
    assert attempt(lambda: ran.append(1)) is None and ran == [1]


@pytest.mark.parametrize("err", [RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)"),
                                 ValueError("a bug")])
def test_other_errors_are_bugs_and_propagate(err):
    with pytest.raises(type(err)):
        attempt(raiser(err))


def test_agreed_fit_records_the_failure_and_cleans_up():
    search, cleaned = SearchLog(limit=64), []
    oom = raiser(torch.OutOfMemoryError("CUDA out of memory."))
    assert not probe_mod.agreed_fit(oom, 8, search, torch.device("cpu"), cleanup=lambda: cleaned.append(8))
    assert probe_mod.agreed_fit(lambda: None, 4, search, torch.device("cpu"), cleanup=lambda: cleaned.append(4))
    assert cleaned == [8, 4] and search.tried == [8, 4]
    assert search.failures == [(8, Failure("OutOfMemoryError", "CUDA out of memory."))]


def _agree_rank(rank: int, world_size: int, out: str) -> None:
    """Rank 1 runs out of memory on batch 8 only; every rank must still reach the same decisions."""
    from tier1.runtime import distributed

    ctx = distributed.setup()
    search = SearchLog(limit=64)

    def trial_for(b):
        return raiser(torch.OutOfMemoryError("CUDA out of memory.")) if rank == 1 and b == 8 else (lambda: None)

    decisions = [probe_mod.agreed_fit(trial_for(b), b, search, ctx.device) for b in (4, 8, 6)]
    logs = distributed.all_gather_objects(search)
    if ctx.is_main:
        with open(out, "w") as f:
            json.dump({"decisions": decisions, "summary": summarise(logs, 6)}, f)
    distributed.teardown()


def test_ranks_agree_when_only_one_fails(tmp_path):
    out = tmp_path / "agreed.json"
    helpers.spawn(_agree_rank, 2, str(out))
    got = json.loads(out.read_text())
    assert got["decisions"] == [True, False, True]
    assert got["summary"]["failed_trials"] == 1
    assert got["summary"]["failures_by_kind"] == {"OutOfMemoryError": 1}
    assert got["summary"]["first_failure"] == "rank 1, batch 8: OutOfMemoryError: CUDA out of memory."


def test_summary_counts_decisions_and_names_the_earliest_failure():
    ranks = [SearchLog(limit=100), SearchLog(limit=100)]
    for b, fail0, fail1 in [(1, None, None), (2, None, "CUBLAS_STATUS_ALLOC_FAILED"), (3, "oom", "oom")]:
        ranks[0].record(b, fail0 and Failure("OutOfMemoryError", fail0))
        ranks[1].record(b, fail1 and Failure("RuntimeError" if b == 2 else "OutOfMemoryError", fail1))
    got = summarise(ranks, found=1)
    assert got["trials"] == 3 and got["failed_trials"] == 2
    assert got["failures_by_kind"] == {"RuntimeError": 1, "OutOfMemoryError": 2}
    assert got["first_failure"] == "rank 1, batch 2: RuntimeError: CUBLAS_STATUS_ALLOC_FAILED"
    assert got["found"] == 1 and not got["at_limit"]


# -- trial batches from the token cache --------------------------------------------------------
PAD = 0


def fake_cache() -> dict:
    """Anchors of 2, 5 and 3 tokens, positives of 4, 1 and 6; documents of 3, 7, 2 and 5."""
    return {"anchor": [[11, 12], [21, 22, 23, 24, 25], [31, 32, 33]],
            "positive": [[41, 42, 43, 44], [51], [61, 62, 63, 64, 65, 66]],
            "corpus": [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16, 17]],
            "queries": [[1, 2]], "max_seq_length": 32}


def rows(batch: dict) -> list[list[int]]:
    """The unpadded ids of each row, read back through the attention mask."""
    return [ids[mask.bool()].tolist() for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]


def test_trial_tokens_put_the_longest_texts_first():
    tokens = probe_mod.trial_tokens(fake_cache(), PAD)
    assert [len(t) for t in tokens.anchor] == [5, 3, 2]
    assert [len(t) for t in tokens.positive] == [6, 4, 1]
    assert [len(t) for t in tokens.corpus] == [7, 5, 3, 2]


def test_train_batch_cycles_through_the_cache_padded_per_side():
    cache = fake_cache()
    anchors, positives = probe_mod.train_batch(probe_mod.trial_tokens(cache, PAD), 5)
    assert anchors["input_ids"].shape == (5, 5) and positives["input_ids"].shape == (5, 6)
    assert anchors["attention_mask"].dtype == torch.long
    # Longest first, then around again.
    assert rows(anchors) == [cache["anchor"][i] for i in (1, 2, 0, 1, 2)]
    assert rows(positives) == [cache["positive"][i] for i in (2, 0, 1, 2, 0)]
    assert anchors["input_ids"][1].tolist() == [31, 32, 33, PAD, PAD]  # padding follows the text


def test_even_a_batch_of_one_is_as_wide_as_the_widest_real_batch():
    anchors, positives = probe_mod.train_batch(probe_mod.trial_tokens(fake_cache(), PAD), 1)
    assert anchors["input_ids"].shape == (1, 5) and positives["input_ids"].shape == (1, 6)


def test_encode_batch_holds_the_longest_documents():
    cache = fake_cache()
    batch = probe_mod.encode_batch(probe_mod.trial_tokens(cache, PAD), 2)
    assert batch["input_ids"].shape == (2, 7)
    assert rows(batch) == [cache["corpus"][1], cache["corpus"][3]]


# -- the probe end to end, on CPU with a fake out-of-memory --------------------------------------
def test_probe_caps_and_records_failures(tiny_model, monkeypatch):
    monkeypatch.setattr(probe_mod, "KERNEL_BATCH_LIMIT", 16)
    real_step = probe_mod.forward_backward

    def step_that_fits_five(model, anchors, positives, *args, **kw):
        if len(anchors["input_ids"]) > 5:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB.")
        return real_step(model, anchors, positives, *args, **kw)

    monkeypatch.setattr(probe_mod, "forward_backward", step_that_fits_five)
    cfg = ProbeConfig(model=str(tiny_model), trust_remote_code=False, encoder="auto", max_seq_length=32, precision="fp32",
                      gradient_checkpointing=False, loss_scale=20.0)
    got = probe_mod.probe(cfg, CPU, fake_cache())
    assert got["max_train_batch_per_device"] == 5 and got["max_train_batch_global"] == 5
    train = got["train_search"]
    assert train["limit"] == 16 and train["trials"] == 6  # 1, 2, 4, 8 (fails), 6 (fails), 5
    assert train["failed_trials"] == 2 and train["failures_by_kind"] == {"OutOfMemoryError": 2}
    assert train["first_failure"] == "rank 0, batch 8: OutOfMemoryError: CUDA out of memory. Tried to allocate 1.00 GiB."
    assert train["padded_length"] == {"anchor": 5, "positive": 6}
    # Encoding stops at the corpus size (4 documents), below the kernel cap.
    assert got["max_encode_batch_per_device"] == 4
    assert got["encode_search"]["limit"] == 4 and got["encode_search"]["at_limit"]
    assert got["encode_search"]["failed_trials"] == 0 and got["encode_search"]["first_failure"] is None
    assert got["work_s"] > 0  # the search's seconds, for the report's pipeline overhead
    json.dumps(got)  # what the stage writes


PROBE_CFG = ('{"model": "x", "trust_remote_code": false, "encoder": "auto", "max_seq_length": 32, "precision": "auto", '
             '"gradient_checkpointing": false, "loss_scale": 20.0}')


def test_cpu_probe_says_not_applicable_for_each_world_size(tmp_path):
    """One process on a CPU writes every world size's record (the CPU rule runs it once)."""
    outs = [tmp_path / "gpus1.json", tmp_path / "gpus2.json"]
    subprocess.run([sys.executable, "-m", "tier1.stages.probe", "--config", PROBE_CFG, "--tokens", str(tmp_path / "absent.pt"),
                    "--world-size", "1", "2", "--out", *map(str, outs)], check=True, capture_output=True)
    for size, out in zip((1, 2), outs):
        got = json.loads(out.read_text())
        assert got["max_train_batch_per_device"] is None and "no GPU" in got["not_applicable"]
        assert got["world_size"] == size and got["work_s"] == 0.0  # nothing searched


def test_probe_wants_a_file_per_world_size(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "tier1.stages.probe", "--config", PROBE_CFG, "--tokens", "absent.pt",
                           "--world-size", "1", "2", "--out", str(tmp_path / "one.json")], capture_output=True, text=True)
    assert proc.returncode == 2 and "give one each" in proc.stderr
    assert not (tmp_path / "one.json").exists()


# -- on a GPU ---------------------------------------------------------------------------------
@pytest.mark.gpu
def test_a_real_out_of_memory_is_caught_and_freed():
    device = torch.device("cuda", torch.cuda.current_device())
    before = torch.cuda.memory_allocated(device)
    too_big = 2 * torch.cuda.get_device_properties(device).total_memory

    def trial():
        kept = torch.empty(1 << 20, device=device)  # noqa: F841 - held by the frame when the next line fails
        torch.empty(too_big, dtype=torch.uint8, device=device)

    search = SearchLog(limit=1)
    assert not probe_mod.agreed_fit(trial, 1, search, device)
    assert search.failures[0][1].kind == "OutOfMemoryError"
    assert torch.cuda.memory_allocated(device) == before


@pytest.mark.gpu
def test_probe_on_a_gpu(tiny_model, monkeypatch):
    monkeypatch.setattr(probe_mod, "KERNEL_BATCH_LIMIT", 64)
    device = torch.device("cuda", torch.cuda.current_device())
    ctx = Context(rank=0, world_size=1, local_rank=0, local_world_size=1, device=device, threads=1)
    cfg = ProbeConfig(model=str(tiny_model), trust_remote_code=False, encoder="auto", max_seq_length=32, precision="bf16",
                      gradient_checkpointing=False, loss_scale=20.0)
    got = probe_mod.probe(cfg, ctx, fake_cache())
    assert got["max_train_batch_per_device"] == 64 and got["max_encode_batch_per_device"] == 4
    assert got["train_search"]["failed_trials"] == 0
