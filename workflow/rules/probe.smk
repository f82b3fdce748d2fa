rule probe:
    """Largest training and encoding batch per device on N GPUs (gpus{n}; not applicable on CPU)."""
    input:
        tokens=out("data/tokens.safetensors"),
    output:
        out("probe/gpus{n}.json"),
    log:
        out("logs/probe_gpus{n}.log"),
    benchmark:
        out("benchmarks/probe_gpus{n}.tsv")
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        timed=1,
        gpu=lambda w: gpus_for(w.n),
    params:
        story=stage_story(lambda w: f"probe, world size {w.n}"),
        cfg=stage_params("probe"),
        # on GPUs one rank per GPU; on a CPU there is nothing to probe, so one process says so
        launch=lambda w: launcher(w.n if ON_GPUS else 1),
    shell:
        "{params.story} {log} -- {params.launch} tier1.probe --config {params.cfg:q} --tokens {input.tokens} --world-size {wildcards.n} "
        "--out {output}"
