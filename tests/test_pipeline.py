"""End to end: the Snakemake workflow on a tiny config, in a temporary folder."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from tier1.records import ProbeRecord, TrainRecord

from helpers import REPO

pytestmark = pytest.mark.slow
SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def smk(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    # The workflow's mechanics, rehearsed on CPU ranks on any machine (a 1-GPU box could not run
    # the tiny config's 2 ranks); GPU runs are scripts/gpu_session.sh's.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run([*SNAKEMAKE, *args], cwd=workdir, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


TINY = ".test/config/config.yaml"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("pipeline")
    for name in ("Snakefile", "workflow", "config", "profiles", "envs", ".test"):
        (root / name).symlink_to(REPO / name)
    (root / "tiny-model").symlink_to(tiny_model)
    smk(root, "--cores", "4", "all", "--configfile", TINY)
    return root


def jobs_planned(proc: subprocess.CompletedProcess) -> set[str]:
    """Rule names in the dry-run's job table."""
    out, names, in_table = proc.stdout + proc.stderr, set(), False
    for line in out.splitlines():
        if line.startswith("job "):
            in_table = True
            continue
        if in_table:
            parts = line.split()
            if not parts or parts[0] == "total":
                break
            if parts[0][0] != "-":
                names.add(parts[0])
    return names


def test_outputs_and_a_second_run_has_nothing_to_do(workdir):
    for path in ("results/default/data/manifest.json", "results/default/data/tokens.json",
                 "results/default/train/gpus2/model/model.safetensors",
                 "results/default/preflight.json", "results/default/comm/ws2.json", "results/default/logs/commbench_ws2.log",
                 "results/default/benchmarks/commbench_ws2.tsv", "results/default/benchmarks/preflight.tsv",
                 "results/default/train/gpus2/loss.csv", "results/default/eval/base/ws2/run.trec",
                 "results/default/report/performance.md", "results/default/report/plots/speedup.png",
                 "results/default/report/plots/loss.png", "results/default/logs/train_gpus2.log",
                 "results/default/benchmarks/train_gpus2.tsv"):
        assert (workdir / path).exists(), path
    again = smk(workdir, "-n", "all", "--configfile", TINY)
    assert "Nothing to be done" in again.stdout + again.stderr


def test_timed_jobs_never_overlap(workdir):
    files = list((workdir / "results/default").glob("train/*/train_metrics.json"))
    files += list((workdir / "results/default").glob("eval/*/ws*/metrics.json"))
    # a probe times something on GPUs only; on a CPU one job writes every world size's record
    files += [f for f in (workdir / "results/default").glob("probe/gpus*.json")
              if ProbeRecord.read(f).not_applicable is None]
    spans = sorted((datetime.fromisoformat(d["started_at"]), datetime.fromisoformat(d["finished_at"]), str(f))
                   for f in files for d in [json.loads(f.read_text())])
    # training (and the dropout reference), evaluation (base and trained, one launch per world size)
    assert len(spans) == 2 + 1 + 4
    for (_, e1, f1), (s2, _, f2) in zip(spans, spans[1:]):
        assert e1 <= s2, f"{f1} overlaps {f2}"


