"""The rehearsal's last step (tier1.tools.gpu_rehearsal): what a GPU call brought back is checked
against its plan, and each way it can fall short is named."""

from __future__ import annotations

import json
import shlex
import tarfile

from tier1 import layout
from tier1.records import BenchRecord, CosineRecord
from tier1.tools import gpu_rehearsal

from helpers import record

RUN = "gpu-check"


def plan_file(tmp_path):
    """A two-job plan: one writes a record, the GPU tests write none."""
    cosine = f"{layout.run_folder(RUN)}/{layout.GPU_COSINE}"
    lines = ["#   gpu-check/cosine: 15 s, 15 s from the start",
             "#   past the plan: gpu-check/gpu_tests: 60 s, 75 s from the start",
             "job " + shlex.join([RUN, "cosine", "180", "steps", "", "", cosine, "", "true"]),
             "job " + shlex.join([RUN, "gpu_tests", "100", "steps", "", "", "", "", "true"])]
    path = tmp_path / "gpu_check.sh"
    path.write_text("\n".join(lines) + "\n")
    return path


def bring_back(tmp_path, steps: str, cosine: dict | None):
    """$OUT as a call leaves it: the summary, the bench's comparison and the runs' archive."""
    out = tmp_path / "out"
    out.mkdir(parents=True)
    (out / "gpu_summary.md").write_text("# summary\n")
    (out / "gpu_summary.json").write_text(json.dumps({"Device": "cpu", "Train MFU": "n/a"}))
    record(BenchRecord, device="cpu", threads=2, repeats=1, config={}, recipes={}, host_overhead_ratio=None,
           host_overhead_ms_per_step=None).write(out / "compare.json")
    folder = tmp_path / "runs" / RUN
    (folder / "logs").mkdir(parents=True)
    (folder / layout.GPU_CHECK_STEPS).write_text(steps)
    if cosine is not None:
        (folder / layout.GPU_COSINE).parent.mkdir(parents=True)
        (folder / layout.GPU_COSINE).write_text(json.dumps(cosine))
    with tarfile.open(out / gpu_rehearsal.ARCHIVE, "w:gz") as tar:
        tar.add(folder, arcname=RUN)
    return out


def test_a_call_that_ran_every_job_passes_and_says_each_jobs_time(tmp_path):
    good = record(CosineRecord, min_cosine=0.999, mean_cosine=0.9999).to_json()
    out = bring_back(tmp_path, "cosine\t2.5\t0\ngpu_tests\t9.1\t0\n", good)
    failures, notes = gpu_rehearsal.check(plan_file(tmp_path), out, "SKIPPED [2] tests/test_gpu.py:70: needs a CUDA GPU\n"
                                          "19 skipped, 649 deselected in 5.93s\n")
    assert failures == []
    assert "time: gpu-check/cosine: 2.5 s here, 15 s expected on the GPU" in notes
    assert "GPU tests: SKIPPED [2] tests/test_gpu.py:70: needs a CUDA GPU" in notes
    assert any(n.startswith("summary: 2 rows, n/a in 1: Train MFU") for n in notes)


def test_a_failed_job_a_missing_record_and_a_bad_one_are_each_named(tmp_path):
    out = bring_back(tmp_path, "cosine\t2.5\t0\n", {"schema": "cosine/1", "min_cosine": 1.0})
    failures, _ = gpu_rehearsal.check(plan_file(tmp_path), out, "")
    assert any(f.startswith("gpu-check/gpu_tests: never ran") for f in failures)
    assert any("gpu-check/cosine:" in f and "missing field(s)" in f for f in failures)

    out2 = bring_back(tmp_path / "b", "cosine\t2.5\t1\ngpu_tests\t9\t0\n", None)
    failures, _ = gpu_rehearsal.check(plan_file(tmp_path), out2, "")
    assert failures == ["gpu-check/cosine: status '1'"]

    out3 = bring_back(tmp_path / "c", "cosine\t2.5\t0\ngpu_tests\t9\t0\n", None)
    (out3 / "gpu_summary.md").unlink()
    failures, _ = gpu_rehearsal.check(plan_file(tmp_path), out3, "")
    assert any(f.endswith("gpu_summary.md: missing") for f in failures)
    assert any("gpu_check/cosine.json is not in the archive" in f for f in failures)
