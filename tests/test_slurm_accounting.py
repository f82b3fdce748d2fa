"""The sacct path: the cluster of test_slurm.py with accounting (`scripts/slurm_cluster.sh start
--accounting`: slurmdbd over a MariaDB of its own), as most real clusters have it. The executor then
asks sacct for job status, whose answers differ from squeue's; the tiny pipeline must equal the local
run as on the cluster without accounting, and a cancelled job must end the run and be named; a failed
job that squeue has forgotten (MinJobAge) is named from sacct.

The cluster kinds take a module each: a fixture is set up once per module, so test_slurm.py's cluster
stops before this one starts (a restart of a few seconds) and each kind's tests run on a real cluster
of that kind; the local run and the prepared data are made once for both (test_slurm.made_once).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

import test_slurm as ts
from test_slurm import local_tiny, prepared  # noqa: F401 (fixtures)
from tier1.runtime import console, slurm

pytestmark = [pytest.mark.slow, pytest.mark.slurm]


@pytest.fixture(scope="module")
def cluster():
    yield from ts.cluster_of(accounting=True)


def test_the_tiny_pipeline_through_slurm_with_accounting_equals_the_local_run(cluster, tmp_path, tiny_model, local_tiny):  # noqa: F811
    screen = ts.tiny_pipeline_through_slurm(tmp_path, tiny_model, local_tiny)
    assert "SLURM: job status from sacct (accounting works)" in screen, screen[-3000:]
    # every job of the run is in the accounting database, as it ended
    run = ts.run_id(screen)
    accounted = ts.accounted(run)
    assert len(accounted) == 11 and set(accounted.values()) == {"COMPLETED"}, accounted


def test_scancel_of_a_training_job_is_seen_through_sacct_and_named(prepared, tmp_path):  # noqa: F811
    ts.scancel_is_named(prepared, tmp_path)


def test_a_failed_job_squeue_has_forgotten_is_named_from_sacct(cluster, tmp_path):
    """On a real cluster a job that failed early in a long run is gone from squeue by the run's end
    (MinJobAge, 300 s by default): the failure screen then names it from sacct. Here MinJobAge is
    lowered to 2 s for the test, and a failing job waits until slurmctld has purged it."""
    conf = Path(re.search(r"^SLURM_CONF\s*=\s*(\S+)", ts._sh("scontrol", "show", "config").stdout, re.M)[1])
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(time.time() - 60))
    name, kept = f"tier1-forgotten-{os.getpid()}", conf.read_text()
    try:
        conf.write_text(re.sub(r"^MinJobAge=\d+", "MinJobAge=2", kept, flags=re.M))
        assert ts._sh("scontrol", "reconfigure").returncode == 0
        job_id = ts._sh("sbatch", "--parsable", "-J", name, "-p", ts.PARTITION, "-o", "/dev/null",
                        "--wrap", "exit 3").stdout.strip().split(";")[0]
        t0 = time.monotonic()
        # slurmctld purges ended jobs older than MinJobAge on a cycle of its own (11 s here)
        while (not slurm.queued_jobs(name) or slurm.queued_jobs(name)[0].state not in slurm.FAILED_STATES) \
                and time.monotonic() - t0 < 60:
            time.sleep(0.5)
        assert [j.state for j in slurm.queued_jobs(name)] == ["FAILED"], "the job never failed as squeue sees it"
        while slurm.queued_jobs(name) and time.monotonic() - t0 < 180:
            time.sleep(1)
        print(f"squeue forgot the failed job {time.monotonic() - t0:.0f} s after its submission")
    finally:
        conf.write_text(kept)
        ts._sh("scontrol", "reconfigure")
    assert slurm.run_jobs(name, settle_s=0) == [], "squeue still has the job: nothing is tested"
    jobs = slurm.run_jobs(name, settle_s=0, accounted_since=since)
    assert [(j.job_id, j.state, j.exit_code) for j in jobs] == [(job_id, "FAILED", "3:0")], jobs
    # the screen joins it with the job's note (its label and tier1's log), as after a run
    notes, log = tmp_path / "notes", tmp_path / "train_gpus2.log"
    notes.mkdir()
    log.write_text("2026-12-07 08:00:00 ERROR tier1.stages rank 0 failed (ValueError: the cause)\n")
    (notes / f"{job_id}.json").write_text(json.dumps({"label": "train, 2 rank(s)", "log": str(log)}))
    screen = console.end_of_failed_run(os.devnull, "snakemake all", [], slurm.with_notes(jobs, notes))
    assert f"Failed: train, 2 rank(s) (SLURM job {job_id}: FAILED, reason None, exit code 3:0)" in screen, screen
    assert "ValueError: the cause" in screen, screen
