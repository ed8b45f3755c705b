"""`embedfit.fit_vectors`: the same selection as `embedfit.fit`, on numpy arrays, with no store.

For users who already have embeddings (their own model, an API, their own vector database): passage vectors,
labelled query vectors, and which passages answer each query. Negatives are mined from the vectors with the
ingest rules (`embedfit.pipeline.negatives`: exact nearest neighbours, positives and above-margin candidates
skipped; the near-duplicate text rule needs texts, so it is skipped here), the labelled queries are split into
train and dev (seeded), and `embedfit.adapters.select.select_adapter` chooses among the identity, the query
memory, a linear query adapter and both, cross-validated on small data. The adapter that comes back projects
queries and passages and exports like any other (`embedfit.export`).

There is no BM25 side here (no texts), so no fusion is chosen.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence

import numpy as np

from embedfit.adapters.config import TrainConfig
from embedfit.adapters.data import SplitData, TrainingData
from embedfit.adapters.fit import FitResult, train_config
from embedfit.adapters.select import select_adapter
from embedfit.embed.base import l2_normalise
from embedfit.errors import InputError
from embedfit.pipeline.negatives import MiningConfig, MiningInput, mine_negatives

log = logging.getLogger(__name__)

#: fewer labelled queries than this cannot be split into train, dev and cross-validation folds
MIN_LABELLED = 10


def _matrix(x, what: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"{what} must be a 2-D array (rows = vectors), got shape {a.shape}")
    if not np.isfinite(a).all():
        bad = int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])
        raise InputError(f"{what} row {bad} holds NaN or inf")
    return a


def _ids(ids: Sequence[str] | None, n: int, prefix: str, what: str) -> list[str]:
    if ids is None:
        return [f"{prefix}{i}" for i in range(n)]
    ids = [str(i) for i in ids]
    if len(ids) != n:
        raise InputError(f"{what} has {len(ids)} ids for {n} vectors")
    if len(set(ids)) != n:
        raise InputError(f"{what} ids must be unique")
    return ids


def _positive_rows(positives: Sequence[Sequence[int | str]], n_queries: int, passage_ids: list[str]) -> list[list[int]]:
    """Each query's positives as passage rows; they may be given as rows (int) or as passage ids (str)."""
    if len(positives) != n_queries:
        raise InputError(f"positives has {len(positives)} entries for {n_queries} queries: give one list per query")
    row = {pid: i for i, pid in enumerate(passage_ids)}
    out = []
    for q, pos in enumerate(positives):
        pos = [pos] if isinstance(pos, (int, np.integer, str)) else list(pos)
        if not pos:
            raise InputError(f"query {q} has no positive passage: every labelled query needs at least one")
        rows = []
        for p in pos:
            if isinstance(p, str):
                if p not in row:
                    raise InputError(f"query {q}: positive {p!r} is not among the passage ids")
                rows.append(row[p])
            elif isinstance(p, (int, np.integer)) and 0 <= int(p) < len(passage_ids):
                rows.append(int(p))
            else:
                raise InputError(f"query {q}: positive {p!r} is neither a passage id nor a row in [0, {len(passage_ids)})")
        out.append(sorted(set(rows)))
    return out


def vectors_fingerprint(passage_ids: list[str], P: np.ndarray) -> str:
    """Names the passage set an adapter was fitted on (what a store's data fingerprint does for a store)."""
    h = hashlib.sha256("\n".join(passage_ids).encode("utf-8"))
    h.update(np.ascontiguousarray(P).tobytes())
    return "vectors:" + h.hexdigest()[:16]


