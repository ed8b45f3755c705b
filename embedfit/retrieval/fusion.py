"""Hybrid search: fusing a dense and a lexical (BM25) ranking of the same query. Pure functions.

Why fusion needs care: dense cosines sit in a narrow band (0.3 to 0.8) while BM25 scores are unbounded
and vary by query length, so adding raw scores lets one side drown the other. Two families are used:

- **Weighted sum of per-query normalised scores** (`zscore` or `minmax`). Each side's top-`n` candidates
  are normalised *within the query*: z-score ((s - mean) / std) keeps how far a passage stands out of its
  side's pack, min-max ((s - min) / (max - min)) maps each side onto [0, 1]. Which one suits a dataset is
  an empirical question, so both are in the dev grid. The lexical side gets `weight`, the dense side
  `1 - weight`; weight 0 is the dense ranking itself, so the grid always contains "no fusion" (as adapter
  selection always contains the identity).
- **Reciprocal-rank fusion** (`rrf`, Cormack et al. 2009): each side contributes 1 / (k + rank), k = 60,
  equal weights. It needs no tuning, which is why it is the common default, and ignores how far apart
  the scores are, which is why it can lose to a tuned score fusion.

Candidates are the union of each side's top `n`. A passage missing from one side gets that side's lowest
value among its candidates (for RRF: the value of its last rank): it was not in that side's top `n`,
so it is scored as if it were at the bottom of it. A side with no candidates at all (BM25 shares no word
with the query) contributes 0 to everyone, leaving the other side's order. Ties are broken by passage id,
as everywhere (`embedfit.metrics.retrieval.ranked_ids`).

The fusion to use is chosen on the dev split only (`choose_fusion`) and saved; test and held-out queries
never choose anything. The raw+BM25 choice of a store is saved beside it (`STORE/fusion/MODEL.json`),
an adapter's in its config (`AdapterConfig.fusion`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from embedfit import atomic
from embedfit.metrics.retrieval import ranked_ids, retrieval_metrics
from embedfit.outputs import read_json_object
from embedfit.retrieval.lexical import SIGNATURE as LEXICAL_SIGNATURE
from embedfit.settings import K_VALUES
from embedfit.types import Qrels, Results, slug, text_sha

SCORE_METHODS = ("zscore", "minmax")
METHODS = (*SCORE_METHODS, "rrf")
RRF_K = 60
#: candidates taken from each side
DEFAULT_N = 100
#: the lexical side's weight: 0 (dense only) to 1 (BM25 only) in steps of 0.1
WEIGHTS = tuple(round(i / 10, 1) for i in range(11))


@dataclass(frozen=True)
class FusionSpec:
    """How to fuse: `method`, the lexical side's `weight` in [0, 1], `n` candidates per side."""

    method: str = "zscore"
    weight: float = 0.5
    n: int = DEFAULT_N
    rrf_k: int = RRF_K

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"fusion method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not 0.0 <= self.weight <= 1.0:
            raise ValueError(f"fusion weight must be in [0, 1], got {self.weight}")
        if self.n < 1 or self.rrf_k < 0:
            raise ValueError(f"fusion needs n >= 1 and rrf_k >= 0, got n={self.n}, rrf_k={self.rrf_k}")

    def describe(self) -> str:
        if self.method == "rrf":
            return f"RRF (k={self.rrf_k}, equal weights, top {self.n} of each side)"
        return f"{self.method} score fusion, BM25 weight {self.weight:g} (top {self.n} of each side)"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping) -> FusionSpec:
        return cls(method=str(d["method"]), weight=float(d["weight"]), n=int(d.get("n", DEFAULT_N)),
                   rrf_k=int(d.get("rrf_k", RRF_K)))


#: the common untuned alternative reported next to the tuned fusion
RRF_DEFAULT = FusionSpec(method="rrf", weight=0.5)


