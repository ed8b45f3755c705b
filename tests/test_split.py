"""The train/dev/test split: no positive passage and no duplicated question crosses splits."""
from __future__ import annotations

from collections import Counter

from ingest.load_beir import load_beir
from ingest.split import query_components, split_queries


def test_toy_components_keep_shared_positives_and_duplicate_questions_together():
    queries = {"a": "Who is X?", "b": "who is x", "c": "what is y", "d": "where is z", "e": "when w"}
    qrels = {"a": {"p1": 1}, "b": {"p2": 1}, "c": {"p2": 1}, "d": {"p3": 1}, "e": {"p4": 1}}
    comps = query_components(queries, qrels)
    # a~b by question text, b~c by passage p2
    assert sorted(map(tuple, comps)) == [("a", "b", "c"), ("d",), ("e",)]


def test_split_on_real_data_has_no_leakage_and_target_sizes(nq_dir):
    ds = load_beir(nq_dir)
    splits = split_queries(ds.queries, ds.qrels, (0.8, 0.1, 0.1), seed=13)
    assert set(splits) == set(ds.queries)
    owner: dict[str, str] = {}
    for qid, rels in ds.qrels.items():
        for pid in rels:
            assert owner.setdefault(pid, splits[qid]) == splits[qid], f"{pid} is positive in two splits"
    counts = Counter(splits.values())
    n = len(splits)
    for name, frac in (("train", 0.8), ("dev", 0.1), ("test", 0.1)):
        assert abs(counts[name] / n - frac) < 0.01, counts
    assert split_queries(ds.queries, ds.qrels, (0.8, 0.1, 0.1), seed=13) == splits  # seeded
    assert split_queries(ds.queries, ds.qrels, (0.8, 0.1, 0.1), seed=14) != splits
