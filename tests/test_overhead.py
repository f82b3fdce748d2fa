"""Pipeline overhead on hand-made benchmark files and stage records: the arithmetic, the stages'
work windows (`work_s`), jobs with no timed window or whose record is missing, repetitions, and
reports made without benchmark files. Jobs and the records of their windows come by name (the
report rule's index), never from a file name."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import pytest

from test_report_page import run_report, stage_files, train_record, write
from tier1.records import (
    CollectivesRecord,
    EvaluationRecord,
    ManifestRecord,
    PreflightRecord,
    ProbeRecord,
    TokensRecord,
    TrainRecord,
)
from tier1.report import __main__ as report_main
from tier1.report import overhead, table
from tier1.report.collect import Job, Results, collect, read_benchmark

from helpers import record

HEADER = ["s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out", "mean_load", "cpu_time"]
# the records of each job's timed windows, as the workflow names them (rules/common.smk timed_jobs)
WINDOWS = {"preflight": ["preflight"], "prepare": ["manifest"], "tokenize": ["tokens"], "probe_gpus1": ["probe:1"],
           "probe_gpus2": ["probe:2"], "commbench_ws2": ["comm:2"], "train_gpus1": ["train:1"],
           "train_gpus2": ["train:2"], "train_gpus4": ["train:4"], "train_reference_gpus1": ["reference_train"],
           "eval_ws1": ["eval_base:1", "eval_trained:1"], "eval_ws2": ["eval_base:2", "eval_trained:2"],
           "eval_ws4": ["eval_base:4", "eval_trained:4"], "check_gpus": []}


def bench(folder: Path, job: str, *seconds: float) -> Path:
    """A benchmark file as Snakemake writes it: one row per repetition."""
    path = folder / f"{job}.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [HEADER] + [[f"{s:.2f}", "0:00:00", "100.0", "NA", "NA", "NA", "0.1", "0.1", "50.0", "1.0"] for s in seconds]
    path.write_text("".join("\t".join(row) + "\n" for row in rows))
    return path


def results(benches: dict[str, list[float]], train: dict[int, list[float]] = (), eval_base: dict[int, list[float]] = ()
            ) -> Results:
    r = Results()
    for job, seconds in benches.items():
        r.jobs[job] = Job(f"b/{job}.tsv", list(seconds), WINDOWS[job])
    for n, walls in dict(train).items():
        r.train[n] = record(TrainRecord, world_size=n, wall_time_s=sorted(walls)[len(walls) // 2], wall_times_s=walls,
                            decomposition_s=0.0)
        r.paths[("train", n)] = f"train/gpus{n}/train_metrics.json"
    for w, walls in dict(eval_base).items():
        r.eval_base[w] = evaluation(w, walls)
        r.paths[("eval_base", w)] = f"eval/base/ws{w}/metrics.json"
    return r


def evaluation(w: int, walls: list[float]) -> EvaluationRecord:
    return record(EvaluationRecord, world_size=w, wall_time_s=walls[0], wall_times_s=walls)


# the Results field and record class of each stage's record
FIELD = {"preflight": ("preflight", PreflightRecord), "prepare": ("manifest", ManifestRecord),
         "tokenize": ("tokens", TokensRecord), "probe": ("probe", ProbeRecord), "commbench": ("comm", CollectivesRecord)}


def with_work(r: Results, work: dict[str, float]) -> Results:
    """Stage records of the jobs in `work` holding that `work_s`."""
    for job, seconds in work.items():
        stage, _, size = job.partition("_")
        field, kind = FIELD[stage]
        if size:  # probe_gpus{n}, commbench_ws{n}: one record per world size
            n = int(size.lstrip("gpusw"))
            getattr(r, field)[n] = record(kind, work_s=seconds, world_size=n)
        else:
            n = 0
            setattr(r, field, record(kind, work_s=seconds))
        r.paths[(field, n)] = f"{job}.json"
    return r


def by_name(r: Results) -> dict[str, overhead.Job]:
    return {j.name: j for j in overhead.jobs(r)}


def test_overhead_is_wall_minus_every_repeats_timed_window():
    r = results({"prepare": [10.0], "train_gpus1": [50.0], "train_gpus2": [40.0], "eval_ws1": [12.0]},
                train={1: [20.0, 22.0], 2: [15.0]}, eval_base={1: [3.0, 3.0, 3.0]})
    r.eval_trained[1] = evaluation(1, [0.0])
    r.paths[("eval_trained", 1)] = "eval/gpus1/ws1/metrics.json"
    jobs = by_name(r)
    assert jobs["train_gpus1"].timed_s == pytest.approx(42.0)  # both repeats, not the median
    assert jobs["train_gpus1"].overhead_s == pytest.approx(8.0)
    assert jobs["eval_ws1"].overhead_s == pytest.approx(3.0)
    assert jobs["prepare"].timed_s is None and jobs["prepare"].overhead_s == 10.0
    t = overhead.totals(overhead.jobs(r))
    assert t.wall_s == pytest.approx(112.0)
    assert t.timed_s == pytest.approx(42.0 + 15.0 + 9.0)
    assert t.overhead_s == pytest.approx(112.0 - 66.0)
    assert t.share == pytest.approx(46.0 / 112.0)
    assert t.around_timed_s == pytest.approx(8.0 + 25.0 + 3.0)
    assert t.untimed_jobs_s == pytest.approx(10.0)
    assert t.around_timed_s + t.untimed_jobs_s == pytest.approx(t.overhead_s)


def test_a_timed_stage_without_its_record_counts_whole_and_says_so():
    r = results({"train_gpus4": [30.0], "eval_ws2": [9.0], "commbench_ws2": [5.0], "check_gpus": [4.0]},
                train={1: [10.0]})
    jobs = by_name(r)
    assert jobs["train_gpus4"].timed_s is None and jobs["train_gpus4"].overhead_s == 30.0
    assert jobs["train_gpus4"].what == overhead.NOT_GIVEN
    assert jobs["eval_ws2"].what == overhead.NOT_GIVEN
    assert jobs["commbench_ws2"].what == overhead.NOT_GIVEN
    assert jobs["check_gpus"].what == overhead.UNTIMED  # a job no stage record speaks for
    assert overhead.totals(list(jobs.values())).untimed_jobs_s == pytest.approx(48.0)


def test_every_stage_counts_the_work_it_records():
    work = {"preflight": 1.5, "prepare": 6.0, "tokenize": 2.0, "probe_gpus1": 0.0, "probe_gpus2": 4.0,
            "commbench_ws2": 30.0}
    walls = {"preflight": [3.0], "prepare": [10.0], "tokenize": [8.0], "probe_gpus1": [5.0], "probe_gpus2": [9.0],
             "commbench_ws2": [38.0]}
    r = with_work(results(walls), work)
    jobs = by_name(r)
    for name, seconds in work.items():
        assert jobs[name].timed_s == seconds and jobs[name].timed_source == f"{name}.json", name
        assert jobs[name].overhead_s == pytest.approx(walls[name][0] - seconds), name
        assert jobs[name].what == overhead.AROUND["work"], name
    # a probe on a CPU searches nothing: 0 s of work, the whole job around it
    assert jobs["probe_gpus1"].overhead_s == 5.0
    t = overhead.totals(list(jobs.values()))
    assert t.timed_s == pytest.approx(43.5) and t.around_timed_s == pytest.approx(73.0 - 43.5)
    assert t.untimed_jobs_s == 0.0
    assert [j.name for j in overhead.jobs(r)] == list(work)  # in the order they run


def test_one_evaluation_launch_counts_both_models_windows():
    r = results({"eval_ws2": [20.0], "eval_ws4": [30.0]}, eval_base={2: [3.0, 3.5], 4: [2.0]})
    r.eval_trained[2] = evaluation(2, [4.0])
    r.paths[("eval_trained", 2)] = "eval/gpus2/ws2/metrics.json"
    jobs = by_name(r)
    assert jobs["eval_ws2"].timed_s == pytest.approx(10.5)
    assert jobs["eval_ws2"].timed_source == "eval/base/ws2/metrics.json + eval/gpus2/ws2/metrics.json"
    assert jobs["eval_ws2"].what == overhead.AROUND["eval"]
    # the trained model's record missing: the launch's windows are not half-counted
    assert jobs["eval_ws4"].timed_s is None and jobs["eval_ws4"].what == overhead.NOT_GIVEN


def test_training_counts_the_decomposition_measurement_as_timed():
    r = results({"train_gpus2": [40.0], "train_gpus1": [30.0]}, train={2: [25.0], 1: [20.0]})
    r.train[2] = dataclasses.replace(r.train[2], decomposition_s=6.0)
    jobs = by_name(r)
    assert jobs["train_gpus2"].timed_s == pytest.approx(31.0)
    assert jobs["train_gpus2"].what == overhead.AROUND["train"]
    assert jobs["train_gpus1"].timed_s == pytest.approx(20.0)


def test_only_the_last_repetition_counts(tmp_path):
    path = bench(tmp_path, "train_gpus1", 70.0, 55.0, 54.0)
    assert read_benchmark(path) == [70.0, 55.0, 54.0]
    r = results({"train_gpus1": read_benchmark(path)}, train={1: [44.0]})
    job = by_name(r)["train_gpus1"]
    assert (job.wall_s, job.repetitions) == (54.0, 3)
    assert job.overhead_s == pytest.approx(10.0)
    assert "train_gpus1 (3 repetitions)" in "\n".join(overhead.markdown(r))


def test_timed_windows_longer_than_the_job_are_flagged():
    r = results({"train_gpus1": [30.0]}, train={1: [20.0, 20.0]})  # a resumed job: earlier repeats ran before
    assert by_name(r)["train_gpus1"].overhead_s == pytest.approx(-10.0)
    assert "exceed the job's wall time" in "\n".join(overhead.markdown(r))


@pytest.mark.parametrize("text", ["", "s\th:m:s\n", "h:m:s\tmax_rss\n0:00:01\t1\n", "s\nfast\n", "s\n-1\n", "s\nnan\n"])
def test_a_damaged_benchmark_file_is_refused_by_name(tmp_path, text):
    path = tmp_path / "prepare.tsv"
    path.write_text(text)
    with pytest.raises(ValueError, match="prepare.tsv"):
        read_benchmark(path)


def test_without_benchmark_files_the_section_says_so():
    r = results({})
    assert "No Snakemake benchmark files were given" in "\n".join(overhead.markdown(r))
    assert overhead.csv_rows(r) == []


def jobs_index(folder: Path, walls: dict[str, float]) -> dict[str, dict]:
    """The report index's jobs: each job's benchmark file (one repetition) and its windows."""
    return {job: {"benchmark": str(bench(folder, job, wall)), "windows": WINDOWS[job]} for job, wall in walls.items()}


def test_the_report_shows_the_section_and_csv_rows(tmp_path):
    inputs = stage_files(tmp_path)  # train walls 10 s (1 rank) and 12 s (2 ranks); eval 4 s and 2 s
    ref = write(tmp_path / "train/reference_gpus1/train_metrics.json", TrainRecord, train_record(1, 0, 11.0, "m"))
    jobs = jobs_index(tmp_path / "benchmarks", {"prepare": 5.0, "tokenize": 3.0, "train_gpus1": 15.0,
                                                "train_gpus2": 20.0, "train_reference_gpus1": 14.0, "eval_ws1": 12.0,
                                                "eval_ws2": 10.0})
    r = collect(dataclasses.replace(inputs, records={**inputs.records, "reference_train": str(ref)}, jobs=jobs))
    t = overhead.totals(overhead.jobs(r))
    assert t.wall_s == pytest.approx(79.0)
    assert t.timed_s == pytest.approx(1.0 + 10.0 + 12.0 + 11.0 + 4.0 + 4.0 + 2.0 + 2.0)
    md = table.to_markdown(r)
    section = md[md.index("## Pipeline overhead"):]
    assert "Overhead: 33.0 s (42% of the job wall time)" in section
    # tokenize is not given its record: the whole job
    assert "30.0 s around the timed windows" in section and "3.0 s in jobs with no timed window" in section
    assert "| train_reference_gpus1 | 14.0 s | 11.0 s | 3.0 s | 21% |" in section
    assert section.index("| prepare |") < section.index("| tokenize |") < section.index("| train_gpus1 |")
    assert "the report job itself and Snakemake's own planning" in section
    rows = {row["metric"]: row for row in csv.DictReader(table.to_csv(r).splitlines())}
    assert float(rows["pipeline_overhead"]["value"]) == pytest.approx(33.0)
    assert float(rows["pipeline_overhead_share"]["value"]) == pytest.approx(33.0 / 79.0)
    assert rows["job_train_gpus2_timed_windows"]["source"] == inputs.records["train"]["2"]
    assert rows["job_eval_ws2_timed_windows"]["source"] == (f"{inputs.records['eval_base']['2']} + "
                                                            f"{inputs.records['eval_trained']['2']}")
    assert rows["job_prepare_timed_windows"]["value"] == "1.0"
    assert rows["job_tokenize_timed_windows"]["value"] == ""


def test_the_cli_reads_the_index_and_runs_without_jobs(tmp_path):
    inputs = stage_files(tmp_path)
    old = run_report(tmp_path, inputs)
    assert "No Snakemake benchmark files were given" in (old / "performance.md").read_text()
    tokens = write(tmp_path / "data/tokens.json", TokensRecord, {"stage": "tokenize", "work_s": 2.0,
                                                                  "counts": {"texts": 230}})
    out = tmp_path / "new"
    index = {"records": {**inputs.records, "tokens": str(tokens)},
             "jobs": jobs_index(tmp_path / "benchmarks", {"tokenize": 3.0, "train_gpus1": 15.0})}
    (tmp_path / "records.json").write_text(json.dumps(index))
    report_main.main(["--records", str(tmp_path / "records.json"), "--md", str(out / "performance.md"),
                      "--csv", str(out / "performance.csv")])
    md = (out / "performance.md").read_text()
    assert "| tokenize | 3.0 s | 2.0 s | 1.0 s | 33% | start-up, imports," in md
    assert "| train_gpus1 | 15.0 s | 10.0 s | 5.0 s | 33% |" in md
    rows = {row["metric"]: row for row in csv.DictReader((out / "performance.csv").open())}
    assert rows["job_tokenize_timed_windows"]["source"] == str(tokens)
    assert float(rows["job_tokenize_timed_windows"]["value"]) == 2.0
