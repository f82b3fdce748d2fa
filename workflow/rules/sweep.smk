rule sweep_step:
    """The steady step at global batch b on n ranks (strong scaling), for the batch sweep: a short
    run whose steps count toward nothing else."""
    input:
        data=out(layout.TRAIN_PAIRS),
        tokens=out(layout.TOKENS),
    output:
        out(layout.sweep()),
    log:
        out(layout.log("sweep_b{b}_gpus{n}")),
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        timed=1,
        gpu=lambda w: gpus_for(w.n),
    params:
        story=stage_story(lambda w: f"batch sweep, global batch {w.b}, {w.n} rank(s)", timed=True),
        cfg=stage_params("train"),
        launch=lambda w: launcher(w.n),
    shell:
        "{params.story} {log} -- {params.launch} tier1.stages.sweep_step --config {params.cfg:q} --batch {wildcards.b} "
        "--data {input.data} --tokens {input.tokens} --out {output}"
