rule train:
    """Fine-tune the model on N ranks (gpus{n}): one process for 1, torchrun DDP for more."""
    input:
        data="results/data/train.jsonl",
        tokens="results/data/tokens.pt",
    output:
        model=directory("results/train/gpus{n}/model"),
        metrics="results/train/gpus{n}/train_metrics.json",
        loss="results/train/gpus{n}/loss.csv",
    log:
        "results/logs/train_gpus{n}.log",
    benchmark:
        "results/benchmarks/train_gpus{n}.tsv"
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        timed=1,
    params:
        cfg=stage_params("train"),
        launch=lambda w: launcher(w.n),
    shell:
        "{params.launch} tier1.train --config {params.cfg:q} --data {input.data} --tokens {input.tokens} "
        "--model-out {output.model} --metrics-out {output.metrics} --loss-out {output.loss} > {log} 2>&1"