@dataclass(frozen=True)
class FusionChoice:
    """The fusion chosen on `split` (always dev) by `metric`, with every candidate's dev score."""

    spec: FusionSpec
    split: str
    metric: str
    score: float
    #: the metric of the dense side alone (weight 0) on the same queries
    dense_only: float
    n_queries: int
    grid: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        """With the BM25 rule it was chosen against (`lexical`: `embedfit.retrieval.lexical.SIGNATURE`): a weight
        chosen for another tokenizer or scoring is not the best for this one (`is_current`)."""
        return {**self.spec.to_json(), "chosen_on": self.split, "metric": self.metric, "dev_score": self.score,
                "dev_dense_only": self.dense_only, "n_dev_queries": self.n_queries, "grid": self.grid,
                "lexical": LEXICAL_SIGNATURE}

    @classmethod
    def from_json(cls, d: Mapping) -> FusionChoice:
        return cls(spec=FusionSpec.from_json(d), split=str(d["chosen_on"]), metric=str(d["metric"]),
                   score=float(d["dev_score"]), dense_only=float(d["dev_dense_only"]),
                   n_queries=int(d["n_dev_queries"]), grid=list(d.get("grid", [])))


def is_current(saved: Mapping | None) -> bool:
    """True when a saved choice (`FusionChoice.to_json`) was made against the BM25 this code builds; one saved by an
    older embedfit (another tokenizer or scoring, or no record of it) must be chosen again."""
    return saved is not None and saved.get("lexical") == LEXICAL_SIGNATURE


def top_n(scores: Mapping[str, float], n: int) -> dict[str, float]:
    """The `n` best of one side, ordered by score then id."""
    return {pid: scores[pid] for pid in ranked_ids(dict(scores))[:n]}


def normalise(scores: Mapping[str, float], method: str) -> dict[str, float]:
    """Per-query normalisation of one side's candidate scores. A side whose scores are all equal carries no
    order, so every candidate gets 0 (under both methods)."""
    if not scores:
        return {}
    ids = list(scores)
    s = np.fromiter((scores[p] for p in ids), dtype=np.float64, count=len(ids))
    if method == "zscore":
        std = s.std()
        z = (s - s.mean()) / std if std > 0 else np.zeros_like(s)
    elif method == "minmax":
        span = s.max() - s.min()
        z = (s - s.min()) / span if span > 0 else np.zeros_like(s)
    else:
        raise ValueError(f"unknown normalisation {method!r}")
    return dict(zip(ids, z.tolist()))


def _rrf(scores: Mapping[str, float], k: int) -> dict[str, float]:
    return {pid: 1.0 / (k + rank) for rank, pid in enumerate(ranked_ids(dict(scores)), start=1)}


def fuse(dense: Mapping[str, float], lexical: Mapping[str, float], spec: FusionSpec) -> dict[str, float]:
    """One query: passage id -> fused score over the union of both sides' top `spec.n`, best first."""
    d, lx = top_n(dense, spec.n), top_n(lexical, spec.n)
    if spec.method == "rrf":
        nd, nl = _rrf(d, spec.rrf_k), _rrf(lx, spec.rrf_k)
    else:
        nd, nl = normalise(d, spec.method), normalise(lx, spec.method)
    floor_d = min(nd.values()) if nd else 0.0
    floor_l = min(nl.values()) if nl else 0.0
    w = spec.weight
    fused = {pid: (1.0 - w) * nd.get(pid, floor_d) + w * nl.get(pid, floor_l) for pid in {*nd, *nl}}
    return {pid: fused[pid] for pid in ranked_ids(fused)}


def fuse_results(dense: Results, lexical: Results, spec: FusionSpec, k: int | None = None) -> Results:
    """Every query of `dense` fused with its lexical side (none: dense order kept); top `k` when given."""
    out: Results = {}
    for qid, scores in dense.items():
        fused = fuse(scores, lexical.get(qid, {}), spec)
        out[qid] = dict(list(fused.items())[:k]) if k is not None else fused
    return out


