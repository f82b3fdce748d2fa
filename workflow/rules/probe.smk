if ON_GPUS:

    rule probe:
        """Largest training and encoding batch per device on N GPUs (gpus{n})."""
        input:
            tokens=out(layout.TOKENS),
        output:
            out(layout.probe()),
        log:
            out(layout.log("probe_gpus{n}")),
        benchmark:
            out(layout.benchmark("probe_gpus{n}"))
        conda:
            CONDA_ENV
        threads: workflow.cores
        resources:
            timed=1,
            gpu=lambda w: gpus_for(w.n),
        params:
            story=stage_story(lambda w: f"probe, world size {w.n}", timed=True),
            cfg=stage_params("probe"),
            launch=lambda w: launcher(w.n),
        shell:
            "{params.story} {log} -- {params.launch} tier1.stages.probe --config {params.cfg:q} --tokens {input.tokens} "
            "--world-size {wildcards.n} --out {output}"

else:

    # runs in the workflow's own process: never a cluster job
    localrules:
        probe,

    rule probe:
        """On a CPU there is no device memory limit to find: every world size's file says 'not
        applicable', written in the workflow's own process (tier1.records.probe, no torch, no job to
        start)."""
        input:
            tokens=out(layout.TOKENS),
        output:
            expand(out(layout.probe()), n=WORLD_SIZES),
        log:
            out(layout.log("probe")),
        benchmark:
            out(layout.benchmark("probe"))
        params:
            cfg=stage_params("probe"),
        run:
            from tier1.records.probe import main_from_workflow

            main_from_workflow(output, WORLD_SIZES, params.cfg, log[0])
