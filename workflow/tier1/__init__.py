"""tier1: how well fine-tuning and evaluating a sentence-embedding model scales from 1 to N GPUs."""

from tier1.config import ConfigError, Tier1Config

__all__ = ["ConfigError", "Tier1Config"]
