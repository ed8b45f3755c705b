"""embedfit.metrics.seen: the seen/unseen partition against a hand-made toy."""
from __future__ import annotations

from embedfit.metrics.seen import seen_unseen, trained_passages


def test_partition_by_hand():
    qrels = {"t1": {"a": 1, "b": 1}, "t2": {"c": 1, "x": 0},        # training queries
             "q1": {"a": 1},                 # a was trained on: seen
             "q2": {"a": 1, "d": 1},         # d is new: unseen (every relevant passage must be trained on)
             "q3": {"c": 1, "b": 2},         # both trained on: seen
             "q4": {"x": 1},                 # x was only a zero-judged passage of t2: unseen
             "q5": {"a": 0}}                 # nothing relevant: in neither
    trained = trained_passages(qrels, ["t1", "t2"])
    assert trained == {"a", "b", "c"}
    assert seen_unseen(qrels, ["q1", "q2", "q3", "q4", "q5"], trained) == {"seen": ["q1", "q3"], "unseen": ["q2", "q4"]}
    assert seen_unseen(qrels, ["q2", "q1"], set()) == {"seen": [], "unseen": ["q2", "q1"]}
