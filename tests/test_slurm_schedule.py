"""tier1.runtime.slurm without a cluster: the status-check schedule (on a clock the test moves), the
executor's waits and checks put on it (a stand-in executor), sacct's job states as the executor must
read them, and the heartbeat that beats while its relay is stuck."""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
import time
import types

import pytest

from tier1.runtime import slurm


def waits(schedule: slurm.StatusSchedule, checks: int, now: float = 0.0) -> list[float]:
    """The waits between `checks` status checks that each see nothing change."""
    out = []
    for _ in range(checks):
        now += schedule.wait_s(now)
        schedule.checked(now, changed=False)
        out.append(schedule.wait_s(now))
    return out


def test_checks_back_off_while_nothing_changes_up_to_the_cap():
    schedule = slurm.StatusSchedule(cap_s=30, first_s=2, backoff=1.5)
    assert schedule.wait_s(0.0) == 0  # a new schedule checks at once (with no job yet, SLURM is not asked)
    schedule.checked(0.0, changed=True)
    assert schedule.wait_s(0.0) == 2
    assert waits(schedule, 9) == [3, 4.5, 6.75, 10.125, 15.1875, 22.78125, 30, 30, 30]


def test_a_job_seen_to_end_brings_the_next_check_back_to_the_first_interval():
    schedule = slurm.StatusSchedule(cap_s=30, first_s=2, backoff=1.5)
    waits(schedule, 10)
    schedule.checked(100.0, changed=True)
    assert schedule.wait_s(100.0) == 2


def test_an_expected_change_shortens_a_long_wait_at_once():
    schedule = slurm.StatusSchedule(cap_s=30, first_s=2, backoff=1.5)
    waits(schedule, 10)
    schedule.checked(200.0, changed=False)
    assert schedule.wait_s(200.0) == 30
    schedule.expect_change(200.0)
    assert schedule.wait_s(200.0) == 2
    # a check already due sooner stays as due
    schedule.checked(300.0, changed=True)
    schedule.expect_change(301.5)
    assert schedule.wait_s(301.5) == 0.5


def test_the_cap_comes_from_the_environment_and_bounds_the_first_check():
    assert slurm.status_cap_s({}) == slurm.STATUS_MAX_S
    assert slurm.status_cap_s({slurm.STATUS_MAX_ENV: "3"}) == 3
    assert slurm.status_cap_s({slurm.STATUS_MAX_ENV: "soon"}) == slurm.STATUS_MAX_S
    assert slurm.status_cap_s({slurm.STATUS_MAX_ENV: "0"}) == slurm.STATUS_MAX_S
    schedule = slurm.StatusSchedule(cap_s=1)
    schedule.checked(0.0, changed=True)
    assert schedule.wait_s(0.0) == 1 and waits(schedule, 3) == [1, 1, 1]


class FakeExecutor:
    """The parts of Snakemake's RemoteExecutor the schedule hooks into."""

    def __init__(self, finished: set[str]):
        self.finished, self.wait, self.submitted, self.slept = finished, True, [], 0

    async def check_active_jobs(self, active_jobs):
        for job in active_jobs:
            if job not in self.finished:
                yield job

    async def sleep(self):
        self.slept += 1

    def report_job_submission(self, job_info, register_job=True):
        self.submitted.append(job_info)


def check(executor, jobs: list[str]) -> list[str]:
    async def run():
        return [job async for job in executor.check_active_jobs(jobs)]
    return asyncio.run(run())


def test_the_executor_waits_and_checks_on_the_schedule():
    executor = FakeExecutor(finished=set())
    schedule = slurm.adapt_status_checks(executor, env={slurm.STATUS_MAX_ENV: "20"})
    assert type(executor).__name__ == "FakeExecutor" and schedule.cap_s == 20
    executor.report_job_submission("job1")
    assert executor.submitted == ["job1"] and schedule.interval == schedule.first_s
    assert check(executor, ["job1", "job2"]) == ["job1", "job2"]
    assert schedule.interval == schedule.first_s * schedule.backoff  # nothing ended: backed off
    executor.finished.add("job2")
    assert check(executor, ["job1", "job2"]) == ["job1"]
    assert schedule.interval == schedule.first_s  # a job ended: the next wave is young


def test_a_run_that_is_ending_stops_waiting():
    executor = FakeExecutor(finished=set())
    schedule = slurm.adapt_status_checks(executor)
    schedule.checked(time.monotonic() + 3600, changed=False)  # the next check an hour away
    executor.wait = False
    asyncio.run(asyncio.wait_for(executor.sleep(), timeout=30))
    assert executor.slept == 0  # the executor's own sleep is not used


def test_the_heartbeat_beats_while_the_relay_is_stuck(tmp_path):
    release, lines = threading.Event(), []

    def stuck_relay(line):
        release.wait(timeout=30)
        lines.append(line)

    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "7.story").write_text("[tier1] a job: started\n")
    beat = slurm.Heartbeat(tmp_path / "run" / "heartbeat", every_s=0.05, relay=stuck_relay)
    seen = {(tmp_path / "run" / "heartbeat").read_text()}
    deadline = time.monotonic() + 30
    while len(seen) < 4 and time.monotonic() < deadline:
        seen.add((tmp_path / "run" / "heartbeat").read_text())
        time.sleep(0.02)
    assert len(seen) >= 4 and not lines, "the file changed while the relay was stuck on its first line"
    release.set()
    beat.finish()
    assert lines == ["[tier1] a job: started"]
    assert not (tmp_path / "run").exists(), "a run that ended well leaves no notes folder"


