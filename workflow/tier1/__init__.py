"""tier1: how well fine-tuning and evaluating a sentence-embedding model scales from 1 to N GPUs."""

from tier1.config import ConfigError, Tier1Config

# The one version: pyproject.toml reads it from here, and records read it from the source tree, so a
# tier1 run from PYTHONPATH alone (not installed, as on the GPU machine) names it too.
__version__ = "0.1.0"

__all__ = ["ConfigError", "Tier1Config", "__version__"]
