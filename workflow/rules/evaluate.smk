rule evaluate:
    """Retrieval metrics at world size w (ws{w}): the base model, then the model trained on w
    ranks, in one launch (one start-up instead of two), each warmed up and timed on its own,
    with the corpus encoded and ranked over the w ranks."""
    input:
        trained=lambda w: trained_model(layout.trained_on(w.w, PRIMARY)),
        corpus=out(layout.CORPUS),
        queries=out(layout.QUERIES),
        qrels=out(layout.QRELS),
        tokens=out(layout.TOKENS),
    output:
        base_metrics=out(layout.eval_metrics(layout.BASE)),
        base_run=out(layout.eval_run(layout.BASE)),
        metrics=out(layout.eval_metrics(layout.trained_on("{w}", PRIMARY))),
        run=out(layout.eval_run(layout.trained_on("{w}", PRIMARY))),
    log:
        out(layout.log("eval_ws{w}")),
    benchmark:
        out(layout.benchmark("eval_ws{w}"))
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        timed=1,
        gpu=lambda w: gpus_for(w.w),
    params:
        story=stage_story(
            lambda w: f"evaluate the base model and {layout.trained_on(w.w, PRIMARY)}, {w.w} rank(s)", timed=True
        ),
        cfg=stage_params("evaluate"),
        launch=lambda w: launcher(w.w),
        record=EvaluationRecord.schema(),  # a new record version reruns the stage
        base=CFG.model,
    shell:
        "{params.story} {log} -- {params.launch} tier1.stages.evaluate --config {params.cfg:q} "
        "--corpus {input.corpus} --queries {input.queries} --qrels {input.qrels} --tokens {input.tokens} "
        "--model {params.base:q} --metrics-out {output.base_metrics} --run-out {output.base_run} "
        "--model {input.trained:q} --metrics-out {output.metrics} --run-out {output.run}"


rule evaluate_second:
    """Retrieval metrics at world size w of the model the second strategy (parallelism: [a, b])
    trained on w ranks, the corpus encoded and ranked over the w ranks as for the first."""
    input:
        trained=lambda w: trained_model(layout.trained_on(w.w, OTHER)),
        corpus=out(layout.CORPUS),
        queries=out(layout.QUERIES),
        qrels=out(layout.QRELS),
        tokens=out(layout.TOKENS),
    output:
        metrics=out(layout.eval_metrics(layout.trained_on("{w}", OTHER))),
        run=out(layout.eval_run(layout.trained_on("{w}", OTHER))),
    log:
        out(layout.log(f"eval_{OTHER}_ws{{w}}")),
    benchmark:
        out(layout.benchmark(f"eval_{OTHER}_ws{{w}}"))
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        timed=1,
        gpu=lambda w: gpus_for(w.w),
    params:
        story=stage_story(lambda w: f"evaluate {layout.trained_on(w.w, OTHER)}, {w.w} rank(s)", timed=True),
        cfg=stage_params("evaluate"),
        launch=lambda w: launcher(w.w),
        record=EvaluationRecord.schema(),  # a new record version reruns the stage
    shell:
        "{params.story} {log} -- {params.launch} tier1.stages.evaluate --config {params.cfg:q} "
        "--corpus {input.corpus} --queries {input.queries} --qrels {input.qrels} --tokens {input.tokens} "
        "--model {input.trained:q} --metrics-out {output.metrics} --run-out {output.run}"