def choose_fusion(dense: Results, lexical: Results, qrels: Qrels, *, metric: str = "MRR@10", split: str = "dev",
                  methods: Sequence[str] = SCORE_METHODS, weights: Sequence[float] = WEIGHTS,
                  n: int = DEFAULT_N) -> FusionChoice:
    """The (method, weight) with the best mean `metric` over the queries of `dense` (which must be the dev
    split's). Ties go to the first in grid order: methods as given, weights ascending, so the smaller BM25
    weight wins a tie and weight 0 (dense only) wins when nothing beats it."""
    if not dense:
        raise ValueError("choose_fusion needs at least one query")
    judged = {q: qrels[q] for q in dense if q in qrels}
    grid: list[dict] = []
    best: tuple[float, FusionSpec] | None = None
    dense_only = None
    for method in methods:
        for w in weights:
            spec = FusionSpec(method=method, weight=float(w), n=n)
            value = retrieval_metrics(judged, fuse_results(dense, lexical, spec), K_VALUES)[metric]
            grid.append({"method": method, "weight": float(w), metric: value})
            if w == 0 and dense_only is None:
                dense_only = value
            if best is None or value > best[0]:
                best = (value, spec)
    assert best is not None
    if dense_only is None:
        dense_only = retrieval_metrics(judged, {q: top_n(s, n) for q, s in dense.items()}, K_VALUES)[metric]
    return FusionChoice(spec=best[1], split=split, metric=metric, score=best[0], dense_only=dense_only,
                        n_queries=len(judged), grid=grid)


# -- the same fusion on arrays, for selection loops -----------------------------------------------------

@dataclass(frozen=True)
class LexicalTopN:
    """One side's top n per query as arrays: `rows[i]` the passage rows of query `query_ids[i]` best first (-1 pads
    a query with fewer candidates), `scores[i]` their scores. Built once; every dense candidate is fused against it."""

    query_ids: tuple[str, ...]
    rows: np.ndarray  # (queries, n) int64
    scores: np.ndarray  # (queries, n) float64, NaN where rows is -1

    @classmethod
    def from_results(cls, results: Results, query_ids: Sequence[str], passage_ids: Sequence[str],
                     n: int = DEFAULT_N) -> LexicalTopN:
        """From BEIR results (query id -> passage id -> score), in `query_ids` order, rows of `passage_ids`;
        passages not in `passage_ids` are dropped, and each query keeps its `n` best (`top_n`)."""
        where = {p: i for i, p in enumerate(passage_ids)}
        rows = np.full((len(query_ids), n), -1, dtype=np.int64)
        scores = np.full((len(query_ids), n), np.nan)
        for i, q in enumerate(query_ids):
            best = [(where[p], v) for p, v in top_n(results.get(q, {}), n).items() if p in where]
            if best:
                rows[i, :len(best)] = [r for r, _ in best]
                scores[i, :len(best)] = [v for _, v in best]
        return cls(tuple(query_ids), rows, scores)

    def for_queries(self, query_ids: Sequence[str]) -> LexicalTopN:
        """The same arrays for `query_ids` (each must be among this one's), in that order."""
        where = {q: i for i, q in enumerate(self.query_ids)}
        index = np.array([where[q] for q in query_ids], dtype=np.int64)
        return LexicalTopN(tuple(query_ids), self.rows[index], self.scores[index])


def _normalise_rows(s: np.ndarray, method: str) -> np.ndarray:
    """`normalise` for every row of `s` at once, over its non-NaN entries (NaN stays NaN)."""
    valid = ~np.isnan(s)
    count = valid.sum(axis=1, keepdims=True)
    if method == "zscore":
        mean = np.where(count > 0, np.nansum(s, axis=1, keepdims=True) / np.maximum(count, 1), 0.0)
        var = np.where(valid, (s - mean) ** 2, 0.0).sum(axis=1, keepdims=True) / np.maximum(count, 1)
        std = np.sqrt(var)
        return np.where(std > 0, (s - mean) / np.where(std > 0, std, 1.0), np.where(valid, 0.0, np.nan))
    if method == "minmax":
        lo = np.where(count > 0, np.nanmin(np.where(valid, s, np.inf), axis=1, keepdims=True), 0.0)
        hi = np.where(count > 0, np.nanmax(np.where(valid, s, -np.inf), axis=1, keepdims=True), 0.0)
        span = hi - lo
        return np.where(span > 0, (s - lo) / np.where(span > 0, span, 1.0), np.where(valid, 0.0, np.nan))
    raise ValueError(f"unknown normalisation {method!r}")