def fit_vectors(passages, queries, positives: Sequence[Sequence[int | str]], *,
                passage_ids: Sequence[str] | None = None, query_ids: Sequence[str] | None = None,
                model: str = "vectors", dev_fraction: float = 0.2, mining: MiningConfig | None = None,
                config: TrainConfig | None = None, **options) -> FitResult:
    """Choose and fit the customization on your own vectors, with no store.

    Args:
        passages: (n_passages, d) passage vectors, from the model the queries were embedded with.
        queries: (n_queries, d) labelled query vectors.
        positives: for each query, the passages that answer it: rows of `passages` (int) or `passage_ids` (str).
        passage_ids, query_ids: ids to name rows by (default "p0", "p1", ... and "q0", ...); the query memory of
            the result moves passages *by id*, so give the ids your vector database uses.
        model: the name of the model that made the vectors (recorded in the adapter).
        dev_fraction: the share of labelled queries held out as dev (with up to 3,000 labelled queries selection
            cross-validates over all of them anyway).
        mining: how hard and random negatives are mined (`MiningConfig`).
        config, **options: as for `embedfit.fit` (`methods`, `folds`, `alphas`, `epochs`, ...).

    Vectors are L2-normalised (scores are cosines), as the store's are.

    Returns:
        A `FitResult` (`.adapter.project_queries(Q)`, `.adapter.project_passages(P, ids)`, `.save`, `.table`).

    Raises:
        InputError: shapes, NaN/inf, an unknown positive, a query without positives, too few labelled queries.

    Example:
        >>> result = ef.fit_vectors(P, Q, positives=[[3], [0, 7], ...])        # doctest: +SKIP
        >>> result.adapter.project_queries(new_queries)                           # doctest: +SKIP
    """
    P, Q = _matrix(passages, "passages"), _matrix(queries, "queries")
    if P.shape[1] != Q.shape[1]:
        raise InputError(f"passages are {P.shape[1]}-d but queries {Q.shape[1]}-d: embed both with the same model")
    if P.shape[0] < 2:
        raise InputError("need at least 2 passages")
    if not 0.0 < dev_fraction < 1.0:
        raise InputError(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    pids = _ids(passage_ids, len(P), "p", "passage_ids")
    qids = _ids(query_ids, len(Q), "q", "query_ids")
    rows = _positive_rows(positives, len(Q), pids)
    if len(Q) < MIN_LABELLED:
        raise InputError(f"{len(Q)} labelled queries; fit_vectors needs at least {MIN_LABELLED} (train, dev and "
                         "cross-validation folds are cut from them)")
    cfg = train_config(model, None, {"tune_fusion": False, **options}, config)
    P, Q = l2_normalise(P), l2_normalise(Q)
    qrels = {q: {pids[r]: 1 for r in rs} for q, rs in zip(qids, rows)}
    order = np.random.default_rng(cfg.seed).permutation(len(qids))
    n_dev = max(1, int(round(dev_fraction * len(qids))))
    splits = {qids[i]: ("dev" if k < n_dev else "train") for k, i in enumerate(order)}
    examples, stats = mine_negatives(MiningInput(query_ids=qids, query_vecs=Q, passage_ids=pids, passage_vecs=P,
                                                 passage_texts=None, qrels=qrels, splits=splits),
                                     mining or MiningConfig(seed=cfg.seed))
    log.info("fit_vectors: %d passages, %d labelled queries (%d dev); negatives: %s", len(pids), len(qids), n_dev,
             stats)
    prow = {p: i for i, p in enumerate(pids)}
    qrow = {q: i for i, q in enumerate(qids)}

    def split(name: str) -> SplitData:
        ex = [e for e in examples if e.split == name]

        def idx(ids) -> np.ndarray:
            return np.array([prow[p] for p in ids], dtype=np.int64)

        return SplitData(query_ids=[e.query_id for e in ex], Q=Q[[qrow[e.query_id] for e in ex]],
                         positives=[idx(e.positive_ids) for e in ex], hard=[idx(e.hard_ids) for e in ex],
                         weak=[idx(e.weak_ids) for e in ex], qrels={e.query_id: qrels[e.query_id] for e in ex})

    data = TrainingData(model_id=model, dim=int(P.shape[1]), data_fingerprint=vectors_fingerprint(pids, P),
                        raw_collection="", passage_ids=pids, P=P, train=split("train"), dev=split("dev"))
    result, sel, chosen = select_adapter(None, cfg, data)
    return FitResult.of(result, None, sel, chosen)
