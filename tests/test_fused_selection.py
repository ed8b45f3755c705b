"""Selecting for what is served (issue 21, item 3): with BM25 fusion on, selection scores every candidate fused with
BM25 (`embedfit.retrieval.fusion.fused_rankings`, on arrays) and decides by the fused metric when fusion pays.

Oracles: the dict path every system is served and evaluated with (`fuse_results`, `retrieval_metrics` on
pytrec_eval), on the real shared NQ rows of the session's small store (all-MiniLM-L6-v2, 300 queries).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from embedfit.adapters.config import TrainConfig
from embedfit.adapters.data import load_training_data
from embedfit.adapters.select import (
    _dense_results,
    fit,
    folds_of,
    memory_alpha,
    run_selection,
    table_markdown,
)
from embedfit.adapters.train import lexical_side
from embedfit.metrics.retrieval import ranking_binary_metrics, retrieval_metrics
from embedfit.retrieval.exact import exact_search
from embedfit.retrieval.fusion import WEIGHTS, FusionSpec, LexicalTopN, fuse_results, fused_rankings
from embedfit.settings import K_VALUES
from embedfit.store.store import Store

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def store_data(small_store):
    store = Store(small_store[0].store)
    return store, load_training_data(store, MODEL)


@pytest.mark.parametrize("method", ["zscore", "minmax"])
def test_fused_rankings_equal_the_served_fusion_on_real_queries(store_data, method):
    """Every weight: the array path's top 10 equals `fuse_results`' top 10 for every dev query (the dict path the
    page, eval and the saved fusion use), and so do the metrics."""
    store, data = store_data
    split = dataclasses.replace(data.dev)
    queries = store.load_queries()
    S = split.Q @ data.P.T
    dense = exact_search(split.Q, split.query_ids, data.P, data.passage_ids, k=100)
    lexical = store.lexical_index().search_queries({q: queries[q] for q in split.query_ids}, 100)
    arrays = fused_rankings(S, LexicalTopN.from_results(lexical, split.query_ids, data.passage_ids), WEIGHTS,
                            method=method)
    got_metrics = ranking_binary_metrics(np.stack([arrays[w] for w in WEIGHTS]), split.query_ids, data.passage_ids,
                                         split.qrels, (1, 5, 10))
    differ = 0
    for w, m in zip(WEIGHTS, got_metrics):
        served = fuse_results(dense, lexical, FusionSpec(method, w), k=10)
        for i, q in enumerate(split.query_ids):
            want = list(served[q])
            got = [data.passage_ids[r] for r in arrays[w][i] if r >= 0]
            differ += got != want
        want_m = retrieval_metrics(split.qrels, served, K_VALUES)
        assert np.mean(list(m["MRR@10"].values())) == pytest.approx(want_m["MRR@10"], abs=1e-9)
        assert np.mean(list(m["nDCG@10"].values())) == pytest.approx(want_m["nDCG@10"], abs=1e-9)
    assert differ == 0
    assert len(split.query_ids) >= 20


def _oracle_fused(cfg, point, folds, lexical_results, lexical) -> float:
    """The point fitted on each fold's train part, its dev top 100 fused by `fuse_results` at each weight, scored by
    pytrec_eval: the best weight's mean over folds (what `Selection.value(point, "fused")` estimates)."""
    per_weight = {w: [] for w in WEIGHTS}
    for d in folds:
        module, memory = fit(cfg, point, d, lexical)
        dense = _dense_results(module, memory, memory_alpha(point), d, 100)
        for w in WEIGHTS:
            fused = fuse_results(dense, lexical_results, FusionSpec("zscore", w), k=10)
            per_weight[w].append(retrieval_metrics(d.dev.qrels, fused, K_VALUES)[cfg.metric])
    return max(float(np.mean(v)) for v in per_weight.values())


def test_fused_selection_never_picks_worse_than_the_dense_choice_on_dev(store_data):
    store, data = store_data
    cfg = TrainConfig(model=MODEL, methods=("memory", "query"), folds=3, max_epochs=6, patience=2,
                      temperatures=(0.05,), alphas=(0.5, 1.0), candidate_sets=("corpus",))
    lexical = lexical_side(store, data)
    sel = run_selection(cfg, data, lexical)
    dense_choice, fused_choice = sel.best(served="dense"), sel.best(served="fused")
    queries = store.load_queries()
    pool = [*data.train.query_ids, *data.dev.query_ids]
    lexical_results = store.lexical_index().search_queries({q: queries[q] for q in pool}, 100)
    folds = folds_of(data, sel.folds, cfg.seed)
    # and the best adapter trained through the fused score (refitted here from its point: the same run selection scored)
    through = sel.best([p for p in sel.scores if p.prior], guard=False, served="fused")
    assert through is not None and through.prior == cfg.lexical_priors[0]
    oracle = {p: _oracle_fused(cfg, p, folds, lexical_results, lexical) for p in {dense_choice, fused_choice, through}}
    assert oracle[fused_choice] >= oracle[dense_choice] - 1e-9
    for p, v in oracle.items():  # the array path measured what the dict path measures
        assert sel.value(p, "fused") == pytest.approx(v, abs=1e-9), p
    assert sel.served in ("dense", "fused")
    assert sel.best() == (fused_choice if sel.served == "fused" else dense_choice)
    assert "through BM25 0.5" in table_markdown(sel, sel.best())  # its own row in the table


def test_when_bm25_adds_nothing_the_dense_choice_stands(store_data):
    """A lexical side with no candidates for any query: every fused metric equals the dense one, the best weight is
    0, so selection serves the dense choice, the same as selecting without BM25."""
    _, data = store_data
    cfg = TrainConfig(model=MODEL, methods=("memory",), folds=3, alphas=(0.5, 1.0))
    ids = [*data.train.query_ids, *data.dev.query_ids]
    empty = LexicalTopN(tuple(ids), np.full((len(ids), 100), -1), np.full((len(ids), 100), np.nan))
    with_empty, without = run_selection(cfg, data, empty), run_selection(cfg, data)
    assert with_empty.served == "dense" and with_empty.best() == without.best()
    for p in with_empty.scores:
        assert with_empty.fused_weight(p) == 0.0
        assert with_empty.value(p, "fused") == pytest.approx(without.value(p), abs=1e-12)
