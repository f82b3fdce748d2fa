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
        unpack(report_inputs),
    output:
        # the whole report on one page, listed first in snakemake --report ("Benchmark report")
        html=report(
            out(layout.REPORT_HTML),
            caption="../report/index.rst",
            category="Benchmark report",
        ),
        md=report(
            out(layout.REPORT_MD),
            caption="../report/performance.rst",
            category="Table",
        ),
        csv=out(layout.REPORT_CSV),
        plots=[report(out(layout.report_plot(p)), caption=f"../report/{p}.rst", category="Plots") for p in PLOTS],
    log:
        out(layout.log("report")),
    benchmark:
        out(layout.benchmark("report"))
    conda:
        CONDA_ENV
    params:
        story=stage_story("report"),
        py=PYTHON,
        history=out(layout.HISTORY),
        captions=os.path.relpath(os.path.join(workflow.basedir, "workflow", "report")),
        cfg=stage_params("report"),
        records=json.dumps(report_index()),
    shell:
        "{params.story} {log} -- {params.py} -m tier1.report --config {params.cfg:q} --records {params.records:q} "
        "--md {output.md} --csv {output.csv} --plots {output.plots} --history {params.history} "
        "--html {output.html} --captions {params.captions}"
