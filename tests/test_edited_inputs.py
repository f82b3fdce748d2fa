"""A local dataset or model edited in place reruns the jobs that read it, as a changed setting
does (their files are the rules' inputs), and only those."""

from __future__ import annotations

import json
import shutil

from test_pipeline import TINY, jobs_planned, smk

from helpers import REPO, real_pairs


def test_editing_a_local_dataset_or_model_reruns_what_reads_it(tmp_path, tiny_model):
    for name in ("Snakefile", "workflow", "config", "profiles", "envs", ".test"):
        (tmp_path / name).symlink_to(REPO / name)
    shutil.copytree(tiny_model, tmp_path / "my-model")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"anchor": p["anchor"], "positive": p["positive"]}) + "\n"
                             for p in real_pairs(120)))
    run = ("--configfile", TINY, "--config", "dataset=pairs.jsonl", "model=my-model", "run_name=edited")
    tokens = "results/edited/data/tokens.json"
    smk(tmp_path, "--cores", "2", tokens, *run)
    assert "Nothing to be done" in "".join(smk(tmp_path, "-n", tokens, *run).stdout)

    with pairs.open("a") as f:  # an edit (Snakemake reruns on a changed content, not on a touch)
        f.write(json.dumps({"anchor": "Return the answer.", "positive": "def answer():\n    return 42"}) + "\n")
    assert jobs_planned(smk(tmp_path, "-n", tokens, *run)) == {"prepare", "tokenize"}
    smk(tmp_path, "--cores", "2", tokens, *run)
    config = tmp_path / "my-model" / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()), indent=1))
    assert jobs_planned(smk(tmp_path, "-n", tokens, *run)) == {"tokenize"}
