"""Evaluation: every system scored on the same queries (metrics from `embedfit.metrics`, BM25 and HNSW from
`embedfit.retrieval` and `embedfit.search`) with intervals, paired tests, threshold accuracy and baselines;
`evaluate` computes, `report` writes."""
