"""The console's story of a job: start and end lines, rank 0's progress, the log's end on failure."""

import sys
from pathlib import Path

from tier1.runtime import console


def _job(tmp_path, code: str, capsys):
    log = tmp_path / "logs" / "job.log"
    rc = console.run("train, 2 rank(s)", log, [sys.executable, "-c", code])
    return rc, log.read_text(), capsys.readouterr().err


def test_a_job_that_works(tmp_path, capsys):
    code = ("print('12:00:00 INFO tier1.stages.train [rank 0]: trained 16 steps'); "
            "print('12:00:00 INFO tier1.stages.train [rank 1]: trained 16 steps'); "
            "print('train x2: 100%|####| 16/16 [00:52<00:00]'); print('noise from a library')")
    rc, log, err = _job(tmp_path, code, capsys)
    assert rc == 0
    assert "noise from a library" in log and "[rank 1]" in log  # the log keeps everything
    lines = err.splitlines()
    assert lines[0] == "[tier1] train, 2 rank(s): started"
    assert "[tier1] train, 2 rank(s): 12:00:00 INFO tier1.stages.train [rank 0]: trained 16 steps" in lines
    assert any("16/16" in line for line in lines)
    assert not any("[rank 1]" in line or "noise" in line for line in lines)
    assert lines[-1].startswith("[tier1] train, 2 rank(s): done in ")


def test_a_job_that_fails_shows_the_end_of_its_log(tmp_path, capsys):
    code = "import sys; print('\\n'.join(f'line {i}' for i in range(40))); sys.exit(3)"
    rc, log, err = _job(tmp_path, code, capsys)
    assert rc == 3
    assert "FAILED (exit 3)" in err
    assert "    line 39" in err and "    line 25" in err and "line 24\n" not in err


def test_the_end_of_a_run(tmp_path):
    md = tmp_path / "performance.md"
    md.write_text("# r\n\n- Machine: x\n\n## Verdicts\n\n- **same model: PASS** — ok\n\n"
                  "## The table (measured)\n\n| a | b |\n|---|---|\n\n## Scaling detail\n\nmore\n")
    text = console.run_summary(md, tmp_path / "missing.html")
    assert "- **same model: PASS** — ok" in text and "| a | b |" in text
    assert "more" not in text and f"Report: {md}" in text
    assert "⚠" not in text


def test_the_end_of_a_run_names_a_marked_cell_by_its_kind(tmp_path):
    md = tmp_path / "performance.md"
    md.write_text("## The table (measured)\n\n| Metric | 1 rank | 4 ranks |\n|---|---|---|\n"
                  "| Training | 19.5 s | 30.1 s ⚠ disturbed: other processes used 0.32 of 2 cores during the timed window |\n")
    text = console.run_summary(md)
    assert "| Training | 19.5 s | 30.1 s ⚠ disturbed |" in text
    assert "(⚠: a marked time; the report says what marked it)" in text


def test_a_failed_run_names_each_failed_jobs_log(tmp_path):
    job_log = tmp_path / "prepare.log"
    job_log.write_text("dataset: 'x.jsonl' has no column 'anchor'\n")
    smk_log = tmp_path / "snakemake.log"
    smk_log.write_text(f"Error in rule prepare:\n    jobid: 3\n    log: {job_log} (check log file(s) for error details)\n")
    assert [job["log"] for job in console.failed_jobs(smk_log)] == [Path(job_log)]
    assert "has no column 'anchor'" in console.failure_summary(smk_log)


