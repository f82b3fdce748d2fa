import json

PLOTS = [
    "speedup",
    "throughput",
    "memory",
    "loss",
    "quality",
    "time_split",
    "decomposition",
    "collectives",
] + (["sweep"] if CFG.batch_sweep else [])


def report_records():
    """Every record the report reads, by kind: one file, or world size -> file
    (tier1.report.collect.RECORDS names the class each kind is read through)."""
    records = {
        "manifest": out("data/manifest.json"),
        "tokens": out("data/tokens.json"),
        "preflight": out("preflight.json"),
        "train": {str(n): out(f"train/gpus{n}/train_metrics.json") for n in WORLD_SIZES},
        "loss": {str(n): out(f"train/gpus{n}/loss.csv") for n in WORLD_SIZES},
        "probe": {str(n): out(f"probe/gpus{n}.json") for n in WORLD_SIZES},
        "eval_base": {str(w): out(f"eval/base/ws{w}/metrics.json") for w in WORLD_SIZES},
        "eval_trained": {str(n): out(f"eval/gpus{n}/ws{n}/metrics.json") for n in WORLD_SIZES},
        "comm": {str(n): out(f"comm/ws{n}.json") for n in COMM_WORLD_SIZES},
        # the batch sweep (batch_sweep): the steady step per global batch and world size
        "sweep": {f"b{b}_gpus{n}": out(f"sweep/b{b}/gpus{n}.json") for b in CFG.batch_sweep for n in WORLD_SIZES},
    }
    if len(WORLD_SIZES) > 1:  # only needed to compare world sizes
        # the 1-rank run with other dropout masks (the same-model yardstick)
        records["reference_train"] = out("train/reference_gpus1/train_metrics.json")
        records["reference_loss"] = out("train/reference_gpus1/loss.csv")
        # one rank's compute at each world size's share of the batch (the prediction's)
        records["rank_compute"] = out("train/rank_compute.json")
    return records


def report_index():
    """The report's inputs by name: the records, and every job's wall time (its Snakemake
    benchmark file) with the records of its timed windows, for the pipeline overhead."""
    jobs = {
        job: {"benchmark": out(f"benchmarks/{job}.tsv"), "windows": windows} for job, windows in timed_jobs().items()
    }
    return {"records": report_records(), "jobs": jobs}


def report_inputs(wildcards):
    """report_index()'s files, as the rule's named inputs."""
    index = report_index()
    files = {k: list(v.values()) if isinstance(v, dict) else v for k, v in index["records"].items()}
    return files | {"benchmarks": [job["benchmark"] for job in index["jobs"].values()]}


rule report:
    """The performance table, verdicts and plots, from the files the stages wrote."""
    input:
        unpack(report_inputs),
    output:
        # the whole report on one page, listed first in snakemake --report ("Benchmark report")
        html=report(
            out("report/index.html"),
            caption="../report/index.rst",
            category="Benchmark report",
        ),
        md=report(
            out("report/performance.md"),
            caption="../report/performance.rst",
            category="Table",
        ),
        csv=out("report/performance.csv"),
        plots=[report(out(f"report/plots/{p}.png"), caption=f"../report/{p}.rst", category="Plots") for p in PLOTS],
    log:
        out("logs/report.log"),
    benchmark:
        out("benchmarks/report.tsv")
    conda:
        CONDA_ENV
    params:
        story=stage_story("report"),
        py=PYTHON,
        history=out("history"),
        captions=os.path.relpath(os.path.join(workflow.basedir, "workflow", "report")),
        cfg=stage_params("report"),
        records=json.dumps(report_index()),
    shell:
        "{params.story} {log} -- {params.py} -m tier1.report --config {params.cfg:q} --records {params.records:q} "
        "--md {output.md} --csv {output.csv} --plots {output.plots} --history {params.history} "
        "--html {output.html} --captions {params.captions}"
