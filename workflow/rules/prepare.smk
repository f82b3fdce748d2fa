rule prepare:
    """Training pairs and the BEIR-form test set from the configured dataset."""
    input:
        dataset=dataset_files(),
    output:
        train=out(layout.TRAIN_PAIRS),
        corpus=out(layout.CORPUS),
        queries=out(layout.QUERIES),
        qrels=out(layout.QRELS),
        manifest=out(layout.MANIFEST),
    log:
        out(layout.log("prepare")),
    benchmark:
        out(layout.benchmark("prepare"))
    conda:
        CONDA_ENV
    params:
        story=stage_story("prepare: training pairs and test set"),
        py=PYTHON,
        cfg=stage_params("prepare"),
    shell:
        "{params.story} {log} -- {params.py} -m tier1.stages.prepare --config {params.cfg:q} --train {output.train} "
        "--corpus {output.corpus} --queries {output.queries} --qrels {output.qrels} "
        "--manifest {output.manifest}"
