rule train:
    input:
        data="results/data/train.jsonl",
        tokens="results/data/tokens.pt",
    output:
        model=directory("results/train/gpus{n}/model"),
        metrics="results/train/gpus{n}/train_metrics.json",
        loss="results/train/gpus{n}/loss.csv",
    params:
        cfg=stage_params("train"),
        launch=lambda w: launcher(w.n),
    threads: workflow.cores
    resources:
        timed=1,
    conda:
        CONDA_ENV
    log:
        "results/logs/train_gpus{n}.log",
    benchmark:
        "results/benchmarks/train_gpus{n}.tsv"
    shell:
        "{params.launch} tier1.train --config {params.cfg:q} --data {input.data} --tokens {input.tokens} "
        "--out results/train/gpus{wildcards.n} > {log} 2>&1"
