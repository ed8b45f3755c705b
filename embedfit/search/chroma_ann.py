"""What Chroma's HNSW index returns, and how much of the exact top-k it finds.

Metrics in the report are computed on exact search (numpy over the stored vectors), because that
is the ranking the embeddings define. Users, though, get what the approximate index returns; the two
can differ, so we query the collection the app would query and report its metrics next to exact
search's, plus recall@k of HNSW against exact search (the share of the exact top-k that HNSW also
returns in its top-k). Chroma returns cosine *distance*; we turn it back into similarity (1 - d).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from embedfit.metrics.retrieval import ranked_ids
from embedfit.progress import progress
from embedfit.types import Results

log = logging.getLogger(__name__)

QUERY_BATCH = 256


def chroma_search(col: Any, query_vectors: np.ndarray, query_ids: Sequence[str], k: int = 100,
                  batch: int = QUERY_BATCH) -> Results:
    """Top-`k` of each query from the collection's index: query id -> passage id -> cosine similarity."""
    k = max(1, min(k, col.count()))
    results: Results = {}
    qids = list(query_ids)
    with progress(total=len(qids), desc=f"query {col.name}", unit="query") as bar:
        for start in range(0, len(qids), batch):
            got = col.query(query_embeddings=np.ascontiguousarray(query_vectors[start:start + batch], dtype=np.float32),
                            n_results=k, include=["distances"])
            for qid, ids, dists in zip(qids[start:start + batch], got["ids"], got["distances"]):
                results[qid] = {pid: 1.0 - float(d) for pid, d in zip(ids, dists)}
            bar.update(len(got["ids"]))
    return results


def recall_against_exact(approx: Results, exact: Results, k: int = 10) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / |exact top-k| (1.0 = HNSW found every exact neighbour).

    Both rankings are cut by the same rule (score descending, id ascending). Queries absent from
    `approx` count 0; queries whose exact list is empty are skipped.
    """
    vals = []
    for qid, ex in exact.items():
        truth = ranked_ids(ex)[:k]
        if not truth:
            continue
        got = set(ranked_ids(approx.get(qid, {}))[:k])
        vals.append(len(got.intersection(truth)) / len(truth))
    return float(np.mean(vals)) if vals else float("nan")
