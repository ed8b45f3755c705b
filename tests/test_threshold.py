"""Threshold search against a brute-force sweep over every candidate threshold."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedfit.evaluation.threshold import best_threshold, threshold_accuracy


def brute_force(pos, neg):
    """Accuracy at every candidate cut (each distinct score, and +inf), by direct counting.

    Returns (best accuracy, the highest cut reaching it). Every threshold classifies exactly like
    one of these candidates, so their maximum is the maximum over all thresholds.
    """
    pos, neg = np.asarray(pos, float), np.asarray(neg, float)
    cands = np.append(np.unique(np.concatenate([pos, neg])), np.inf)
    acc = np.array([((pos >= t).sum() + (neg < t).sum()) / (pos.size + neg.size) for t in cands])
    best = acc.max()
    return best, cands[np.flatnonzero(acc == best)[-1]]


def predictions(scores, t):
    return np.asarray(scores, float) >= t


def check(pos, neg):
    t = best_threshold(pos, neg)
    best, cut = brute_force(pos, neg)
    acc, se = threshold_accuracy(pos, neg, t)
    assert acc == best
    assert se == pytest.approx(math.sqrt(acc * (1 - acc) / (len(pos) + len(neg))))
    # the chosen threshold classifies every score exactly like the highest best cut
    both = np.concatenate([np.asarray(pos, float), np.asarray(neg, float)])
    assert np.array_equal(predictions(both, t), predictions(both, cut))
    return t


# --- hand-worked toys ------------------------------------------------------------------------

def test_toy_by_hand():
    # sorted scores 0.1(n) 0.4(p) 0.5(n) 0.8(p) 0.9(p). Correct counts per cut:
    # t<=0.1: 3; (0.1,0.4]: 4; (0.4,0.5]: 3; (0.5,0.8]: 4; (0.8,0.9]: 3; >0.9: 2.
    # Best 4/5, reached twice; the higher cut wins -> midpoint of 0.5 and 0.8.
    pos, neg = [0.9, 0.8, 0.4], [0.5, 0.1]
    t = check(pos, neg)
    assert t == pytest.approx(0.65)
    acc, se = threshold_accuracy(pos, neg, t)
    assert acc == pytest.approx(0.8) and se == pytest.approx(math.sqrt(0.8 * 0.2 / 5))


def test_perfect_separation_sits_in_the_middle_of_the_gap():
    t = check([0.8, 0.9], [0.1, 0.2])
    assert t == pytest.approx(0.5)
    assert threshold_accuracy([0.8, 0.9], [0.1, 0.2], t) == (1.0, 0.0)


def test_score_equal_to_threshold_is_a_match():
    # pos counted right, neg wrong: acc 1/2, SE sqrt(0.5 * 0.5 / 2)
    assert threshold_accuracy([0.5], [0.5], 0.5) == pytest.approx((0.5, math.sqrt(0.125)))
    assert threshold_accuracy([0.5], [0.4], 0.5)[0] == 1.0


def test_all_scores_equal_more_positives():
    # one cut says "all match" (2 of 3 right), the other "none" (1 of 3): t = the score itself
    assert check([0.5, 0.5], [0.5]) == 0.5


def test_all_scores_equal_more_negatives():
    # "none match" wins: t is the next float above the score
    t = check([0.3], [0.3, 0.3])
    assert t == np.nextafter(0.3, 1.0)
    assert threshold_accuracy([0.3], [0.3, 0.3], t)[0] == pytest.approx(2 / 3)


def test_inverted_scores():
    # negatives all above positives: best is to call nothing a match when negatives are the majority
    check([0.1, 0.2], [0.8, 0.9, 0.95])
    check([0.1, 0.2, 0.3], [0.8, 0.9])


def test_adjacent_floats():
    # no float lies strictly between the two scores: the threshold must be the upper one
    hi = np.nextafter(0.5, 1.0)
    t = check([hi], [0.5])
    assert t == hi and threshold_accuracy([hi], [0.5], t)[0] == 1.0


def test_extreme_magnitudes_do_not_overflow():
    check([1e308], [-1e308])
    check([5e-324], [0.0])


@pytest.mark.parametrize("pos,neg", [([], [0.1]), ([0.1], []), ([], []), ([float("nan")], [0.1]),
                                     ([0.1], [float("inf")]), ([[0.1]], [0.2])])
def test_bad_input_raises(pos, neg):
    with pytest.raises(ValueError):
        best_threshold(pos, neg)
    with pytest.raises(ValueError):
        threshold_accuracy(pos, neg, 0.0)


def test_nan_threshold_raises():
    with pytest.raises(ValueError):
        threshold_accuracy([0.1], [0.2], float("nan"))


# --- random and property tests ---------------------------------------------------------------

@pytest.mark.parametrize("seed", range(20))
def test_random_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_pos, n_neg = rng.integers(1, 200, size=2)
    pos = rng.normal(0.6, 0.15, n_pos)
    neg = rng.normal(0.4, 0.15, n_neg)
    if seed % 2:  # coarse scores: many ties within and across classes
        pos, neg = np.round(pos, 1), np.round(neg, 1)
    check(pos, neg)


def test_large_input_is_fast():
    # 10^6 scores: a sort, not a sweep (a quadratic sweep would take hours)
    rng = np.random.default_rng(0)
    t = best_threshold(rng.normal(0.6, 0.1, 500_000), rng.normal(0.4, 0.1, 500_000))
    assert 0.45 < t < 0.55


cosine = st.floats(-1.0, 1.0, allow_nan=False)
coarse = st.sampled_from([-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0])
wide = st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(cosine, min_size=1, max_size=30), st.lists(cosine, min_size=1, max_size=30))
def test_property_cosine_scores(pos, neg):
    check(pos, neg)


@settings(max_examples=300, deadline=None)
@given(st.lists(coarse, min_size=1, max_size=30), st.lists(coarse, min_size=1, max_size=30))
def test_property_heavy_ties(pos, neg):
    check(pos, neg)


@settings(max_examples=200, deadline=None)
@given(st.lists(wide, min_size=1, max_size=20), st.lists(wide, min_size=1, max_size=20))
def test_property_any_magnitude(pos, neg):
    check(pos, neg)


@settings(max_examples=200, deadline=None)
@given(st.lists(cosine, min_size=1, max_size=30), st.lists(cosine, min_size=1, max_size=30), cosine)
def test_property_accuracy_and_se_bounds(pos, neg, t):
    acc, se = threshold_accuracy(pos, neg, t)
    n = len(pos) + len(neg)
    assert 0.0 <= acc <= 1.0 and 0.0 <= se <= 0.5 / math.sqrt(n) + 1e-15
    assert acc <= threshold_accuracy(pos, neg, best_threshold(pos, neg))[0]


def test_heldout_threshold_accuracy_by_hand():
    """Held-out queries get their own pairs, mined now by ingest's rule; the threshold comes from the store's dev.

    Passages p1 (1, 0), p2 (0, 1), p3 (0.6, 0.8), p4 (0.8, -0.6). Dev: d1 (0.8, 0.6) answers p3 (cosine 0.96), its
    hard negative p1 (0.8): the threshold is the midpoint, 0.88. Held-out: h1 (0.6, 0.8) answers p1 (0.6); p3
    (1.0) and p2 (0.8) score above 0.95 x 0.6 and are refused as hard negatives by the margin rule, so its hard
    negative is p4 (0.0). h2 (0, 1) answers p2 (1.0); its hard negative is p3 (0.8). At 0.88: (h1, p1) is missed,
    the other three pairs are right: accuracy 3/4, SE sqrt(0.75 x 0.25 / 4)."""
    from embedfit.embed.base import l2_normalise
    from embedfit.evaluation.evaluate import PairSource, heldout_pairs, threshold_accuracies
    from embedfit.evaluation.results import SystemRun
    from embedfit.pipeline.negatives import MiningConfig
    from embedfit.types import TrainingExample

    pids = ["p1", "p2", "p3", "p4"]
    P = np.array([[1, 0], [0, 1], [0.6, 0.8], [0.8, -0.6]], dtype=np.float32)
    texts = {"p1": "alpha beta", "p2": "gamma delta", "p3": "epsilon zeta", "p4": "eta theta"}
    dev = PairSource([TrainingExample("d1", "dev", ("p3",), weak_ids=("p2",), hard_ids=("p1",))], "dev", ["d1"],
                     np.array([[0.8, 0.6]], dtype=np.float32))
    held = heldout_pairs(["h1", "h2"], np.array([[0.6, 0.8], [0, 1]], dtype=np.float32), pids, P, texts,
                         {"h1": {"p1": 1}, "h2": {"p2": 1}}, MiningConfig(k_hard=1, k_weak=1))
    assert [(e.query_id, e.hard_ids) for e in held.examples] == [("h1", ("p4",)), ("h2", ("p3",))]
    raw = SystemRun(key="raw", label="raw", results={}, project_queries=l2_normalise, passages=P)
    run = threshold_accuracies([raw], pids, dev, held)
    hard = run.by_system["raw"]["hard"]
    assert hard["threshold"] == pytest.approx(0.88)
    assert hard["accuracy"] == 0.75 and hard["se"] == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    assert run.pair_counts["hard"] == {"dev_pos": 1, "dev_neg": 1, "test_pos": 2, "test_neg": 2}
    assert run.pair_counts["weak"]["test_pos"] == 2 and run.pair_counts["weak"]["test_neg"] == 2
