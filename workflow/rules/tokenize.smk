rule tokenize:
    """Token ids of every training pair, document and query, made once for all later stages."""
    input:
        train=out("data/train.jsonl"),
        corpus=out("data/test/corpus.jsonl"),
        queries=out("data/test/queries.jsonl"),
        qrels=out("data/test/qrels/test.tsv"),
    output:
        tokens=out("data/tokens.safetensors"),
        # what was tokenised and its seconds (work_s): the report's pipeline overhead
        record=out("data/tokens.json"),
    log:
        out("logs/tokenize.log"),
    benchmark:
        out("benchmarks/tokenize.tsv")
    conda:
        CONDA_ENV
    params:
        story=stage_story("tokenize: token ids, once for every stage"),
        py=PYTHON,
        cfg=stage_params("tokenize"),
    shell:
        "{params.story} {log} -- {params.py} -m tier1.stages.tokenize --config {params.cfg:q} --train {input.train} "
        "--corpus {input.corpus} --queries {input.queries} --qrels {input.qrels} --out {output.tokens} "
        "--record-out {output.record}"
