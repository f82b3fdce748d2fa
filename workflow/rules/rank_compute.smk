rule rank_compute:
    """One rank's forward+backward at each world size's share of the batch, alone, shapes warmed:
    what the prediction uses for per-rank compute (tier1.stages.rank_compute)."""
    input:
        data=out(layout.TRAIN_PAIRS),
        tokens=out(layout.TOKENS),
    output:
        out(layout.RANK_COMPUTE),
    log:
        out(layout.log("rank_compute")),
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        timed=1,
        gpu=gpus_for(1),
    params:
        story=stage_story("compute of one rank at each share of the batch", timed=True),
        cfg=stage_params("train"),
        launch=launcher(1),
        sizes=" ".join(str(n) for n in WORLD_SIZES),
        record=RankComputeRecord.schema(),  # a new record version reruns the stage
    shell:
        "{params.story} {log} -- {params.launch} tier1.stages.rank_compute --config {params.cfg:q} --data {input.data} "
        "--tokens {input.tokens} --world-sizes {params.sizes} --out {output}"
