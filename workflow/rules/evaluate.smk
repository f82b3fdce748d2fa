rule evaluate:
    """Retrieval metrics of one model, with the corpus encoded and ranked over N ranks (ws{w})."""
    input:
        model_input,
        corpus=out("data/test/corpus.jsonl"),
        queries=out("data/test/queries.jsonl"),
        qrels=out("data/test/qrels/test.tsv"),
        tokens=out("data/tokens.safetensors"),
    output:
        metrics=out("eval/{model}/ws{w}/metrics.json"),
        run=out("eval/{model}/ws{w}/run.trec"),
    log:
        out("logs/eval_{model}_ws{w}.log"),
    benchmark:
        out("benchmarks/eval_{model}_ws{w}.tsv")
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        timed=1,
        gpu=lambda w: gpus_for(w.w),
    params:
        story=stage_story(lambda w: f"evaluate {w.model}, {w.w} rank(s)"),
        cfg=stage_params("evaluate"),
        launch=lambda w: launcher(w.w),
        model=lambda w: model_path(w.model),
    shell:
        "{params.story} {log} -- {params.launch} tier1.evaluate --config {params.cfg:q} --model {params.model:q} "
        "--corpus {input.corpus} --queries {input.queries} --qrels {input.qrels} --tokens {input.tokens} "
        "--metrics-out {output.metrics} --run-out {output.run}"
