"""The train/dev/test split: grouped (no positive passage and no duplicated question crosses splits) and
random (i.i.d. over questions, duplicates kept together)."""
from __future__ import annotations

from collections import Counter

import pytest

from embedfit.data.load_beir import load_beir
from embedfit.data.split import query_components, split_queries
from embedfit.pipeline.cli import main


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


def test_random_split_ignores_shared_positives_but_keeps_identical_questions():
    """One passage answers all 200 questions: grouped must put them all in one split; random deals them by
    the fractions, as if independent. Identical questions still go together under both."""
    queries = {f"q{i:03d}": f"question number {i}" for i in range(200)}
    queries["dup"] = "Question number 7?"  # the same question as q007 after normalisation
    qrels = {q: {"p": 1} for q in queries}
    grouped = split_queries(queries, qrels, (0.8, 0.1, 0.1), seed=1, by="grouped")
    assert len(set(grouped.values())) == 1
    rnd = split_queries(queries, qrels, (0.8, 0.1, 0.1), seed=1, by="random")
    counts = Counter(rnd.values())
    assert abs(counts["train"] - 160.8) <= 1 and abs(counts["dev"] - 20.1) <= 1 and abs(counts["test"] - 20.1) <= 1
    assert rnd["dup"] == rnd["q007"]
    assert split_queries(queries, qrels, (0.8, 0.1, 0.1), seed=1, by="random") == rnd  # seeded
    assert split_queries(queries, qrels, (0.8, 0.1, 0.1), seed=2, by="random") != rnd


def test_random_split_is_iid_on_real_data(nq_dir):
    """Over 20 seeds, each query lands in dev about 10% of the time whatever its positives: the share of dev
    queries among queries whose positive is shared with another query matches the overall share."""
    ds = load_beir(nq_dir)
    pos_count = Counter(p for rels in ds.qrels.values() for p in rels)
    shared = {q for q, rels in ds.qrels.items() if any(pos_count[p] > 1 for p in rels)}
    assert len(shared) > 100
    dev_all, dev_shared = [], []
    for seed in range(20):
        s = split_queries(ds.queries, ds.qrels, (0.8, 0.1, 0.1), seed=seed, by="random")
        dev_all.append(sum(v == "dev" for v in s.values()) / len(s))
        dev_shared.append(sum(s[q] == "dev" for q in shared) / len(shared))
    assert abs(sum(dev_all) / 20 - 0.1) < 0.005
    assert abs(sum(dev_shared) / 20 - 0.1) < 0.02  # grouped puts whole components in one split; random does not
    grouped = split_queries(ds.queries, ds.qrels, (0.8, 0.1, 0.1), seed=0, by="grouped")
    rnd = split_queries(ds.queries, ds.qrels, (0.8, 0.1, 0.1), seed=0, by="random")
    crossing = lambda sp: sum(len({sp[q] for q in qs}) > 1  # noqa: E731 - positives whose queries sit in 2 splits
                              for qs in _queries_by_positive(ds.qrels).values())
    assert crossing(grouped) == 0 < crossing(rnd)


def _queries_by_positive(qrels):
    out: dict[str, list[str]] = {}
    for q, rels in qrels.items():
        for p in rels:
            out.setdefault(p, []).append(q)
    return out


def test_unknown_policy_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError):
        split_queries({"a": "x"}, {}, by="stratified")
    with pytest.raises(SystemExit):
        main(["--store", str(tmp_path / "s"), "--split-by", "stratified"])
    assert "--split-by" in capsys.readouterr().err
