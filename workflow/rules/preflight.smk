rule preflight:
    """What the machine offers the ranks: CPU, NUMA, threads per rank; GPUs, links, topology, NCCL."""
    output:
        out(layout.PREFLIGHT),
    log:
        out(layout.log("preflight")),
    benchmark:
        out(layout.benchmark("preflight"))
    conda:
        CONDA_ENV
    resources:
        # Measures no time, but it opens the GPUs (peer access, NCCL): holding the timed slot
        # keeps it out of a timed job's window, where it would show up as another process.
        timed=1,
        # On a cluster it runs where the largest job's GPUs are.
        gpu=gpus_for(max(WORLD_SIZES)),
    params:
        story=stage_story("preflight: the machine's layout", timed=True),
        py=PYTHON,
        world_sizes=" ".join(map(str, WORLD_SIZES)),
    shell:
        "{params.story} {log} -- {params.py} -m tier1.stages.preflight --world-sizes {params.world_sizes} --out {output}"