def test_the_default_staleness_is_a_few_beats():
    assert slurm.stale_s({}) == slurm.HEARTBEAT_STALE_S == 5 * slurm.HEARTBEAT_EVERY_S
    assert slurm.stale_s({slurm.STALE_ENV: "12"}) == 12


def test_outside_a_slurm_job_there_is_no_job_of_its_own_to_cancel():
    assert slurm.cancel_own_job(env={}) is False


def test_a_story_that_ends_tells_the_schedule_before_slurm_does(tmp_path):
    ends, lines = [], []
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "8.story").write_text(
        "[tier1] train, 2 rank(s): started\n[tier1] train, 2 rank(s): step 3/12\n"
        "[tier1] train, 2 rank(s): done in 7 s\n[tier1] report: FAILED (exit 1) after 2 s; the end of x.log:\n")
    beat = slurm.Heartbeat(tmp_path / "run" / "heartbeat", every_s=60, relay=lines.append,
                           on_job_end=lambda: ends.append(len(lines)))
    beat.relay_stories()
    assert ends == [3, 4] and len(lines) == 4
    beat.finish()


def test_sacct_states_read_as_squeue_names_them():
    assert slurm.plain_state("CANCELLED by 0") == "CANCELLED"
    assert [slurm.plain_state(s) for s in ("RUNNING", "COMPLETED", "TIMEOUT", "OUT_OF_MEMORY")] == \
        ["RUNNING", "COMPLETED", "TIMEOUT", "OUT_OF_MEMORY"]


def sacct_executor(monkeypatch, states: dict[str, str]):
    """A stand-in for the executor's module and its check: a job in none of its end states is running."""
    module = types.ModuleType("sacct_plugin")

    async def query_job_status(command, logger):
        return dict(states), 0.01

    class Executor:
        wait = True

        async def check_active_jobs(self, active_jobs):
            found, _ = await module.query_job_status("sacct ...", None)
            for job in active_jobs:
                if found.get(job) not in {"COMPLETED", "CANCELLED", "FAILED", "TIMEOUT"}:
                    yield job

    module.query_job_status, module.Executor = query_job_status, Executor
    Executor.__module__ = module.__name__
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module, Executor()


def test_a_job_cancelled_is_seen_to_end_when_sacct_says_who_cancelled_it(monkeypatch):
    states = {"5": "CANCELLED by 0", "6": "RUNNING"}
    _, executor = sacct_executor(monkeypatch, states)
    assert check(executor, ["5", "6"]) == ["5", "6"]  # as the executor reads sacct: 5 runs for ever
    schedule = slurm.adapt_status_checks(executor)
    assert slurm.plain_job_states(executor)  # found through the adapted class too
    assert check(executor, ["5", "6"]) == ["6"]
    assert schedule.interval == schedule.first_s  # a job ended
    assert slurm.plain_job_states(executor), "a second call wraps nothing twice"
    assert check(executor, ["5", "6"]) == ["6"]


def test_a_status_query_that_failed_stays_failed(monkeypatch):
    module, executor = sacct_executor(monkeypatch, {})

    async def failed(command, logger):
        return None, None

    module.query_job_status = failed
    slurm.plain_job_states(executor)
    assert asyncio.run(module.query_job_status("sacct ...", None)) == (None, None)


def test_an_executor_without_the_status_query_is_said_not_found():
    assert slurm.plain_job_states(FakeExecutor(finished=set())) is False


def test_the_installed_executor_checks_through_its_modules_status_query():
    plugin = pytest.importorskip("snakemake_executor_plugin_slurm")
    assert callable(plugin.query_job_status)
    assert "await query_job_status(" in inspect.getsource(plugin.Executor.check_active_jobs)


def test_the_failure_screen_adds_the_jobs_squeue_has_forgotten_from_sacct(monkeypatch):
    """squeue still has one job of the run, sacct has both (one cancelled, named as sacct names it):
    the one squeue forgot is added with sacct's plain state and exit code; sacct is asked only where
    it works (`accounted_since`), from the run's start."""
    asked = []

    def answers(cmd, timeout=20):
        asked.append(cmd[0])
        out = {"squeue": "12|FAILED|NonZeroExitCode|rule_evaluate_wildcards_2\n",
               "scontrol": "JobId=12 ExitCode=1:0\n",
               "sacct": "11|CANCELLED by 0|None||0:15\n12|FAILED|NonZeroExitCode||1:0\n"}[cmd[0]]
        assert cmd[0] != "sacct" or cmd[cmd.index("--starttime") + 1] == "2026-12-07T08:00:00"
        return types.SimpleNamespace(returncode=0, stdout=out)

    monkeypatch.setattr(slurm, "_run", answers)
    assert [(j.job_id, j.state) for j in slurm.run_jobs("run", settle_s=0)] == [("12", "FAILED")]
    assert "sacct" not in asked
    jobs = slurm.run_jobs("run", settle_s=0, accounted_since="2026-12-07T08:00:00")
    assert [(j.job_id, j.state, j.exit_code, j.what()) for j in jobs] == [
        ("11", "CANCELLED", "0:15", "a job of this run"), ("12", "FAILED", "1:0", "rule evaluate (2)")]
    assert all(j.failed for j in jobs)
