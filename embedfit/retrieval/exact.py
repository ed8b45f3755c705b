"""Exact cosine top-k search in numpy: the reference that approximate indexes are checked against.

Cosine similarity is the dot product of unit vectors; both sides are L2-normalised here, so callers
may pass raw or already-normalised embeddings (a zero vector has no direction and is refused).
Queries go in blocks of `batch` rows so memory stays at batch x n_passages scores. Per block,
`np.partition` (argpartition's linear-time selection, returning values) finds the k-th best score
of each row; every passage scoring at least that much is a candidate, and candidates are ordered by
score descending, then passage id ascending. Taking *all* candidates tied at the k-th score before
cutting to k makes the result independent of the selection's internal order, so the same inputs
always give the same top-k. The rule matches `embedfit.metrics.retrieval`, which ranks
ties the same way.

The arithmetic runs in the inputs' precision (float32 unless an input is float64).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from embedfit.types import Results


def _unit_rows(x: np.ndarray, name: str, dtype: np.dtype) -> np.ndarray:
    x = np.asarray(x, dtype=dtype)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (rows are vectors), got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise ValueError(f"{name} has a zero vector (row {int(np.flatnonzero(norms[:, 0] == 0)[0])}); cosine is undefined")
    return x / norms


def exact_search(
    query_vectors: np.ndarray,
    query_ids: Sequence[str],
    passage_vectors: np.ndarray,
    passage_ids: Sequence[str],
    k: int = 100,
    batch: int = 1024,
    dot: bool = False,
) -> Results:
    """Top-k passages by cosine for each query: query id -> passage id -> cosine (k capped at n_passages).

    `dot`: passages as given (not normalised), scored by dot product with the unit query: for methods whose
    passage norms carry meaning (NUDGE-M). A query's scale changes no ranking, so queries are normalised either way.
    """
    if k < 1 or batch < 1:
        raise ValueError(f"k and batch must be positive integers, got k={k}, batch={batch}")
    dtype = np.result_type(np.asarray(query_vectors).dtype, np.asarray(passage_vectors).dtype, np.float32)
    q = _unit_rows(query_vectors, "query_vectors", dtype)
    p = _unit_rows(passage_vectors, "passage_vectors", dtype)
    if dot:
        p = np.asarray(passage_vectors, dtype=dtype)
    if len(query_ids) != q.shape[0] or len(passage_ids) != p.shape[0]:
        raise ValueError(f"ids do not match vectors: {len(query_ids)} query ids for {q.shape[0]} rows, "
                         f"{len(passage_ids)} passage ids for {p.shape[0]} rows")
    if q.shape[1] != p.shape[1]:
        raise ValueError(f"dimensions differ: queries {q.shape[1]}, passages {p.shape[1]}")
    if len(set(passage_ids)) != len(passage_ids) or len(set(query_ids)) != len(query_ids):
        raise ValueError("query ids and passage ids must each be unique")
    if p.shape[0] == 0:
        return {qid: {} for qid in query_ids}

    pids, qids = list(passage_ids), list(query_ids)
    id_rank = np.empty(len(pids), dtype=np.int64)
    id_rank[np.argsort(np.array(pids, dtype=object), kind="stable")] = np.arange(len(pids))
    k = min(k, p.shape[0])
    results: Results = {}
    for start in range(0, q.shape[0], batch):
        scores = q[start:start + batch] @ p.T
        kth = -np.partition(-scores, k - 1, axis=1)[:, k - 1]  # k-th best score per row
        for row, qid in enumerate(qids[start:start + batch]):
            cand = np.flatnonzero(scores[row] >= kth[row])
            order = np.lexsort((id_rank[cand], -scores[row, cand]))[:k]
            results[qid] = {pids[i]: float(scores[row, i]) for i in cand[order]}
    return results
