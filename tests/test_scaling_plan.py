"""What the workflow plans for the scaling additions, by dry run: the per-rank compute job, the
batch sweep's jobs per size and world size, and the shared-GPU rehearsal."""

from __future__ import annotations

import re

from test_workflow_plan import plan, report_command, report_index, trained, workdir  # noqa: F401 (fixture)


def rule_jobs(proc, rule: str) -> list[str]:
    """The output paths of every job of `rule` (a rule with inputs lists them before its output)."""
    return sorted(re.findall(rf"rule {rule}:\n(?:    (?!output:).*\n)*?    output: (\S+)", proc.stdout))


def test_the_sweep_plans_one_job_per_size_and_world_size_and_the_report_reads_them(workdir):  # noqa: F811
    proc = plan(workdir, "--config", "batch_sweep=[8,32]")
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = sorted(f"results/default/sweep/b{b}/gpus{n}.json" for b in (8, 32) for n in (1, 2, 4))
    assert rule_jobs(proc, "sweep_step") == expected
    assert rule_jobs(proc, "rank_compute") == ["results/default/train/rank_compute.json"]
    command = report_command(proc)
    records = report_index(proc)["records"]
    assert records["rank_compute"] == "results/default/train/rank_compute.json"
    assert "results/default/report/plots/sweep.png" in command
    assert sorted(records["sweep"].values()) == expected
    jobs = proc.stdout.split("\n\n")
    job = next(j for j in jobs if "output: results/default/sweep/b32/gpus4.json" in j)
    assert "timed=1" in job and "--ranks 4 " in job and "tier1.stages.sweep_step" in job and "--batch 32 " in job
    assert "--world-sizes 1 2 4 " in next(j for j in jobs if "rule rank_compute:" in j)


def test_no_sweep_by_default(workdir):  # noqa: F811
    proc = plan(workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert rule_jobs(proc, "sweep_step") == [] and "sweep.png" not in report_command(proc)


def test_a_sweep_size_that_does_not_split_is_refused_before_any_job(workdir):  # noqa: F811
    proc = plan(workdir, "--config", "batch_sweep=[6]")
    assert proc.returncode != 0
    assert "batch_sweep: global batch 6 does not split over 4 ranks" in proc.stdout + proc.stderr


def test_share_gpu_plans_two_ranks_on_one_gpu(workdir):  # noqa: F811
    refused = plan(workdir, "--config", "gpu_counts=[1,2]", gpus=1)
    assert refused.returncode != 0 and "share_gpu: true runs them on one GPU" in refused.stdout + refused.stderr
    proc = plan(workdir, "--config", "share_gpu=true", gpus=1)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert trained(proc) == [1, 2]
    job = next(j for j in proc.stdout.split("\n\n") if "output: results/default/train/gpus2/" in j and "rule train:" in j)
    assert "--ranks 2 --gpus --share-gpu" in job and "gpu=1" in job
