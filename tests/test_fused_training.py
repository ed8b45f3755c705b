"""Training the query adapter through the fused score (issue 21, item 3): BM25's score, normalised as score fusion
normalises it, is added to the InfoNCE logits, so the adapter learns what BM25 does not already get right.

Oracles: the dict path fusion serves with (`normalise` over each query's top n, the floor outside), a hand-worked
cross-entropy, and a toy where BM25 alone already ranks every positive first."""
from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedfit.adapters.config import TrainConfig
from embedfit.adapters.data import SplitData, TrainingData
from embedfit.adapters.losses import info_nce
from embedfit.adapters.train import initial_module, run_epochs
from embedfit.errors import InputError
from embedfit.retrieval.fusion import LexicalPrior, LexicalTopN, normalise


def test_the_prior_is_bm25_as_fusion_normalises_it():
    pids = [f"p{i}" for i in range(6)]
    results = {"a": {"p1": 7.0, "p4": 3.0, "p0": 1.0, "p5": 0.5}, "b": {"p2": 2.0}, "c": {}}
    lex = LexicalTopN.from_results(results, ["a", "b", "c"], pids, n=3)  # "a" keeps its 3 best: p5 falls out
    prior = LexicalPrior.of(lex, n=3)
    got = prior.expand(np.array([2, 0, 1]), len(pids))
    for row, q in zip(got, ["c", "a", "b"]):
        top = dict(sorted(results[q].items(), key=lambda kv: -kv[1])[:3])
        z = normalise(top, "zscore")
        floor = min(z.values()) if z else 0.0
        want = [z.get(p, floor) for p in pids]
        np.testing.assert_allclose(row, want, atol=1e-6)
    assert got.dtype == np.float32 and got[1, 5] == got[1, 0]  # p5, outside a's top 3, sits at the floor (p0's z)
    np.testing.assert_array_equal(got[2], 0.0)  # one candidate: no order (as `normalise` says), so all 0
    cols = np.array([5, 1, 3])  # only some passages (a mined candidate set), in that order
    np.testing.assert_array_equal(prior.expand(np.array([2, 0, 1]), len(pids), columns=cols), got[:, cols])


def test_info_nce_adds_the_prior_to_the_logits():
    q = F.normalize(torch.tensor([[1.0, 0.0], [0.6, 0.8]]), dim=-1)
    cand = F.normalize(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]]), dim=-1)
    target = torch.tensor([0, 1])
    prior = torch.tensor([[0.0, 2.0, -1.0], [1.0, 0.0, 0.5]])
    t = 0.1
    by_hand = []
    for i in range(2):
        logits = [(q[i] @ cand[j]).item() / t + prior[i, j].item() for j in range(3)]
        by_hand.append(-logits[target[i]] + np.log(np.sum(np.exp(logits))))
    assert info_nce(q, cand, target, None, t, prior).item() == pytest.approx(np.mean(by_hand), rel=1e-5)
    assert info_nce(q, cand, target, None, t, torch.zeros(2, 3)).item() == pytest.approx(
        info_nce(q, cand, target, None, t).item(), rel=1e-6)


def _toy() -> TrainingData:
    rng = np.random.default_rng(0)
    P = rng.normal(size=(30, 8)).astype(np.float32)
    P /= np.linalg.norm(P, axis=1, keepdims=True)
    gold = rng.integers(0, 30, size=60)
    Q = (P[gold] + 0.9 * rng.normal(size=(60, 8))).astype(np.float32)  # dense gets many of them wrong
    pos = [np.array([g]) for g in gold]
    split = SplitData([f"q{i}" for i in range(60)], Q, pos, pos, pos, {f"q{i}": {f"p{g}": 1} for i, g in enumerate(gold)})
    return TrainingData("toy", 8, "toy", "", [f"p{i}" for i in range(30)], P, split, split)


def _trained(weight: float, prior: LexicalPrior | None, candidates: str = "corpus") -> np.ndarray:
    data = _toy()
    cfg = TrainConfig(candidates=candidates, temperature=0.05, lr=0.01, weight_decay=0.0, lexical_prior=weight,
                      tune_fusion=False)
    torch.manual_seed(0)
    module = initial_module(cfg, data)
    for _ in run_epochs(module, cfg, data, np.random.default_rng(0), 5, batch_bars=False, prior=prior):
        pass
    return module.delta.detach().numpy().copy()  # W = base + delta; delta starts at 0


