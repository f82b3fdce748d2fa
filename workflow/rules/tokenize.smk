rule tokenize:
    """Token ids of every training pair, document and query, made once for all later stages."""
    input:
        train=out(layout.TRAIN_PAIRS),
        corpus=out(layout.CORPUS),
        queries=out(layout.QUERIES),
        qrels=out(layout.QRELS),
        model=model_folder(),
    output:
        tokens=out(layout.TOKENS),
        # what was tokenised and its seconds (work_s): the report's pipeline overhead
        record=out(layout.TOKENS_RECORD),
    log:
        out(layout.log("tokenize")),
    benchmark:
        out(layout.benchmark("tokenize"))
    conda:
        CONDA_ENV
    threads: workflow.cores
    params:
        story=stage_story("tokenize: token ids, once for every stage"),
        py=PYTHON,
        cfg=stage_params("tokenize"),
    shell:
        "{params.story} {log} -- {params.py} -m tier1.stages.tokenize --config {params.cfg:q} --train {input.train} "
        "--corpus {input.corpus} --queries {input.queries} --qrels {input.qrels} --out {output.tokens} "
        "--record-out {output.record}"
