PLOTS = ["speedup", "throughput", "memory", "loss", "quality", "time_split"]


rule report:
    input:
        "results/data/manifest.json",
        expand("results/train/gpus{n}/train_metrics.json", n=WORLD_SIZES),
        expand("results/train/gpus{n}/loss.csv", n=WORLD_SIZES),
        expand("results/probe/gpus{n}.json", n=WORLD_SIZES),
        eval_targets(),
    output:
        md=report("results/report/performance.md", caption="../report/performance.rst", category="Table"),
        csv="results/report/performance.csv",
        plots=[
            report(f"results/report/plots/{p}.png", caption=f"../report/{p}.rst", category="Plots")
            for p in PLOTS
        ],
    params:
        py=PYTHON,
        sizes=" ".join(map(str, WORLD_SIZES)),
        eval_sizes=" ".join(map(str, EVAL_WORLD_SIZES)),
    conda:
        CONDA_ENV
    log:
        "results/logs/report.log",
    benchmark:
        "results/benchmarks/report.tsv"
    shell:
        "{params.py} -m tier1.report --results results --world-sizes {params.sizes} "
        "--eval-world-sizes {params.eval_sizes} --out results/report > {log} 2>&1"
