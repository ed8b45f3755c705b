"""Negative mining on toys whose answers can be worked out by hand."""
from __future__ import annotations

import numpy as np
import pytest

from embedfit.pipeline.negatives import MiningConfig, MiningInput, containment, mine_negatives, word_set


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def toy():
    # query q points along e0. Passage scores (cosine with q) are set by construction:
    #   pos 1.00 | dup 0.99 (same words as pos) | close 0.97 (above 0.95 * 1.0: likely false negative)
    #   h1 0.90 | h2 0.80 | h3 0.70 | far -1.0
    ids = ["pos", "dup", "close", "h1", "h2", "h3", "far"]
    scores = [1.0, 0.99, 0.97, 0.90, 0.80, 0.70, -1.0]
    vecs = np.stack([unit(s, np.sqrt(max(0.0, 1 - s * s)), 0) if s > -1 else unit(-1, 0, 0) for s in scores])
    texts = {
        "pos": "the eiffel tower is in paris france",
        "dup": "The Eiffel Tower is in Paris, France.",
        "close": "gustave eiffel built a tower for the 1889 fair",
        "h1": "london has a big clock", "h2": "rome has a colosseum", "h3": "berlin has a wall",
        "far": "photosynthesis in plants",
    }
    q = unit(1, 0, 0)[None, :]
    return ids, vecs, texts, q


def test_hard_negative_rules_remove_positive_duplicate_and_margin():
    ids, vecs, texts, q = toy()
    ex, stats = mine_negatives(MiningInput(["q"], q, ids, vecs, texts, {"q": {"pos": 1}}, {"q": "train"}),
                               cfg=MiningConfig(k_hard=2, k_weak=3, margin=0.95, near_dup=0.8))
    assert ex[0].hard_ids == ("h1", "h2")  # next best after the three rejected ones
    assert stats["removed_positive"] == 1
    assert stats["removed_near_duplicate"] == 1
    assert stats["removed_above_margin"] == 1
    assert ex[0].positive_ids == ("pos",)
    assert len(ex[0].weak_ids) == 3 and "pos" not in ex[0].weak_ids and len(set(ex[0].weak_ids)) == 3


def test_margin_one_keeps_close_candidate_and_fewer_when_depth_small():
    ids, vecs, texts, q = toy()
    ex, _ = mine_negatives(MiningInput(["q"], q, ids, vecs, texts, {"q": {"pos": 1}}, {"q": "dev"}),
                           cfg=MiningConfig(k_hard=2, margin=1.0))
    assert ex[0].hard_ids == ("close", "h1")
    ex, stats = mine_negatives(MiningInput(["q"], q, ids, vecs, texts, {"q": {"pos": 1}}, {"q": "dev"}),
                           cfg=MiningConfig(k_hard=4, depth=3))
    # depth 3 (+1 for the positive) reaches pos, dup, close, h1: only h1 survives
    assert ex[0].hard_ids == ("h1",) and stats["queries_short_of_hard"] == 1


def test_weak_negatives_are_seeded_per_query_not_by_order():
    ids, vecs, texts, q = toy()
    qs = np.concatenate([q, q])
    qrels = {"a": {"pos": 1}, "b": {"pos": 1}}
    ex1, _ = mine_negatives(MiningInput(["a", "b"], qs, ids, vecs, texts, qrels, {"a": "train", "b": "train"}))
    ex2, _ = mine_negatives(MiningInput(["b", "a"], qs, ids, vecs, texts, qrels, {"a": "train", "b": "train"}))
    assert {e.query_id: e.weak_ids for e in ex1} == {e.query_id: e.weak_ids for e in ex2}


def test_same_document_negatives_exclude_positives_and_unknown_ids():
    ids, vecs, texts, q = toy()
    ex, stats = mine_negatives(MiningInput(["q"], q, ids, vecs, texts, {"q": {"pos": 1}}, {"q": "train"},
                                           same_doc={"q": ["h3", "pos", "missing"]}))
    assert ex[0].same_doc_ids == ("h3",) and stats["same_doc_negatives"] == 1


@pytest.mark.parametrize("a,b,expected", [
    ("a b c", "a b c d e", 1.0), ("a b", "c d", 0.0), ("a b c d", "a b x y", 0.5), ("", "a", 0.0)])
def test_containment(a, b, expected):
    assert containment(word_set(a), word_set(b)) == pytest.approx(expected)