def test_preflight_and_commbench_ran_alone(workdir):
    pre = json.loads((workdir / "results/default/preflight.json").read_text())
    assert pre["world_sizes"] == [1, 2] and pre["cpu"]["threads_per_rank"]["2"] == max(1, len(os.sched_getaffinity(0)) // 2)
    comm = json.loads((workdir / "results/default/comm/ws2.json").read_text())
    assert comm["world_size"] == 2 and comm["backend"] == "gloo"
    assert comm["summary"]["gradient_all_reduce"]["bytes"] == 4 * comm["model"]["trainable_parameters"]
    assert comm["summary"]["loss_all_gather"]["bytes_per_rank"] == 4 * 4 * 32  # 4 embeddings of width 32 per rank
    assert not (workdir / "results/default/comm/ws1.json").exists()
    # both hold the timed slot: no timed job ran while either did
    run = workdir / "results/default"
    timed = list(run.glob("train/*/train_metrics.json")) + list(run.glob("eval/*/ws*/metrics.json"))
    timed += list(run.glob("probe/gpus*.json"))
    for mine in (pre, comm):
        start, end = datetime.fromisoformat(mine["started_at"]), datetime.fromisoformat(mine["finished_at"])
        for f in timed:
            other = json.loads(f.read_text())
            assert end <= datetime.fromisoformat(other["started_at"]) or datetime.fromisoformat(other["finished_at"]) <= start, f


def test_ddp_run_is_synchronised_and_counted(workdir):
    m = json.loads((workdir / "results/default/train/gpus2/train_metrics.json").read_text())
    assert m["checksums_equal"] and len(m["ranks"]) == 2
    assert sum(r["samples"] for r in m["ranks"]) == m["expected_samples"] == 32
    assert m["ranks"][0]["threads"] == max(1, len(os.sched_getaffinity(0)) // 2)


def test_evaluation_is_the_same_at_every_world_size(workdir):
    a = json.loads((workdir / "results/default/eval/base/ws1/metrics.json").read_text())
    b = json.loads((workdir / "results/default/eval/base/ws2/metrics.json").read_text())
    assert a["metrics"] == b["metrics"]
    run = workdir / "results/default"
    assert (run / "eval/base/ws1/run.trec").read_text() == (run / "eval/base/ws2/run.trec").read_text()


def test_the_training_stage_times_its_warm_up_and_the_report_shows_it(workdir):
    """One measurement end to end: the training stage times its shape warm-up before each repeat's
    window (TrainRecord.warm_up_s), and the report's overhead table says how much of the job it was."""
    run = workdir / "results/default"
    record = TrainRecord.read(run / "train/gpus2/train_metrics.json")
    assert len(record.warm_up_s) == len(record.wall_times_s) and all(s > 0 for s in record.warm_up_s)
    md = (run / "report/performance.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| train_gpus2 |"))
    assert f"of which shape warm-up {sum(record.warm_up_s):.1f} s" in row


FIELDS = {
    "training_time": ("wall_time_s",), "training_throughput": ("samples_per_s",),
    "evaluation_time": ("wall_time_s",), "evaluation_throughput": ("documents_per_s",),
}


def test_every_report_number_traces_to_a_stage_file(workdir):
    all_rows = list(csv.DictReader((workdir / "results/default/report/performance.csv").open()))
    # the pipeline-overhead rows have no world size: each job's wall time comes from its benchmark
    # file, its timed windows from its stage file, and the totals from the job rows
    overhead = [r for r in all_rows if r["world_size"] == ""]
    for r in overhead:
        # one evaluation launch times two models: its source names both files, joined by " + "
        assert r["source"] == "" or r["source"].startswith("sum of") or all(
            (workdir / part).is_file() for part in r["source"].split(" + ")), r
    walls = [r for r in overhead if r["metric"].startswith("job_") and r["metric"].endswith("_wall_time")]
    total = next(r for r in overhead if r["metric"] == "pipeline_wall_time")
    assert float(total["value"]) == pytest.approx(sum(float(r["value"]) for r in walls))
    # every stage records the window of its own work (`work_s`): no job counts whole as overhead
    timed = {r["metric"]: r for r in overhead if r["metric"].startswith("job_") and r["metric"].endswith("_timed_windows")}
    # preflight, prepare, tokenize, probe (one job on a CPU), commbench_ws2, train x2 and its
    # dropout reference, evaluate x2 (base and trained model in one launch)
    assert len(timed) == len(walls) == 10 and all(r["value"] != "" and r["source"] for r in timed.values()), timed
    for job, file in (("preflight", "preflight.json"), ("prepare", "data/manifest.json"), ("tokenize", "data/tokens.json"),
                      ("probe", "probe/gpus1.json"), ("commbench_ws2", "comm/ws2.json")):
        row = timed[f"job_{job}_timed_windows"]
        assert row["source"] == f"results/default/{file}", row
        assert float(row["value"]) == pytest.approx(json.loads((workdir / row["source"]).read_text())["work_s"]), job
    rows = [r for r in all_rows if r["world_size"] != ""]
    assert rows
    by = {(r["metric"], int(r["world_size"])): r for r in rows}
    for r in rows:
        src = json.loads((workdir / r["source"]).read_text())
        metric, n = r["metric"], int(r["world_size"])
        assert src["world_size"] == n, (metric, r["source"])
        if metric in FIELDS:
            assert float(r["value"]) == pytest.approx(src[FIELDS[metric][0]]), metric
        elif metric.startswith(("trained_", "base_")):
            assert float(r["value"]) == pytest.approx(src["metrics"][metric.split("_", 1)[1]]), metric
        elif metric in ("training_time_ratio", "evaluation_time_ratio"):  # a CPU run: never called a speedup
            kind = metric.split("_")[0]
            base = json.loads((workdir / by[(f"{kind}_time", 1)]["source"]).read_text())
            if src.get("marks") or base.get("marks"):
                assert r["value"] == "", (metric, src["marks"], base["marks"])  # no speedup from a marked time
            else:
                t1 = float(by[(f"{kind}_time", 1)]["value"])
                assert float(r["value"]) == pytest.approx(t1 / src["wall_time_s"]), metric
    assert ("training_time_ratio", 2) in by and ("training_speedup", 2) not in by  # CPU ranks: no speedup named
    md = (workdir / "results/default/report/performance.md").read_text()
    t2 = json.loads((workdir / "results/default/train/gpus2/train_metrics.json").read_text())["wall_time_s"]
    assert f"{t2:.1f} s" in md
    assert "Card expectation, 4x A40 (not measured here)" in md
    assert "n/a (no GPU)" in md
    # the tiny model folder's modules: mean pooling and Normalize, at the length its folder names
    assert "- Pooling: mean, then L2-normalised (a Normalize module); read from `" in md
    assert "- Sequence length: 32 tokens, as the model folder asks" in md
    assert "GPU neighbours and throttling (NVML): not applicable, the run is not on a GPU." in md


def test_changing_the_batch_reruns_training_but_not_preparation(workdir):
    jobs = jobs_planned(smk(workdir, "-n", "all", "--configfile", TINY, "--config", "batch_size=4"))
    assert {"train", "evaluate", "report"} <= jobs and "prepare" not in jobs


def test_a_stage_reruns_by_its_target(workdir):
    jobs = jobs_planned(smk(workdir, "-n", "--configfile", TINY, "-f", "results/default/eval/base/ws1/metrics.json"))
    assert jobs == {"evaluate"}
    jobs = jobs_planned(smk(workdir, "-n", "all", "--configfile", TINY, "--forcerun", "report"))
    assert jobs == {"report", "all"}


@pytest.mark.parametrize("override, field", [("precision=fp16", "precision"), ("batch_size=7", "batch_size"),
                                             ("gpu_counts=[0]", "gpu_counts"), ("bogus_key=1", "bogus_key")])
def test_bad_config_stops_before_any_job(workdir, override, field):
    proc = smk(workdir, "-n", "all", "--configfile", TINY, "--config", override, check=False)
    assert proc.returncode != 0
    assert field in proc.stdout + proc.stderr


def test_html_report(workdir):
    smk(workdir, "--report", "results/default/report/report.html", "--configfile", TINY)
    html = workdir / "results/default/report/report.html"
    assert html.stat().st_size > 10_000


def test_check_gpus_target(workdir):
    smk(workdir, "--cores", "4", "check_gpus", "--configfile", TINY)
    summary = json.loads((workdir / "results/default/check_gpus/summary.json").read_text())
    assert summary["verdict_ok"] and summary["world_size"] == 2
    samples = [r["samples"] for r in summary["ranks"]]
    assert len(samples) == 2 and samples[0] == samples[1] > 0
    assert "all 2 ranks did work" in (workdir / "results/default/logs/check_gpus.log").read_text()


def test_a_cls_pooling_model_runs_end_to_end_and_stays_cls(tmp_path, tiny_model):
    """The model folder's own pooling through the workflow: evaluated and trained with CLS pooling
    (as the records say) and saved with the source's pooling modules."""
    from test_pooling import with_pooling

    for name in ("Snakefile", "workflow", "config", "profiles", "envs", ".test"):
        (tmp_path / name).symlink_to(REPO / name)
    source = with_pooling(tiny_model, tmp_path / "tiny-cls", {"pooling_mode_cls_token": True}, normalize=False)
    smk(tmp_path, "--cores", "4", "results/default/eval/gpus1/ws1/metrics.json", "--configfile", TINY,
        "--config", "model=tiny-cls")
    results = tmp_path / "results/default"
    for record in ("eval/base/ws1/metrics.json", "eval/gpus1/ws1/metrics.json", "train/gpus1/train_metrics.json"):
        head = json.loads((results / record).read_text())["model_head"]
        assert head["pooling"] == ["cls"] and head["normalize"] is False, record
    for name in ("modules.json", "1_Pooling/config.json"):
        assert (json.loads((results / "train/gpus1/model" / name).read_text())
                == json.loads((source / name).read_text()))


def test_the_transformers_encoder_runs_the_pipeline_and_says_so(workdir):
    """`encoder: transformers` end to end, beside the default (auto) run of the same tiny config:
    every stage that loads the model runs transformers' model, the records and the report say so,
    and training follows the same losses (the tiny model has no dropout)."""
    smk(workdir, "--cores", "4", "all", "--configfile", TINY, "--config", "encoder=transformers",
        "run_name=transformers")
    ours, theirs = workdir / "results/default", workdir / "results/transformers"
    for n in (1, 2):
        record = json.loads((theirs / f"train/gpus{n}/train_metrics.json").read_text())
        assert record["encoder"]["implementation"] == "transformers", n
        assert json.loads((ours / f"train/gpus{n}/train_metrics.json").read_text())["encoder"]["implementation"] \
            == "tier1-bert"
        a, b = ([float(row.split(",")[3]) for row in (run / f"train/gpus{n}/loss.csv").read_text().splitlines()[1:]]
                for run in (ours, theirs))
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5), n
    report = (theirs / "report/performance.md").read_text()
    assert "- Encoder: transformers " in report and "transformers' AutoModel; attention: transformers sdpa" in report
    assert "- Encoder: tier1-bert " in (ours / "report/performance.md").read_text()
    assert "- **same model: PASS**" in report and "- **all ranks worked: PASS**" in report
