"""Ingest: load a dataset (NQ in its forms, any BEIR folder such as SciFact, pairs, a hub id), clean and filter, split, embed (cached), store in Chroma, mine negatives."""
