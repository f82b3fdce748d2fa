rule prepare:
    """Training pairs and the BEIR-form test set from the configured dataset."""
    output:
        train=out("data/train.jsonl"),
        corpus=out("data/test/corpus.jsonl"),
        queries=out("data/test/queries.jsonl"),
        qrels=out("data/test/qrels/test.tsv"),
        manifest=out("data/manifest.json"),
    log:
        out("logs/prepare.log"),
    benchmark:
        out("benchmarks/prepare.tsv")
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
