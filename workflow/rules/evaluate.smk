rule evaluate:
    """Retrieval metrics at world size w (ws{w}): the base model, then the model trained on w
    ranks, in one launch (one start-up instead of two), each warmed up and timed on its own,
    with the corpus encoded and ranked over the w ranks."""
    input:
        trained=lambda w: trained_model(f"gpus{w.w}"),
        corpus=out("data/test/corpus.jsonl"),
        queries=out("data/test/queries.jsonl"),
        qrels=out("data/test/qrels/test.tsv"),
        tokens=out("data/tokens.safetensors"),
    output:
        base_metrics=out("eval/base/ws{w}/metrics.json"),
        base_run=out("eval/base/ws{w}/run.trec"),
        metrics=out("eval/gpus{w}/ws{w}/metrics.json"),
        run=out("eval/gpus{w}/ws{w}/run.trec"),
    log:
        out("logs/eval_ws{w}.log"),
    benchmark:
        out("benchmarks/eval_ws{w}.tsv")
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        timed=1,
        gpu=lambda w: gpus_for(w.w),
    params:
        story=stage_story(lambda w: f"evaluate the base model and gpus{w.w}, {w.w} rank(s)", timed=True),
        cfg=stage_params("evaluate"),
        launch=lambda w: launcher(w.w),
        base=CFG.model,
    shell:
        "{params.story} {log} -- {params.launch} tier1.stages.evaluate --config {params.cfg:q} "
        "--corpus {input.corpus} --queries {input.queries} --qrels {input.qrels} --tokens {input.tokens} "
        "--model {params.base:q} --metrics-out {output.base_metrics} --run-out {output.base_run} "
        "--model {input.trained:q} --metrics-out {output.metrics} --run-out {output.run}"
