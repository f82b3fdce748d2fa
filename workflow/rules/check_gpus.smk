rule check_gpus:
    """A short DDP job on every rank, with a per-rank table: did every rank really work?"""
    input:
        model=model_folder(),
    output:
        out(layout.CHECK_GPUS),
    log:
        out(layout.log("check_gpus")),
    benchmark:
        out(layout.benchmark("check_gpus"))
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        timed=1,
        gpu=gpus_for(max(WORLD_SIZES)),
    params:
        story=stage_story("check-gpus: a short DDP job on every rank", timed=True),
        py=PYTHON,
        launch=launcher(max(WORLD_SIZES)),
        model=CFG.model,
        encoder=CFG.encoder,
    shell:
        "{params.story} {log} -- {params.launch} tier1.stages.check_gpus --model {params.model:q} --encoder {params.encoder} "
        "--out {output} "
        "&& {params.py} -m tier1.stages.check_gpus --show {output}"
