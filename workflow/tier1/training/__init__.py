"""Training: the batch plan, the contrastive step, the Trainer that runs it, and its records."""