@dataclass(frozen=True)
class PreparedLexical:
    """A `LexicalTopN` made ready to fuse with any dense ranking of the same queries (`prepare_lexical`): what does
    not depend on the dense side is computed once per query set, not once per candidate."""

    method: str
    n: int
    rows: np.ndarray  # (queries, n) passage rows, -1 padding
    z: np.ndarray  # (queries, n) normalised scores (NaN at padding)
    valid: np.ndarray  # rows >= 0
    #: (queries, passages + 1): each passage's normalised lexical value for the query, the lexical floor for those
    #: outside its top n (the last column stands for row -1)
    lookup: np.ndarray


@dataclass(frozen=True)
class LexicalPrior:
    """A query set's lexical side as score fusion sees it (`normalise`: its top n normalised, the floor for every
    passage outside), kept as compact as `LexicalTopN` (queries x n, not queries x passages: 450 MB for NQ's train
    queries) so a training loop can expand it one batch at a time. Adding `weight * prior` to a query adapter's
    logits trains the adapter *through* the fused score: it learns what BM25 does not already get right
    (`embedfit.adapters.train`)."""

    query_ids: tuple[str, ...]
    rows: np.ndarray  # (queries, n) passage rows, -1 padding
    z: np.ndarray  # (queries, n) normalised scores, 0 at padding
    floor: np.ndarray  # (queries,) the value of a passage outside the query's top n

    @classmethod
    def of(cls, lexical: LexicalTopN, method: str = "zscore", n: int = DEFAULT_N) -> LexicalPrior:
        if method not in SCORE_METHODS:
            raise ValueError(f"array fusion takes a score method ({', '.join(SCORE_METHODS)}), got {method!r}")
        rows = lexical.rows[:, :n]
        z = _normalise_rows(lexical.scores[:, :n], method)
        valid = rows >= 0
        floor = np.where(valid.any(axis=1), np.nanmin(np.where(valid, z, np.inf), axis=1), 0.0)
        return cls(lexical.query_ids, rows, np.where(valid, z, 0.0), floor)

    def __len__(self) -> int:
        return len(self.rows)

    def expand(self, queries: np.ndarray, n_passages: int, dtype=np.float32,
               columns: np.ndarray | None = None) -> np.ndarray:
        """(len(queries), n_passages): each of these queries' normalised lexical score for every passage; with
        `columns` (passage rows), only for those, in that order: (len(queries), len(columns))."""
        columns = np.arange(n_passages) if columns is None else np.asarray(columns)
        where = np.full(n_passages, -1)  # passage row -> output column (-1: not asked for)
        where[columns] = np.arange(len(columns))
        out = np.repeat(self.floor[queries, None].astype(dtype), len(columns), axis=1)
        rows, z = self.rows[queries], self.z[queries]
        b, c = np.nonzero(rows >= 0)
        col = where[rows[b, c]]
        keep = col >= 0
        out[b[keep], col[keep]] = z[b[keep], c[keep]]
        return out


def prepare_lexical(lexical: LexicalTopN, n_passages: int, method: str = "zscore",
                    n: int = DEFAULT_N) -> PreparedLexical:
    prior = LexicalPrior.of(lexical, method, n)  # refuses a method that is not a score method
    valid = prior.rows >= 0
    lookup = prior.expand(np.arange(len(prior)), n_passages + 1, np.float64)  # no row is n_passages: floor there
    return PreparedLexical(method, n, prior.rows, np.where(valid, prior.z, np.nan), valid, lookup)


