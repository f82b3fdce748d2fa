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


rule report:
    """The performance table, verdicts and plots, from the files the stages wrote."""
    input:
        manifest=out("data/manifest.json"),
        tokenize=out("data/tokens.json"),
        train=expand(out("train/gpus{n}/train_metrics.json"), n=WORLD_SIZES),
        loss=expand(out("train/gpus{n}/loss.csv"), n=WORLD_SIZES),
        probe=expand(out("probe/gpus{n}.json"), n=WORLD_SIZES),
        eval_base=expand(out("eval/base/ws{w}/metrics.json"), w=WORLD_SIZES),
        eval_trained=[out(f"eval/gpus{n}/ws{n}/metrics.json") for n in WORLD_SIZES],
        # Only needed to compare world sizes: the 1-rank run with other dropout masks.
        reference_loss=[out("train/reference_gpus1/loss.csv")] if len(WORLD_SIZES) > 1 else [],
        preflight=out("preflight.json"),
        comm=expand(out("comm/ws{n}.json"), n=COMM_WORLD_SIZES),
        # one rank's compute at each world size's share of the batch (the prediction's)
        rank_compute=[out("train/rank_compute.json")] if len(WORLD_SIZES) > 1 else [],
        # the batch sweep (batch_sweep): the steady step per global batch and world size
        sweep=expand(out("sweep/b{b}/gpus{n}.json"), b=CFG.batch_sweep, n=WORLD_SIZES),
        # every job's wall time (Snakemake's benchmark files): the report's pipeline overhead
        benchmarks=[out(f"benchmarks/{job}.tsv") for job in benchmarked_jobs()],
        reference_train=[out("train/reference_gpus1/train_metrics.json")] if len(WORLD_SIZES) > 1 else [],
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
    shell:
        "{params.story} {log} -- {params.py} -m tier1.report --config {params.cfg:q} --manifest {input.manifest} "
        "--tokenize {input.tokenize} --train {input.train} --loss {input.loss} "
        "--eval-base {input.eval_base} --eval-trained {input.eval_trained} --probe {input.probe} "
        "--reference-loss {input.reference_loss} --preflight {input.preflight} --comm {input.comm} "
        "--md {output.md} --csv {output.csv} --plots {output.plots} --history {params.history} "
        "--html {output.html} --captions {params.captions} --benchmarks {input.benchmarks} "
        "--reference-train {input.reference_train} --rank-compute {input.rank_compute} "
        "--sweep {input.sweep}"
