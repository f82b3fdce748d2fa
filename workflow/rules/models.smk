from tier1.encoder import random_models


def model_folder():
    """The folder a `model: random:<name>` spec resolves to, as an input of the first rules that load
    the model (tokenize, commbench, check_gpus, bench_compare; every other one comes after tokenize);
    [] for any other model."""
    return [out(layout.random_model(random_models.spec_name(CFG.model)))] if random_models.spec_name(CFG.model) else []


rule random_model:
    """A model folder of a named size with random weights (model: random:<name>), built once per run."""
    output:
        directory(out(layout.random_model("{name}"))),
    log:
        out(layout.log("random_model_{name}")),
    wildcard_constraints:
        name="[a-z0-9.-]+",
    conda:
        CONDA_ENV
    params:
        story=stage_story(lambda w: f"random_model: {w.name}, random weights"),
        py=PYTHON,
    shell:
        "{params.story} {log} -- {params.py} -m tier1.encoder.random_models {wildcards.name} {output}"
