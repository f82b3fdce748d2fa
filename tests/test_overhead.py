"""Pipeline overhead on hand-made benchmark files and stage records: the arithmetic, the stages'
work windows (`work_s`), jobs with no timed window or whose record is missing or older,
repetitions, and reports made without benchmark files."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import pytest

from test_report_page import run_report, stage_files, train_record, write
from tier1.report import __main__ as report_main
from tier1.report import overhead, table
from tier1.report.collect import Results, collect, read_benchmark

HEADER = ["s", "h:m:s", "max_rss", "max_vms", "max_uss", "max_pss", "io_in", "io_out", "mean_load", "cpu_time"]


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
        r.benchmarks[job] = {"path": f"b/{job}.tsv", "s": list(seconds)}
    for n, walls in dict(train).items():
        r.train[n] = {"world_size": n, "wall_time_s": sorted(walls)[len(walls) // 2], "wall_times_s": walls}
        r.paths[("train", n)] = f"train/gpus{n}/train_metrics.json"
    for w, walls in dict(eval_base).items():
        r.eval_base[w] = {"world_size": w, "wall_time_s": walls[0], "wall_times_s": walls}
        r.paths[("eval_base", w)] = f"eval/base/ws{w}/metrics.json"
    return r


# the Results field each stage's record is kept in
FIELD = {"preflight": "preflight", "prepare": "manifest", "tokenize": "tokenize", "probe": "probe", "commbench": "comm"}


def with_work(r: Results, work: dict[str, float | None]) -> Results:
    """Stage records of the jobs in `work` holding that `work_s` (None: an older record without it)."""
    for job, seconds in work.items():
        record = {"stage": job} if seconds is None else {"stage": job, "work_s": seconds}
        stage, _, size = job.partition("_")
        field = FIELD[stage]
        if size:  # probe_gpus{n}, commbench_ws{n}: one record per world size
            n = int(size.lstrip("gpusw"))
            getattr(r, field)[n] = {**record, "world_size": n}
        else:
            n = 0
            setattr(r, field, record)
        r.paths[(field, n)] = f"{job}.json"
    return r


def by_name(r: Results) -> dict[str, overhead.Job]:
    return {j.name: j for j in overhead.jobs(r)}


def test_overhead_is_wall_minus_every_repeats_timed_window():
    r = results({"prepare": [10.0], "train_gpus1": [50.0], "train_gpus2": [40.0], "eval_base_ws1": [12.0]},
                train={1: [20.0, 22.0], 2: [15.0]}, eval_base={1: [3.0, 3.0, 3.0]})
    jobs = by_name(r)
    assert jobs["train_gpus1"].timed_s == pytest.approx(42.0)  # both repeats, not the median
    assert jobs["train_gpus1"].overhead_s == pytest.approx(8.0)
    assert jobs["eval_base_ws1"].overhead_s == pytest.approx(3.0)
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
    r = results({"train_gpus4": [30.0], "eval_gpus2_ws2": [9.0], "commbench_ws2": [5.0], "check_gpus": [4.0]},
                train={1: [10.0]})
    jobs = by_name(r)
    assert jobs["train_gpus4"].timed_s is None and jobs["train_gpus4"].overhead_s == 30.0
    assert jobs["train_gpus4"].what == overhead.NOT_GIVEN
    assert jobs["eval_gpus2_ws2"].what == overhead.NOT_GIVEN
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


def test_an_older_record_without_work_s_counts_the_whole_job():
    r = with_work(results({"prepare": [10.0], "commbench_ws2": [38.0], "tokenize": [8.0]}),
                  {"prepare": None, "commbench_ws2": None, "tokenize": 2.0})
    jobs = by_name(r)
    for name in ("prepare", "commbench_ws2"):
        assert jobs[name].timed_s is None and jobs[name].timed_source is None, name
        assert jobs[name].overhead_s == jobs[name].wall_s and jobs[name].what == overhead.NO_WORK_S, name
    t = overhead.totals(list(jobs.values()))
    assert t.untimed_jobs_s == pytest.approx(48.0) and t.around_timed_s == pytest.approx(6.0)
    md = "\n".join(overhead.markdown(r))
    assert "| prepare | 10.0 s | n/a | 10.0 s | 100% | the whole job: its stage record holds no `work_s`" in md
    assert "6.0 s around the timed windows, 48.0 s in jobs with no timed window" in md


def test_a_trained_model_evaluated_at_another_world_size_is_not_matched_to_its_record():
    r = results({"eval_gpus2_ws2": [9.0], "eval_gpus1_ws2": [9.0]})
    r.eval_trained[2] = {"world_size": 2, "wall_time_s": 4.0, "wall_times_s": [4.0]}
    r.paths[("eval_trained", 2)] = "eval/gpus2/ws2/metrics.json"
    jobs = by_name(r)
    assert jobs["eval_gpus2_ws2"].timed_s == 4.0
    assert jobs["eval_gpus2_ws2"].timed_source == "eval/gpus2/ws2/metrics.json"
    assert jobs["eval_gpus1_ws2"].timed_s is None


def test_one_evaluation_launch_counts_both_models_windows():
    r = results({"eval_ws2": [20.0], "eval_ws4": [30.0]}, eval_base={2: [3.0, 3.5], 4: [2.0]})
    r.eval_trained[2] = {"world_size": 2, "wall_time_s": 4.0, "wall_times_s": [4.0]}
    r.paths[("eval_trained", 2)] = "eval/gpus2/ws2/metrics.json"
    jobs = by_name(r)
    assert jobs["eval_ws2"].timed_s == pytest.approx(10.5)
    assert jobs["eval_ws2"].timed_source == "eval/base/ws2/metrics.json + eval/gpus2/ws2/metrics.json"
    assert jobs["eval_ws2"].what == overhead.AROUND["eval"]
    # the trained model's record missing: the launch's windows are not half-counted
    assert jobs["eval_ws4"].timed_s is None and jobs["eval_ws4"].what == overhead.NOT_GIVEN


def test_training_counts_the_decomposition_measurement_as_timed():
    r = results({"train_gpus2": [40.0], "train_gpus1": [30.0]}, train={2: [25.0], 1: [20.0]})
    r.train[2]["decomposition_s"] = 6.0
    jobs = by_name(r)
    assert jobs["train_gpus2"].timed_s == pytest.approx(31.0)
    assert jobs["train_gpus2"].what == overhead.AROUND["train"]
    # a record from before the measurement was timed says where those steps went
    assert jobs["train_gpus1"].timed_s == pytest.approx(20.0)
    assert jobs["train_gpus1"].what.endswith("the step decomposition's re-run steps")


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


def test_the_report_shows_the_section_and_csv_rows(tmp_path):
    inputs = stage_files(tmp_path)  # train walls 10 s (1 rank) and 12 s (2 ranks); eval 4 s and 2 s
    ref = write(tmp_path / "train/reference_gpus1/train_metrics.json", train_record(1, 0, 11.0, "m"))
    b = tmp_path / "benchmarks"
    files = [bench(b, "prepare", 5.0), bench(b, "tokenize", 3.0), bench(b, "train_gpus1", 15.0),
             bench(b, "train_gpus2", 20.0), bench(b, "train_reference_gpus1", 14.0), bench(b, "eval_base_ws1", 6.0),
             bench(b, "eval_base_ws2", 5.0), bench(b, "eval_gpus1_ws1", 6.0), bench(b, "eval_gpus2_ws2", 5.0),
             bench(b, "report", 2.0)]
    r = collect(dataclasses.replace(inputs, benchmarks=files, reference_train=ref))
    assert "report" not in r.benchmarks and r.benchmarks_left_out == [str(b / "report.tsv")]
    t = overhead.totals(overhead.jobs(r))
    assert t.wall_s == pytest.approx(79.0)
    assert t.timed_s == pytest.approx(10.0 + 12.0 + 11.0 + 4.0 + 2.0 + 4.0 + 2.0)
    md = table.to_markdown(r)
    section = md[md.index("## Pipeline overhead"):]
    assert "Overhead: 34.0 s (43% of the job wall time)" in section
    assert "26.0 s around the timed windows" in section and "8.0 s in jobs with no timed window" in section
    assert "| train_reference_gpus1 | 14.0 s | 11.0 s | 3.0 s | 21% |" in section
    assert section.index("| prepare |") < section.index("| tokenize |") < section.index("| train_gpus1 |")
    assert "the report job itself and Snakemake's own planning" in section
    rows = {row["metric"]: row for row in csv.DictReader(table.to_csv(r).splitlines())}
    assert float(rows["pipeline_overhead"]["value"]) == pytest.approx(34.0)
    assert float(rows["pipeline_overhead_share"]["value"]) == pytest.approx(34.0 / 79.0)
    assert rows["job_train_gpus2_timed_windows"]["source"] == str(inputs.train[1])
    assert rows["job_prepare_timed_windows"]["value"] == ""


def test_the_cli_takes_the_benchmark_files_and_runs_without_them(tmp_path):
    inputs = stage_files(tmp_path)
    old = run_report(tmp_path, inputs)
    assert "No Snakemake benchmark files were given" in (old / "performance.md").read_text()
    md = tmp_path / "new/performance.md"
    report_main.main(["--manifest", str(inputs.manifest), "--train", *map(str, inputs.train),
                      "--loss", *map(str, inputs.loss), "--eval-base", *map(str, inputs.eval_base),
                      "--eval-trained", *map(str, inputs.eval_trained), "--md", str(md),
                      "--csv", str(tmp_path / "new/performance.csv"),
                      "--benchmarks", str(bench(tmp_path / "benchmarks", "train_gpus1", 15.0)),
                      "--reference-train"])  # empty, as the rule passes it at one world size
    assert "| train_gpus1 | 15.0 s | 10.0 s | 5.0 s | 33% |" in md.read_text()


def test_the_cli_reads_the_tokenize_record(tmp_path):
    inputs = stage_files(tmp_path)
    tokens = write(tmp_path / "data/tokens.json", {"stage": "tokenize", "work_s": 2.0, "counts": {"texts": 230}})
    b = tmp_path / "benchmarks"
    out = tmp_path / "new"
    report_main.main(["--manifest", str(inputs.manifest), "--tokenize", str(tokens), "--train", *map(str, inputs.train),
                      "--loss", *map(str, inputs.loss), "--eval-base", *map(str, inputs.eval_base),
                      "--eval-trained", *map(str, inputs.eval_trained), "--md", str(out / "performance.md"),
                      "--csv", str(out / "performance.csv"),
                      "--benchmarks", str(bench(b, "tokenize", 3.0)), str(bench(b, "prepare", 5.0))])
    md = (out / "performance.md").read_text()
    assert "| tokenize | 3.0 s | 2.0 s | 1.0 s | 33% | start-up, imports," in md
    assert f"| prepare | 5.0 s | n/a | 5.0 s | 100% | {overhead.NO_WORK_S} |" in md  # the test manifest is an older one
    rows = {row["metric"]: row for row in csv.DictReader((out / "performance.csv").open())}
    assert rows["job_tokenize_timed_windows"]["source"] == str(tokens)
    assert float(rows["job_tokenize_timed_windows"]["value"]) == 2.0