def test_a_failed_job_is_named_by_its_console_label_under_quiet_rules(tmp_path):
    """Under `--quiet rules` (the default profile) Snakemake writes no "Error in rule" block; the
    failed command it always reports names the job's label and log."""
    job_log = tmp_path / "train_gpus2.log"
    job_log.write_text("RuntimeError: the loss is NaN at step 3\n")
    smk_log = tmp_path / "snakemake.log"
    smk_log.write_text(
        "RuleException:\nCalledProcessError in file \"/w/workflow/rules/train.smk\", line 26:\n"
        f"Command 'set -euo pipefail;  /v/bin/python -m tier1.runtime.console --timed cpu --label 'train, 2 rank(s)' --log {job_log} "
        "-- env X=1 /v/bin/python -m tier1.runtime.launch --ranks 2 tier1.stages.train --config '{\"a\": 1}'' "
        "returned non-zero exit status 1.\n"
        "Shutting down, this might take some time.\n")
    assert console.failed_jobs(smk_log) == [{"job": "train, 2 rank(s)", "log": job_log, "exit": 1}]
    text = console.end_of_failed_run([str(smk_log)], "snakemake --cores 4 all", [])
    assert "Failed: train, 2 rank(s) (exit status 1)" in text and "the loss is NaN at step 3" in text
    assert "    snakemake --cores 4 all" in text and str(smk_log) in text
    assert "stopped by you (Ctrl-C)" in console.end_of_failed_run([str(smk_log)], "snakemake --cores 4 all", ["SIGINT"])


def test_the_job_lives_by_whatever_started_its_wrappers(tmp_path):
    """The job below `bash -c`, the console story and `env` finds its true owner (this process) and
    inherits the console's lifeline: what the launcher's watchdog watches."""
    import json
    import os
    import subprocess

    probe = "import json, os; from tier1.runtime import lifeline; print(json.dumps([lifeline.owner(os.getpid()), lifeline.inherited()]))"
    job = (f"{sys.executable} -m tier1.runtime.console --label probe --log {tmp_path}/probe.log -- "
           f"env X=1 {sys.executable} -c {json.dumps(probe)}")
    subprocess.run(["bash", "-c", f"{job}; true"], check=True, capture_output=True)
    owner, inherited = json.loads((tmp_path / "probe.log").read_text())
    assert owner == os.getpid()
    assert inherited[0] == os.getpid() and len(inherited) == 2  # this process, then the console


TORCHRUN_SUMMARY = """[0]:
  time      : 2026-12-07_07:46:30
  host      : localhost
  rank      : {rank} (local_rank: {rank})
  exitcode  : -9 (pid: 21666)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 21666"""


def test_a_sigkill_no_rank_explains_is_named_as_from_outside():
    """The kernel's out-of-memory killer sends SIGKILL and its victim says nothing: a rank killed so
    is named, unless a failed tier1 rank says it ended it; a lone process killed so is named too."""
    peer_failed = "08:00:00 ERROR tier1.stages rank 0 failed (RuntimeError: Connection closed by peer)"
    lines = [peer_failed, "08:00:00 ERROR tier1.stages rank 0 ends the job's other ranks on this machine: "
             "rank 1 was gone already", *TORCHRUN_SUMMARY.format(rank=1).splitlines()]
    assert console.unexplained_kill(lines, 1).startswith("Rank 1 was ended by SIGKILL from outside the job")
    # a failed rank ends a healthy peer, saying so before the kill
    lines = ["08:00:00 ERROR tier1.stages rank 1 failed (SafetensorError: invalid header)",
             "08:00:00 ERROR tier1.stages rank 1 ends the job's other ranks on this machine: killing rank 0",
             *TORCHRUN_SUMMARY.format(rank=0).splitlines()]
    assert console.unexplained_kill(lines, 1) is None
    # two ranks failing at once, each killed by the other before it could say it would end it
    lines = ["08:00:00 ERROR tier1.stages rank 1 failed (SafetensorError: invalid header)",
             "08:00:00 ERROR tier1.stages rank 0 failed (SafetensorError: invalid header)",
             *TORCHRUN_SUMMARY.format(rank=0).splitlines(), *TORCHRUN_SUMMARY.format(rank=1).splitlines()]
    assert console.unexplained_kill(lines, 1) is None
    assert console.unexplained_kill(["train x1:  44%|####6     | 7/16"], -9).startswith(
        "The job's process was ended by SIGKILL")
    assert console.unexplained_kill([peer_failed], 1) is None


def test_a_job_killed_from_outside_says_so_in_its_log_and_story(tmp_path, capsys):
    rc, log, err = _job(tmp_path, "import os, signal; print('training', flush=True); os.kill(os.getpid(), signal.SIGKILL)",
                        capsys)
    assert rc == 1
    assert log.splitlines()[-1].startswith("The job's process was ended by SIGKILL from outside the job")
    assert "out-of-memory killer" in err.splitlines()[-1]
