rule check_gpus:
    output:
        "results/check_gpus/summary.json",
    params:
        n=max(CFG.gpu_counts),
        launch=launcher(max(CFG.gpu_counts)),
        model=CFG.model,
    threads: workflow.cores
    resources:
        timed=1,
    conda:
        CONDA_ENV
    log:
        "results/logs/check_gpus.log",
    benchmark:
        "results/benchmarks/check_gpus.tsv"
    shell:
        "{params.launch} tier1.check_gpus --model {params.model:q} --out {output} 2>&1 | tee {log}"
