"""Retrieval metrics (Recall@k, MRR@10, nDCG@10) of `results` against `qrels`, computed by pytrec_eval.

We call trec_eval (through pytrec_eval, as BEIR does) instead of writing our own loops so that our
numbers mean what everybody else's mean. This module is only the glue, and the glue fixes three
things pytrec_eval does silently:

1. A query in qrels that is absent from results is *skipped* by pytrec_eval, which would raise the
   average of a system that fails to answer. We score such a query 0 on every metric.
2. trec_eval breaks exact score ties by passage id *descending*. We hand it ranks instead of scores,
   ranked by (score descending, passage id ascending), the same rule `exact_search` uses, so the
   ranking that is scored is the one our searches produce. Without ties this changes nothing.
3. trec_eval's `recip_rank` has no cut-off. MRR@10 truncates each ranking to its top 10 first.

Queries whose qrels hold no passage of relevance > 0 cannot be answered by any system; they are left
out of every average (with a warning) instead of counting as 0 for everyone. Queries that appear in
results but not in qrels are ignored. A passage counts as relevant when its relevance is >= 1
(trec_eval's default `relevance_level`); nDCG uses the relevance itself as the gain.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Iterable

import numpy as np
import pytrec_eval

from embedfit.types import Qrels, Results

log = logging.getLogger(__name__)

MRR_CUTOFF = 10
NDCG_CUTOFF = 10


def ranked_ids(scores: dict[str, float]) -> list[str]:
    """Passage ids by score descending, ties by passage id ascending (our one tie rule)."""
    for pid, s in scores.items():
        if not math.isfinite(s):
            raise ValueError(f"score of passage {pid!r} is {s}; scores must be finite")
    return sorted(scores, key=lambda pid: (-scores[pid], pid))


def _as_ranks(ranking: list[str]) -> dict[str, float]:
    """Scores that make trec_eval see exactly `ranking` (the first id gets the highest value)."""
    n = len(ranking)
    return {pid: float(n - i) for i, pid in enumerate(ranking)}


def _judged(qrels: Qrels) -> Qrels:
    """The queries of qrels that have at least one relevant passage (relevance >= 1)."""
    judged = {qid: rels for qid, rels in qrels.items() if any(r >= 1 for r in rels.values())}
    if len(judged) < len(qrels):
        log.warning("%d of %d queries have no relevant passage in qrels; left out of the averages",
                    len(qrels) - len(judged), len(qrels))
    if not judged:
        raise ValueError("qrels hold no query with a relevant passage (relevance >= 1)")
    return judged


def _check_ks(ks: Iterable[int]) -> list[int]:
    """Sorted distinct cut-offs; each must be a positive int (trec_eval would silently truncate 1.5)."""
    given = list(ks)
    if not given or any(not isinstance(k, int) or isinstance(k, bool) or k < 1 for k in given):
        raise ValueError(f"cut-offs must be positive integers, got {given!r}")
    return sorted(set(given))


def _trec_per_query(qrels: Qrels, rankings: dict[str, list[str]], measures: set[str]) -> dict[str, dict[str, float]]:
    """pytrec_eval on every query of qrels; `rankings` must hold every one of them (maybe empty)."""
    run = {qid: _as_ranks(rankings[qid]) for qid in qrels}
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)


def per_query_metrics(
    qrels: Qrels, results: Results, k_values: Iterable[int] = (1, 5, 10, 100)
) -> dict[str, dict[str, float]]:
    """Metric name -> query id -> value, for every judged query (the input of bootstrap and tests).

    Names: `Recall@k` for each k in `k_values`, `MRR@10`, `nDCG@10`.
    """
    ks = _check_ks(k_values)
    qrels = _judged(qrels)
    rankings = {qid: ranked_ids(results.get(qid, {})) for qid in qrels}
    missing = sum(qid not in results for qid in qrels)
    if missing:
        log.info("%d of %d judged queries have no results; they score 0", missing, len(qrels))

    full = _trec_per_query(qrels, rankings, {"recall." + ",".join(map(str, ks)), f"ndcg_cut.{NDCG_CUTOFF}"})
    top = {qid: r[:MRR_CUTOFF] for qid, r in rankings.items()}
    mrr = _trec_per_query(qrels, top, {"recip_rank"})

    out: dict[str, dict[str, float]] = {f"Recall@{k}": {} for k in ks}
    out[f"MRR@{MRR_CUTOFF}"] = {}
    out[f"nDCG@{NDCG_CUTOFF}"] = {}
    for qid in qrels:
        for k in ks:
            out[f"Recall@{k}"][qid] = full[qid][f"recall_{k}"]
        out[f"MRR@{MRR_CUTOFF}"][qid] = mrr[qid]["recip_rank"]
        out[f"nDCG@{NDCG_CUTOFF}"][qid] = full[qid][f"ndcg_cut_{NDCG_CUTOFF}"]
    return out


def retrieval_metrics(
    qrels: Qrels, results: Results, k_values: Iterable[int] = (1, 5, 10, 100)
) -> dict[str, float]:
    """Mean over judged queries of each metric of `per_query_metrics` (BEIR-style flat dict)."""
    per_query = per_query_metrics(qrels, results, k_values)
    return {name: sum(vals.values()) / len(vals) for name, vals in per_query.items()}


def recall_at_k_curve(qrels: Qrels, results: Results, ks: Iterable[int]) -> dict[int, float]:
    """Mean Recall@k for each k in `ks` (for a recall-vs-k plot)."""
    ks = _check_ks(ks)
    qrels = _judged(qrels)
    rankings = {qid: ranked_ids(results.get(qid, {})) for qid in qrels}
    per_query = _trec_per_query(qrels, rankings, {"recall." + ",".join(map(str, ks))})
    return {k: sum(per_query[qid][f"recall_{k}"] for qid in qrels) / len(qrels) for k in ks}


def binary_metrics(scores: np.ndarray, query_ids: list[str], passage_ids: list[str], qrels: Qrels,
                   k_values: Iterable[int] = (1, 5, 10, 100)) -> dict[str, dict[str, float]]:
    """`per_query_metrics` for binary relevance, straight from a (queries x passages) score matrix.

    The fast path of selection loops, which score thousands of candidate settings: no result dicts, no
    trec_eval. Every relevance > 0 counts as gain 1, so it refuses graded qrels (use `per_query_metrics`). It
    means what trec_eval means: recall's denominator counts relevant passages missing from the corpus too, and
    exact score ties are broken by passage id ascending (`tests/test_eval_metrics.py` checks it against
    trec_eval; only a tie straddling the last place of the deepest cut-off may keep either passage). Queries
    without a relevant passage are left out, as there.
    """
    ks = _check_ks(k_values)
    scores = np.asarray(scores)
    judged = _judged_rows(query_ids, qrels)
    depth = min(max(max(ks), MRR_CUTOFF, NDCG_CUTOFF), scores.shape[1])
    rows = np.array([i for i, _ in judged], dtype=np.int64)
    top = top_rows(scores[rows] if len(rows) else np.zeros((0, scores.shape[1])), passage_ids, depth)
    return _metrics_of_top(top, judged, passage_ids, qrels, ks)


def top_rows(scores: np.ndarray, passage_ids: list[str], depth: int) -> np.ndarray:
    """Each row's `depth` best columns (queries x depth), best first, exact score ties broken by passage id
    ascending (as trec_eval and `ranked_ids` do; only a tie straddling the last place may keep either passage)."""
    n_p = scores.shape[1]
    depth = min(depth, n_p)
    by_id = np.argsort(np.asarray(passage_ids, dtype=object), kind="stable")
    in_order = bool(np.array_equal(by_id, np.arange(n_p)))  # the store's passages are: no copy then
    s = scores if in_order else scores[:, by_id]
    # with the columns in id order, the depth best columns of each row put in ascending column order and then
    # stably sorted by score leave exact ties in id order
    cut = np.argpartition(-s, depth - 1, axis=1)[:, :depth] if depth < n_p else np.tile(np.arange(n_p), (len(s), 1))
    cut = np.sort(cut, axis=1)
    order = np.argsort(-np.take_along_axis(s, cut, axis=1), axis=1, kind="stable")
    top = np.take_along_axis(cut, order, axis=1)
    return top if in_order else by_id[top]


def _judged_rows(query_ids: list[str], qrels: Qrels) -> list[tuple[int, str]]:
    """(row, query id) of the queries with a relevant passage; ValueError on graded relevance."""
    judged = [(i, q) for i, q in enumerate(query_ids) if any(r > 0 for r in qrels.get(q, {}).values())]
    if any(r > 1 for _, q in judged for r in qrels[q].values()):
        raise ValueError("binary metrics take binary relevance only; graded qrels need per_query_metrics")
    return judged


def ranking_binary_metrics(top: np.ndarray, query_ids: list[str], passage_ids: list[str], qrels: Qrels,
                           k_values: Iterable[int] = (1, 5, 10)) -> list[dict[str, dict[str, float]]]:
    """`binary_metrics` of rankings already made, several at once: `top[j, i]` holds the passage rows (of
    `passage_ids`) of ranking j of query i, best first, -1 where it has fewer (a 2-d `top` is one ranking). One
    result per ranking. Every k of `k_values` (and 10, for MRR@10 and nDCG@10) must fit in the rankings' depth.
    For rankings made outside a score matrix (`embedfit.retrieval.fusion.fused_rankings`: one per fusion weight)."""
    ks = _check_ks(k_values)
    top = top[None] if top.ndim == 2 else top
    if min(max(max(ks), MRR_CUTOFF, NDCG_CUTOFF), len(passage_ids)) > top.shape[2]:
        raise ValueError(f"rankings of {top.shape[2]} passages cannot give metrics at {max(ks)} and 10")
    judged = _judged_rows(query_ids, qrels)
    rows = np.array([i for i, _ in judged], dtype=np.int64)
    relevant, n_rel = _relevance(judged, passage_ids, qrels)
    qids = [q for _, q in judged]
    return [_hits_metrics(np.take_along_axis(relevant, t[rows], axis=1), n_rel, qids, ks) for t in top]


def _metrics_of_top(top: np.ndarray, judged: list[tuple[int, str]], passage_ids: list[str], qrels: Qrels,
                    ks: list[int]) -> dict[str, dict[str, float]]:
    """Per-query Recall@k, MRR@10 and nDCG@10 of rankings `top` (judged queries x depth; -1: no passage)."""
    relevant, n_rel = _relevance(judged, passage_ids, qrels)
    hits = np.take_along_axis(relevant, top, axis=1) if len(judged) else np.zeros((0, top.shape[-1]), dtype=bool)
    return _hits_metrics(hits, n_rel, [q for _, q in judged], ks)


def _relevance(judged: list[tuple[int, str]], passage_ids: list[str], qrels: Qrels) -> tuple[np.ndarray, np.ndarray]:
    """(relevant, n_rel): a (judged queries x passages + 1) boolean matrix whose last column, standing for -1 (no
    passage), is False; and each query's count of relevant passages, the ones missing from the corpus too (recall's
    denominator, as in trec_eval)."""
    col = {p: j for j, p in enumerate(passage_ids)}
    n_rel = np.zeros(len(judged), dtype=np.float64)
    relevant = np.zeros((len(judged), len(passage_ids) + 1), dtype=bool)
    for r, (_, q) in enumerate(judged):
        rel = [p for p, v in qrels[q].items() if v > 0]
        n_rel[r] = len(rel)
        relevant[r, [col[p] for p in rel if p in col]] = True
    return relevant, n_rel


def _hits_metrics(hits: np.ndarray, n_rel: np.ndarray, qids: list[str], ks: list[int]) -> dict[str, dict[str, float]]:
    """Per-query metrics from `hits` (queries x depth: is the passage at that rank relevant)."""
    out: dict[str, dict[str, float]] = {}
    for k in ks:
        out[f"Recall@{k}"] = dict(zip(qids, (hits[:, :k].sum(axis=1) / n_rel).tolist()))
    head = hits[:, :MRR_CUTOFF]
    rr = np.where(head.any(axis=1), 1.0 / (head.argmax(axis=1) + 1), 0.0)
    out[f"MRR@{MRR_CUTOFF}"] = dict(zip(qids, rr.tolist()))
    disc = 1.0 / np.log2(np.arange(2, NDCG_CUTOFF + 2))
    ideal = np.concatenate([[0.0], np.cumsum(disc)])[np.minimum(n_rel, NDCG_CUTOFF).astype(np.int64)]
    top10 = hits[:, :NDCG_CUTOFF]
    dcg = (top10 * disc[:top10.shape[1]]).sum(axis=1)
    out[f"nDCG@{NDCG_CUTOFF}"] = dict(zip(qids, (dcg / ideal).tolist()))
    return out
