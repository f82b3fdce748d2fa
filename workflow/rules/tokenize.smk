rule tokenize:
    input:
        train="results/data/train.jsonl",
        corpus="results/data/test/corpus.jsonl",
        queries="results/data/test/queries.jsonl",
    output:
        "results/data/tokens.pt",
    params:
        py=PYTHON,
        cfg=stage_params("tokenize"),
    conda:
        CONDA_ENV
    log:
        "results/logs/tokenize.log",
    benchmark:
        "results/benchmarks/tokenize.tsv"
    shell:
        "{params.py} -m tier1.tokenize --config {params.cfg:q} --data results/data --out {output} > {log} 2>&1"
