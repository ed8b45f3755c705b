"""The "query memory": a training-free, passage-side transform.

Each passage that answers some training queries moves toward them:

    p' = normalise(p + alpha * mean(q for the training queries q whose positive p is))

Passages no training query points at keep their vector. The query vectors are the ones the search uses
(the query adapter's output when there is one, else the raw ones), so the moved passages live in the same
space as the queries that will look for them.

Why it works, and for whom: users ask about the same documents again in other words. A passage that was
the answer to "does vitamin D lower fracture risk" is, after the move, closer to every rephrasing of it,
whatever the embedding model thought of the abstract's wording. It cannot help a query about a passage no
training query answered (the *unseen* queries of `embedfit.metrics.seen`), and a large alpha can pull a moved passage
above the right, unmoved one for such a query: that is why alpha is chosen on dev with 0 (no move) always
a candidate, and why eval reports seen and unseen queries apart.

Pure numpy; the adapter stores the memory (`passage ids` + one vector each) and applies it when it
projects passages (`embedfit.adapters.adapter.Adapter.project_passages`).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def query_memory(Q: np.ndarray, positives: Sequence[np.ndarray], n_passages: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows, M): the passage rows some query of `Q` is a positive of (sorted), and for each the mean of those
    queries' vectors. `positives[i]` holds the passage rows of query i; a query counts once per passage."""
    Q = np.asarray(Q, dtype=np.float64)
    sums = np.zeros((n_passages, Q.shape[1]), dtype=np.float64)
    counts = np.zeros(n_passages, dtype=np.int64)
    pairs = [np.unique(np.asarray(rows, dtype=np.int64)) for rows in positives]
    if pairs:
        query_of = np.repeat(np.arange(len(pairs)), [len(r) for r in pairs])
        passage = np.concatenate(pairs)
        np.add.at(sums, passage, Q[query_of])
        np.add.at(counts, passage, 1)
    used = np.flatnonzero(counts)
    return used, (sums[used] / counts[used, None]).astype(np.float32)


def centre_memory(M: np.ndarray, Q: np.ndarray) -> np.ndarray:
    """The memory vectors `M` with their component along the mean of the training queries `Q` removed:
    m - (m . u) u, u = mean(Q) / |mean(Q)| (unchanged when the mean is 0).

    Why: every query shares that direction (they are all questions, or all claims), so a passage moved along it
    comes closer to *every* query, also to the new ones about other documents, and is pulled above their right,
    unmoved answers: the memory's cost on unseen queries. What is left of the move is what sets its own queries
    apart from the rest, which is what a rephrasing of them has too. On SciFact (all-MiniLM-L6-v2's adapter, memory
    from the train claims, dev claims scored) it gave back 1.0 to 1.4 of the 2.0 nDCG@10 points the plain memory
    cost the unseen claims, and cost the seen ones 0.7 to 3.2 (alpha 0.5 to 2): a trade, so selection tries it as a
    candidate beside the plain move (docs/results.md), it is not the default move."""
    Q = np.asarray(Q, dtype=np.float64)
    mu = Q.mean(axis=0) if len(Q) else np.zeros(np.shape(M)[1])
    norm = np.linalg.norm(mu)
    M = np.asarray(M, dtype=np.float64)
    if norm == 0:
        return M.astype(np.float32)
    u = mu / norm
    return (M - np.outer(M @ u, u)).astype(np.float32)


def apply_memory(P: np.ndarray, rows: np.ndarray, M: np.ndarray, alpha: float) -> np.ndarray:
    """A copy of `P` (unit rows) with rows `rows` moved: normalise(P[r] + alpha * M[i]). alpha 0 = no change."""
    out = np.array(P, dtype=np.float32, copy=True)
    if alpha == 0 or len(rows) == 0:
        return out
    moved = out[rows].astype(np.float64) + alpha * np.asarray(M, dtype=np.float64)
    norms = np.linalg.norm(moved, axis=1, keepdims=True)
    out[rows] = (moved / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    return out


def sufficient_moves(P: np.ndarray, rows: np.ndarray, M: np.ndarray, alpha: float, Q: np.ndarray,
                     positives: Sequence[np.ndarray], margin: float, steps: int = 20) -> np.ndarray:
    """For each moved passage `rows[i]`, the smallest fraction t of its move (t in 0, 1/steps, ..., 1) after which
    every training query it answers ranks it above that query's best other passage by `margin`:
    q . normalise(p + t * alpha * m) >= max over q's non-positives of q . P + margin. A passage whose queries
    already prefer it by the margin does not move (t = 0); one that no t in [0, 1] satisfies moves fully (t = 1).

    Why: the full memory moves every answered passage by alpha, and each move also pulls the passage toward
    queries about *other* documents (the unseen queries it then outranks their answer for). A passage moved only
    as far as its own queries need is a smaller hub. The other passages' moves are ignored when each passage's
    fraction is computed (each is judged against the unmoved corpus). `Q` are the (adapted) training queries
    `positives` index; the result scales the memory (`M * t[:, None]`), so it is stored and applied as any memory.
    """
    P = np.asarray(P, dtype=np.float64)
    Q = np.asarray(Q, dtype=np.float64)
    M = np.asarray(M, dtype=np.float64)
    where = {int(r): i for i, r in enumerate(rows)}
    best_other = np.empty(len(Q))
    for start in range(0, len(Q), 1024):  # q . P for every passage, in blocks (the corpus can be large)
        s = Q[start:start + 1024] @ P.T
        for i in range(s.shape[0]):
            s[i, np.asarray(positives[start + i], dtype=np.int64)] = -np.inf
        best_other[start:start + 1024] = s.max(axis=1)
    ts = np.linspace(0.0, 1.0, steps + 1)
    need = np.zeros(len(rows))
    for qi, pos in enumerate(positives):
        for r in np.unique(np.asarray(pos, dtype=np.int64)):
            i = where.get(int(r))
            if i is None:
                continue
            path = P[r][None, :] + ts[:, None] * alpha * M[i][None, :]
            path /= np.maximum(np.linalg.norm(path, axis=1, keepdims=True), 1e-12)
            ok = np.flatnonzero(path @ Q[qi] >= best_other[qi] + margin)
            need[i] = max(need[i], ts[ok[0]] if len(ok) else 1.0)
    return need
