"""Building the training pairs and the BEIR-form evaluation set."""
