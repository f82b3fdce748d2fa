rule prepare:
    """Training pairs and the BEIR-form test set from the configured dataset."""
    output:
        train="results/data/train.jsonl",
        corpus="results/data/test/corpus.jsonl",
        queries="results/data/test/queries.jsonl",
        qrels="results/data/test/qrels/test.tsv",
        manifest="results/data/manifest.json",
    log:
        "results/logs/prepare.log",
    benchmark:
        "results/benchmarks/prepare.tsv"
    conda:
        CONDA_ENV
    params:
        story=stage_story("prepare: training pairs and test set"),
        py=PYTHON,
        cfg=stage_params("prepare"),
    shell:
        "{params.story} {log} -- {params.py} -m tier1.prepare --config {params.cfg:q} --train {output.train} "
        "--corpus {output.corpus} --queries {output.queries} --qrels {output.qrels} "
        "--manifest {output.manifest}"
