rule probe:
    output:
        "results/probe/gpus{n}.json",
    params:
        py=PYTHON,
        cfg=stage_params("probe"),
    threads: workflow.cores
    resources:
        timed=1,
    conda:
        CONDA_ENV
    log:
        "results/logs/probe_gpus{n}.log",
    benchmark:
        "results/benchmarks/probe_gpus{n}.tsv"
    shell:
        "{params.py} -m tier1.probe --config {params.cfg:q} --world-size {wildcards.n} --out {output} > {log} 2>&1"
