rule evaluate:
    input:
        model_input,
        corpus="results/data/test/corpus.jsonl",
        queries="results/data/test/queries.jsonl",
        qrels="results/data/test/qrels/test.tsv",
        tokens="results/data/tokens.pt",
    output:
        metrics="results/eval/{model}/ws{w}/metrics.json",
        run="results/eval/{model}/ws{w}/run.trec",
    params:
        cfg=stage_params("evaluate"),
        launch=lambda w: launcher(w.w),
        model=lambda w: model_path(w.model),
    threads: workflow.cores
    resources:
        timed=1,
    conda:
        CONDA_ENV
    log:
        "results/logs/eval_{model}_ws{w}.log",
    benchmark:
        "results/benchmarks/eval_{model}_ws{w}.tsv"
    shell:
        "{params.launch} tier1.evaluate --config {params.cfg:q} --model {params.model:q} "
        "--data results/data/test --tokens {input.tokens} --out results/eval/{wildcards.model}/ws{wildcards.w} > {log} 2>&1"
