rule commbench:
    """All-reduce and all-gather bandwidth on N ranks (ws{n}), nccl-tests' definitions; a matmul probe."""
    input:
        model=model_folder(),
    output:
        out(layout.comm()),
    log:
        out(layout.log("commbench_ws{n}")),
    benchmark:
        out(layout.benchmark("commbench_ws{n}"))
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        timed=1,
        gpu=lambda w: gpus_for(w.n),
    params:
        story=stage_story(lambda w: f"collectives, {w.n} ranks", timed=True),
        cfg=stage_params("commbench"),
        launch=lambda w: launcher(w.n),
    shell:
        "{params.story} {log} -- {params.launch} tier1.stages.commbench --config {params.cfg:q} --out {output}"
