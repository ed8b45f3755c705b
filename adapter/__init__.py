"""Adapter: a small projection trained on frozen embeddings, saved, and applied to queries (and passages)."""
