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
