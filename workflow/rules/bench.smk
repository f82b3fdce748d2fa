rule bench_compare:
    """tier1 against sentence-transformers on this device: training steps/s and encoding texts/s, same
    inputs, one process per side, alternating (results/<run_name>/bench/compare.md)."""
    input:
        pairs=out(layout.TRAIN_PAIRS),
        corpus=out(layout.CORPUS),
        model=model_folder(),
    output:
        md=out(layout.BENCH_MD),
        json=out(layout.BENCH_JSON),
    log:
        out(layout.log("bench")),
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        timed=1,
        gpu=1 if ON_GPUS else 0,
    params:
        story=stage_story("bench: tier1 against sentence-transformers", timed=True),
        py=PYTHON,
        cfg=stage_params("bench"),
    shell:
        "{params.story} {log} -- {params.py} -m tier1.bench.compare --config {params.cfg:q} --pairs {input.pairs} --corpus {input.corpus} "
        "--md {output.md} --json {output.json}"


rule bench:
    """The benchmark against sentence-transformers (not part of `all`): snakemake --cores 4 bench."""
    input:
        rules.bench_compare.output,
    localrule: True
