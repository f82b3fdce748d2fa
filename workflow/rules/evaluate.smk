rule evaluate:
    """Retrieval metrics at world size w (ws{w}): the base model, then the model trained on w
    ranks, in one launch (one start-up instead of two), each warmed up and timed on its own,
    with the corpus encoded and ranked over the w ranks."""
    input:
        trained=lambda w: trained_model(layout.trained_on(w.w)),
        corpus=out(layout.CORPUS),
        queries=out(layout.QUERIES),
        qrels=out(layout.QRELS),
        tokens=out(layout.TOKENS),
    output:
        base_metrics=out(layout.eval_metrics(layout.BASE)),
        base_run=out(layout.eval_run(layout.BASE)),
        metrics=out(layout.eval_metrics()),
        run=out(layout.eval_run()),
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
        story=stage_story(lambda w: f"evaluate the base model and gpus{w.w}, {w.w} rank(s)", timed=True),
        cfg=stage_params("evaluate"),
        launch=lambda w: launcher(w.w),
        base=CFG.model,
    shell:
        "{params.story} {log} -- {params.launch} tier1.stages.evaluate --config {params.cfg:q} "
        "--corpus {input.corpus} --queries {input.queries} --qrels {input.qrels} --tokens {input.tokens} "
        "--model {params.base:q} --metrics-out {output.base_metrics} --run-out {output.base_run} "
        "--model {input.trained:q} --metrics-out {output.metrics} --run-out {output.run}"