def fused_rankings(dense: np.ndarray, lexical: LexicalTopN | PreparedLexical, weights: Sequence[float],
                   method: str = "zscore", n: int = DEFAULT_N, k: int = 10,
                   dense_top: np.ndarray | None = None) -> dict[float, np.ndarray]:
    """`fuse` for every query and every lexical weight at once, from a dense score matrix (queries x passages,
    rows in `lexical`'s order): weight -> the passage rows of each query's fused top `k` (queries x k), best
    first, -1 where fewer. Selection scores hundreds of candidates this way; the dict path (`fuse_results`) takes
    seconds per candidate. Same candidates, normalisation and floors as `fuse`; exact ties of fused scores are
    broken by passage row (`tests/test_fused_selection.py` finds the same top 10 as `fuse_results` on real data).
    Pass a `PreparedLexical` (its method and n win) when fusing many dense rankings with one lexical side, and
    `dense_top` (each query's best dense rows, at least n wide, as `embedfit.metrics.retrieval.top_rows` gives
    them) when the caller has ranked already."""
    lex = lexical if isinstance(lexical, PreparedLexical) else prepare_lexical(lexical, dense.shape[1], method, n)
    n = lex.n
    nq, n_p = dense.shape
    nd = min(n, n_p)
    if dense_top is not None and dense_top.shape[1] >= nd:
        d_rows = dense_top[:, :nd]
    else:
        d_rows = np.argpartition(-dense, nd - 1, axis=1)[:, :nd] if nd < n_p else np.tile(np.arange(n_p), (nq, 1))
    d_z = _normalise_rows(np.take_along_axis(dense, d_rows, axis=1).astype(np.float64), lex.method)
    floor_d = d_z.min(axis=1, keepdims=True)
    lex_of_dense = np.take_along_axis(lex.lookup, d_rows, axis=1)
    in_dense = np.zeros((nq, n_p + 1), dtype=bool)
    np.put_along_axis(in_dense, d_rows, True, axis=1)
    lex_only = lex.valid & ~np.take_along_axis(in_dense, np.where(lex.valid, lex.rows, n_p), axis=1)
    cand = np.concatenate([d_rows, np.where(lex.valid, lex.rows, 0)], axis=1)
    a = np.concatenate([d_z, np.broadcast_to(floor_d, lex.z.shape)], axis=1)
    b = np.concatenate([lex_of_dense, np.where(lex_only, lex.z, 0.0)], axis=1)
    keep = np.concatenate([np.ones_like(d_rows, dtype=bool), lex_only], axis=1)
    kk = min(k, cand.shape[1])
    out = {}
    for w in weights:
        f = np.where(keep, (1.0 - w) * a + w * b, -np.inf)
        top = np.argpartition(-f, kk - 1, axis=1)[:, :kk] if kk < f.shape[1] else np.tile(np.arange(f.shape[1]),
                                                                                          (nq, 1))
        rows = np.take_along_axis(cand, top, axis=1)
        fs = np.take_along_axis(f, top, axis=1)
        order = np.lexsort((rows, -fs), axis=1)  # fused score descending, then passage row ascending
        rows = np.take_along_axis(rows, order, axis=1)
        out[float(w)] = np.where(np.take_along_axis(fs, order, axis=1) > -np.inf, rows, -1)
    return out


# -- the raw+BM25 choice, saved beside the store ------------------------------------------------------

FUSION_DIR = "fusion"


def fusion_path(store_root: Path, model_id: str) -> Path:
    """`STORE/fusion/<model>.json`: the raw+BM25 fusion chosen on dev for one model of the store."""
    return Path(store_root) / FUSION_DIR / f"{slug(model_id)}.json"


def dev_signature(splits: Mapping[str, str]) -> str:
    """Names the dev split a choice was made on: a re-split store (other seed or policy) must choose again."""
    return text_sha("\n".join(sorted(q for q, s in splits.items() if s == "dev")))


def save_raw_fusion(store_root: Path, model_id: str, choice: FusionChoice, data_fingerprint: str,
                    dev_sha: str | None = None) -> Path:
    path = fusion_path(store_root, model_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, {"model": model_id, "data_fingerprint": data_fingerprint, "dev_sha": dev_sha,
                             **choice.to_json()})
    return path


def load_raw_fusion(store_root: Path, model_id: str, data_fingerprint: str | None = None,
                    dev_sha: str | None = None) -> FusionChoice | None:
    """The saved choice, or None when there is none or it was made on other data, another dev split or another
    BM25 (then it must be made again)."""
    obj = read_json_object(fusion_path(store_root, model_id))
    if obj is None or (data_fingerprint and obj.get("data_fingerprint") != data_fingerprint) or not is_current(obj):
        return None
    if dev_sha and obj.get("dev_sha") not in (None, dev_sha):
        return None
    try:
        return FusionChoice.from_json(obj)
    except (KeyError, TypeError, ValueError):
        return None
