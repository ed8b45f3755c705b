"""Ingest: load NQ, clean and filter, split, embed (cached), store in Chroma, mine negatives."""
