"""The sacct path: the cluster of test_slurm.py with accounting (`scripts/slurm_cluster.sh start
--accounting`: slurmdbd over a MariaDB of its own), as most real clusters have it. The executor then
asks sacct for job status, whose answers differ from squeue's; the tiny pipeline must equal the local
run as on the cluster without accounting, and a cancelled job must end the run and be named.

The cluster kinds take a module each: a fixture is set up once per module, so test_slurm.py's cluster
stops before this one starts (a restart of a few seconds) and each kind's tests run on a real cluster
of that kind; the local run and the prepared data are made once for both (test_slurm.made_once).
"""

from __future__ import annotations

import pytest

import test_slurm as ts
from test_slurm import local_tiny, prepared  # noqa: F401 (fixtures)

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
