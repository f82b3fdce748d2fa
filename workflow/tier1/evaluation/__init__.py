"""Retrieval evaluation with the corpus sharded over ranks."""
