rule train:
    """Fine-tune the model on N ranks (gpus{n}): one process for 1, torchrun DDP for more."""
    input:
        data=out(layout.TRAIN_PAIRS),
        tokens=out(layout.TOKENS),
    output:
        model=directory(out(layout.model_dir())),
        metrics=out(layout.train_record()),
        loss=out(layout.loss_csv()),
    log:
        out(layout.log("train_gpus{n}")),
    benchmark:
        out(layout.benchmark("train_gpus{n}"))
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        timed=1,
        gpu=lambda w: gpus_for(w.n, across_nodes=True),
        # nodes > 1 (SLURM): nodes x one task each, the job's command starting them with srun
        nodes=lambda w: node_resources(w.n, "nodes"),
        tasks=lambda w: node_resources(w.n, "tasks"),
        mpi=lambda w: node_resources(w.n, "mpi"),
        gres=lambda w: node_resources(w.n, "gres"),
        tasks_per_gpu=lambda w: node_resources(w.n, "tasks_per_gpu"),
    params:
        story=stage_story(lambda w: f"train, {w.n} rank(s){across(w.n)}", timed=True),
        cfg=stage_params("train", "ddp"),
        launch=lambda w: launcher(w.n, across_nodes=True),
    shell:
        "{params.story} {log} -- {params.launch} tier1.stages.train --config {params.cfg:q} --data {input.data} --tokens {input.tokens} "
        "--model-out {output.model} --metrics-out {output.metrics} --loss-out {output.loss}"


rule train_dropout_reference:
    """The 1-rank training again with other dropout masks (same data and seed otherwise): how far
    dropout alone moves the loss, the yardstick for the same-model verdict."""
    input:
        data=out(layout.TRAIN_PAIRS),
        tokens=out(layout.TOKENS),
    output:
        model=directory(out(layout.model_dir(layout.REFERENCE))),
        metrics=out(layout.train_record(layout.REFERENCE)),
        loss=out(layout.loss_csv(layout.REFERENCE)),
    log:
        out(layout.log("train_reference_gpus1")),
    benchmark:
        out(layout.benchmark("train_reference_gpus1"))
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        timed=1,
        gpu=gpus_for(1),
    params:
        story=stage_story("train, 1 rank, other dropout masks (the yardstick)", timed=True),
        cfg=stage_params("train"),
        launch=launcher(1),
    shell:
        "{params.story} {log} -- {params.launch} tier1.stages.train --config {params.cfg:q} --data {input.data} --tokens {input.tokens} "
        "--dropout-stream 1 --model-out {output.model} --metrics-out {output.metrics} --loss-out {output.loss}"


rule train_fsdp:
    """Fine-tune the model on N ranks under FSDP2 (fsdp_gpus{n}): parameters, gradients and
    optimizer state sharded across the ranks (parallelism: fsdp); one process for 1."""
    input:
        data=out(layout.TRAIN_PAIRS),
        tokens=out(layout.TOKENS),
    output:
        model=directory(out(layout.model_dir(layout.trained_on("{n}", "fsdp")))),
        metrics=out(layout.train_record(layout.trained_on("{n}", "fsdp"))),
        loss=out(layout.loss_csv(layout.trained_on("{n}", "fsdp"))),
    log:
        out(layout.log(f"train_{layout.trained_on('{n}', 'fsdp')}")),
    benchmark:
        out(layout.benchmark(f"train_{layout.trained_on('{n}', 'fsdp')}"))
    conda:
        CONDA_ENV
    threads: workflow.cores
    resources:
        timed=1,
        gpu=lambda w: gpus_for(w.n, across_nodes=True),
        # nodes > 1 (SLURM): nodes x one task each, the job's command starting them with srun
        nodes=lambda w: node_resources(w.n, "nodes"),
        tasks=lambda w: node_resources(w.n, "tasks"),
        mpi=lambda w: node_resources(w.n, "mpi"),
        gres=lambda w: node_resources(w.n, "gres"),
        tasks_per_gpu=lambda w: node_resources(w.n, "tasks_per_gpu"),
    params:
        story=stage_story(lambda w: f"train, {w.n} rank(s), FSDP2{across(w.n)}", timed=True),
        cfg=stage_params("train", "fsdp"),
        launch=lambda w: launcher(w.n, across_nodes=True),
    shell:
        "{params.story} {log} -- {params.launch} tier1.stages.train --config {params.cfg:q} --data {input.data} --tokens {input.tokens} "
        "--model-out {output.model} --metrics-out {output.metrics} --loss-out {output.loss}"
