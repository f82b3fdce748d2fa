rule prepare:
    output:
        train="results/data/train.jsonl",
        corpus="results/data/test/corpus.jsonl",
        queries="results/data/test/queries.jsonl",
        qrels="results/data/test/qrels/test.tsv",
        manifest="results/data/manifest.json",
    params:
        py=PYTHON,
        cfg=stage_params("prepare"),
    conda:
        CONDA_ENV
    log:
        "results/logs/prepare.log",
    benchmark:
        "results/benchmarks/prepare.tsv"
    shell:
        "{params.py} -m tier1.prepare --config {params.cfg:q} --out results/data > {log} 2>&1"
