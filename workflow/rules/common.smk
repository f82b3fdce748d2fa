import os
import sys

from snakemake.exceptions import WorkflowError
from snakemake_interface_executor_plugins.settings import DeploymentMethod
from snakemake.utils import validate

from tier1.config import ConfigError, Tier1Config, stage_json

validate(config, "../../config/schema.yaml")
try:
    CFG = Tier1Config.from_dict(config)
except ConfigError as err:
    raise WorkflowError(f"config: {err}")

# The packaged model and the stdlib dataset need no network; stay offline unless told otherwise.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# The tier1 package is importable from the source tree too (e.g. inside a conda env built from
# envs/tier1.yaml, which holds only the third-party pins).
TIER1_SRC = os.path.abspath(os.path.join(workflow.basedir, "workflow"))
_inherited = os.environ.get("PYTHON" + "PATH")
os.environ.update(PYTHONPATH=os.pathsep.join(filter(None, [TIER1_SRC, _inherited])))
CONDA_ENV = "../../envs/tier1.yaml"
# Under --sdm conda each job runs in that environment's python; otherwise in Snakemake's own.
PYTHON = "python" if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method else sys.executable
WORLD_SIZES = list(CFG.world_sizes)
EVAL_WORLD_SIZES = list(CFG.gpu_counts)


wildcard_constraints:
    n=r"\d+",
    w=r"\d+",
    model=r"base|gpus\d+",


def stage_params(stage):
    """The JSON of the config keys a stage depends on; a change to any other key leaves it cached."""
    return stage_json(CFG, stage)


def launcher(n):
    """A plain process for one rank, torchrun (DDP) for several."""
    n = int(n)
    if n == 1:
        return f"{PYTHON} -m"
    return f"{PYTHON} -m torch.distributed.run --standalone --nproc_per_node {n} -m"


def trained_model(model):
    """The folder the train rule writes the model trained on `model` ("gpus{N}") into."""
    return f"results/train/{model}/model"


def model_path(model):
    """What evaluate loads: the configured base model, or a model this workflow trained."""
    return CFG.model if model == "base" else trained_model(model)


def model_input(wildcards):
    return [] if wildcards.model == "base" else [trained_model(wildcards.model)]


def final_outputs():
    return ["results/report/performance.md", "results/report/performance.csv"]
