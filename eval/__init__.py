"""Evaluation: scores every system (metrics from `core.metrics`, BM25 and HNSW from `search/`) with confidence
intervals, significance tests, threshold accuracy and baselines; writes the report."""
