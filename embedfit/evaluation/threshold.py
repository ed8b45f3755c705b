"""Threshold accuracy: is a (query, passage) pair a match, judged by cosine score >= t?

No library offers this with a stated tie rule, so it is written here. The rule everywhere:
a pair is predicted a match when its score is >= t, so

    accuracy(t) = (#positives >= t + #negatives < t) / (n_pos + n_neg).

Choose t on a dev set with `best_threshold` and report `threshold_accuracy` on test; choosing it on
the scored set is leakage and inflates the number.

How `best_threshold` places t. Accuracy only changes at the scores themselves: with the distinct
scores sorted, u_1 < ... < u_m, every t in (u_{j-1}, u_j] classifies alike (everything >= u_j is a
match). So there are m + 1 candidate cuts: "everything is a match" (t = u_1), the m - 1 gaps
between neighbours, and "nothing is a match". For a gap we return its midpoint (u_{j-1} + u_j) / 2,
the point farthest from both neighbours, so a score that moves a little on unseen data keeps its
side; for "nothing is a match" we return the next float above u_m. Among cuts of equal accuracy we
take the highest, as sentence-transformers' `BinaryClassificationEvaluator` does (it scans from the
top score down), so the two are comparable. Cost: one sort, O(n log n).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _scores(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of scores, got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{name} is empty; threshold accuracy needs positive and negative pairs")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite scores")
    return x


def _between(lo: float, hi: float) -> float:
    """The midpoint of lo < hi, or hi if rounding would put the midpoint outside (lo, hi]."""
    mid = lo / 2 + hi / 2  # halves first: lo + hi could overflow
    return mid if lo < mid <= hi else hi


def best_threshold(pos_scores: Sequence[float] | np.ndarray, neg_scores: Sequence[float] | np.ndarray) -> float:
    """The threshold t maximising accuracy(t) on these scores (placement and ties: module docstring)."""
    pos = np.sort(_scores(pos_scores, "pos_scores"))
    neg = np.sort(_scores(neg_scores, "neg_scores"))
    u = np.unique(np.concatenate([pos, neg]))
    # Cut j < m means t in (u[j-1], u[j]]: positives >= u[j] and negatives < u[j] are right.
    correct = np.empty(u.size + 1, dtype=np.int64)
    correct[:-1] = (pos.size - np.searchsorted(pos, u, side="left")) + np.searchsorted(neg, u, side="left")
    correct[-1] = neg.size  # cut m: t above every score, nothing is a match
    j = int(np.flatnonzero(correct == correct.max())[-1])  # highest cut among the best
    if j == u.size:
        return float(np.nextafter(u[-1], np.inf))
    if j == 0:
        return float(u[0])
    return float(_between(u[j - 1], u[j]))


def threshold_accuracy(
    pos_scores: Sequence[float] | np.ndarray, neg_scores: Sequence[float] | np.ndarray, threshold: float
) -> tuple[float, float]:
    """(accuracy, standard error) at `threshold`; SE = sqrt(acc (1 - acc) / n), the binomial SE."""
    pos = _scores(pos_scores, "pos_scores")
    neg = _scores(neg_scores, "neg_scores")
    if math.isnan(threshold):
        raise ValueError("threshold is NaN")
    n = pos.size + neg.size
    acc = (int(np.count_nonzero(pos >= threshold)) + int(np.count_nonzero(neg < threshold))) / n
    return acc, math.sqrt(acc * (1.0 - acc) / n)
