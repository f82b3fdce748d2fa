rule tokenize:
    """Token ids of every training pair, document and query, made once for all later stages."""
    input:
        train="results/data/train.jsonl",
        corpus="results/data/test/corpus.jsonl",
        queries="results/data/test/queries.jsonl",
        qrels="results/data/test/qrels/test.tsv",
    output:
        "results/data/tokens.safetensors",
    log:
        "results/logs/tokenize.log",
    benchmark:
        "results/benchmarks/tokenize.tsv"
    conda:
        CONDA_ENV
    params:
        story=stage_story("tokenize: token ids, once for every stage"),
        py=PYTHON,
        cfg=stage_params("tokenize"),
    shell:
        "{params.story} {log} -- {params.py} -m tier1.token_cache --config {params.cfg:q} --train {input.train} "
        "--corpus {input.corpus} --queries {input.queries} --qrels {input.qrels} --out {output}"