@pytest.mark.parametrize("candidates", ["corpus", "mined"])
def test_where_bm25_already_ranks_every_positive_first_the_adapter_has_little_to_learn(candidates):
    """The mechanism: a BM25 that puts each training query's positive far ahead saturates the fused softmax, so the
    adapter barely moves from the identity; trained on the dense score alone it moves (dense gets many wrong)."""
    data = _toy()
    rows = np.full((60, 2), -1)
    scores = np.full((60, 2), np.nan)
    for i, pos in enumerate(data.train.positives):  # the positive, and one other passage well below it
        rows[i] = [pos[0], (pos[0] + 1) % 30]
        scores[i] = [30.0, 0.0]
    prior = LexicalPrior.of(LexicalTopN(tuple(data.train.query_ids), rows, scores))
    dense_only = np.abs(_trained(0.0, None, candidates)).sum()
    through = np.abs(_trained(100.0, prior, candidates)).sum()  # 200 logits ahead: exp(-160) is 0 in float32
    assert dense_only > 0.5
    assert through < 0.05 * dense_only


def test_a_prior_weight_needs_the_prior_and_infonce():
    data = _toy()
    cfg = TrainConfig(candidates="corpus", lexical_prior=0.5, tune_fusion=False)
    with pytest.raises(ValueError, match="BM25 prior"):
        next(run_epochs(initial_module(cfg, data), cfg, data, np.random.default_rng(0), 1, batch_bars=False))
    ids = list(data.train.query_ids)
    shuffled = LexicalTopN(tuple(ids[1:] + ids[:1]), np.full((60, 1), -1), np.full((60, 1), np.nan))
    with pytest.raises(ValueError, match="in order"):  # another order of the same queries is refused too
        next(run_epochs(initial_module(cfg, data), cfg, data, np.random.default_rng(0), 1, batch_bars=False,
                        prior=LexicalPrior.of(shuffled)))
    with pytest.raises(InputError, match="infonce"):
        TrainConfig(loss="triplet", lexical_prior=0.5).validate()
    with pytest.raises(InputError, match="lexical-priors"):
        TrainConfig(lexical_priors=(0.0,)).validate()


def test_a_fixed_run_refuses_a_prior_and_the_page_says_how_to_serve_such_an_adapter(small_store):
    """A fixed run cannot judge an adapter trained through the fused score (it keeps epochs by the dense metric), so
    it refuses and names `--select-by fused`. An adapter whose config says it was trained that way gets a warning on
    the page's Retriever (serve it with BM25); a dense-trained one does not."""
    from embedfit.adapters.train import train_adapter
    from embedfit.embed import load_embedder
    from embedfit.search.retriever import Retriever
    from embedfit.store.store import Store

    store = Store(small_store[0].store)
    cfg = TrainConfig(model="all-MiniLM-L6-v2", candidates="corpus", epochs=1, tune_fusion=False,
                      keep_identity_candidate=False)  # keep a trained epoch, whatever dev says
    with pytest.raises(InputError, match="--select-by fused"):
        train_adapter(store, dataclasses.replace(cfg, lexical_prior=0.5))
    dense = train_adapter(store, cfg).adapter
    embedder = load_embedder("all-MiniLM-L6-v2")
    assert not any("BM25-fused" in w for w in Retriever(store, "all-MiniLM-L6-v2", dense, embedder=embedder).warnings)
    through = copy.deepcopy(dense)
    through.config.training["lexical_prior"] = 0.5  # what selection records for a point trained through BM25
    page = Retriever(store, "all-MiniLM-L6-v2", through, embedder=embedder)
    assert any("trained through the BM25-fused score" in w and "serve it with BM25" in w for w in page.warnings)
    assert "trained through the BM25-fused score, BM25 weight 0.5" in through.describe()


def test_when_the_dense_ranking_decides_an_adapter_trained_through_bm25_is_not_chosen():
    """It is meant to be served with BM25: when fusion does not pay, it is shown in the table (marked) but not
    chosen, even with the best dense mean."""
    from embedfit.adapters.select import Point, Selection, table_markdown

    sel = Selection(metric="MRR@10", folds=1, decided_by=10, unseen_tolerance=None)
    plain, through = Point("query", "corpus", 0.05, 3), Point("query", "corpus", 0.05, 3, prior=0.5)
    for p, v in ((Point("identity"), 0.50), (plain, 0.55), (through, 0.60)):
        sel.scores[p] = [{"MRR@10": v, "unseen:MRR@10": float("nan")}]
    sel.decide_served()
    assert sel.served == "dense" and sel.best() == plain
    assert sel.best(every_family=True) == through
    assert "through BM25 0.5 | 0.05 | 3 |  | 0.6000" in table_markdown(sel, sel.best())
    assert "*not a candidate: fusion did not pay*" in table_markdown(sel, sel.best())
