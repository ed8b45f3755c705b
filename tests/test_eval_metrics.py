"""Retrieval metrics against hand-worked toys, sklearn's nDCG and numpy brute force."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from embedfit.metrics.retrieval import per_query_metrics, recall_at_k_curve, retrieval_metrics

KEYS = ["Recall@1", "Recall@5", "Recall@10", "Recall@100", "MRR@10", "nDCG@10"]


def ranked(*pids: str) -> dict[str, float]:
    """Results for one query with `pids` in that order (strictly decreasing scores)."""
    return {pid: float(len(pids) - i) for i, pid in enumerate(pids)}


# --- hand-built toys -------------------------------------------------------------------------

def test_keys_are_exactly_the_beir_style_names():
    m = retrieval_metrics({"q": {"a": 1}}, {"q": ranked("a")})
    assert list(m) == KEYS


def test_one_relevant_at_rank_3():
    # ranking x y a z w; a relevant: RR = 1/3; R@1 = 0; R@5 = 1; nDCG@10 = (1/log2(3+1)) / (1/log2(2)) = 0.5
    m = retrieval_metrics({"q": {"a": 1}}, {"q": ranked("x", "y", "a", "z", "w")})
    assert m == pytest.approx({"Recall@1": 0.0, "Recall@5": 1.0, "Recall@10": 1.0, "Recall@100": 1.0,
                               "MRR@10": 1 / 3, "nDCG@10": 0.5})


def test_two_relevant_one_found_at_rank_2():
    # a at rank 2, b never retrieved: R@1 = 0, R@5 = 1/2, RR = 1/2;
    # DCG = 1/log2(3); ideal DCG = 1/log2(2) + 1/log2(3) = 1 + 1/log2(3)
    m = retrieval_metrics({"q": {"a": 1, "b": 1}}, {"q": ranked("x", "a", "y", "z")})
    g = 1 / math.log2(3)
    assert m == pytest.approx({"Recall@1": 0.0, "Recall@5": 0.5, "Recall@10": 0.5, "Recall@100": 0.5,
                               "MRR@10": 0.5, "nDCG@10": g / (1 + g)})


def test_mrr_is_cut_at_10():
    # relevant at rank 11: trec's uncut recip_rank would be 1/11; MRR@10 is 0, Recall@100 is 1
    pids = [f"n{i:02d}" for i in range(10)] + ["a"]
    m = retrieval_metrics({"q": {"a": 1}}, {"q": ranked(*pids)})
    assert m["MRR@10"] == 0.0 and m["Recall@10"] == 0.0 and m["nDCG@10"] == 0.0
    assert m["Recall@100"] == 1.0


def test_relevant_at_rank_10_still_counts():
    pids = [f"n{i:02d}" for i in range(9)] + ["a"]
    m = retrieval_metrics({"q": {"a": 1}}, {"q": ranked(*pids)})
    assert m["MRR@10"] == pytest.approx(0.1) and m["Recall@10"] == 1.0 and m["Recall@5"] == 0.0


def test_query_missing_from_results_counts_as_zero():
    # q1 perfect (all 1), q2 absent from results (all 0): every mean is 1/2.
    # pytrec_eval alone would skip q2 and report 1.
    m = retrieval_metrics({"q1": {"a": 1}, "q2": {"b": 1}}, {"q1": ranked("a")})
    assert m == pytest.approx({k: 0.5 for k in KEYS})
    per_query = per_query_metrics({"q1": {"a": 1}, "q2": {"b": 1}}, {"q1": ranked("a")})
    assert all(per_query[k] == {"q1": 1.0, "q2": 0.0} for k in KEYS)


def test_query_with_empty_results_counts_as_zero():
    m = retrieval_metrics({"q1": {"a": 1}, "q2": {"b": 1}}, {"q1": ranked("a"), "q2": {}})
    assert m == pytest.approx({k: 0.5 for k in KEYS})


def test_queries_only_in_results_are_ignored():
    m = retrieval_metrics({"q1": {"a": 1}}, {"q1": ranked("a"), "extra": ranked("z")})
    assert m == pytest.approx({k: 1.0 for k in KEYS})


def test_query_without_relevant_passage_is_left_out(caplog):
    # q0 has only a relevance-0 judgement: no system can answer it, so it is not averaged
    m = retrieval_metrics({"q0": {"x": 0}, "q1": {"a": 1}}, {"q0": ranked("x"), "q1": ranked("a")})
    assert m == pytest.approx({k: 1.0 for k in KEYS})
    assert "no relevant passage" in caplog.text
    with pytest.raises(ValueError):
        retrieval_metrics({"q0": {"x": 0}}, {"q0": ranked("x")})


def test_score_ties_go_to_the_smaller_passage_id():
    # "a" (relevant) and "b" tie: our rule ranks a first -> RR 1. trec_eval's own rule
    # (id descending) would rank b first and give 1/2.
    m = retrieval_metrics({"q": {"a": 1}}, {"q": {"b": 0.5, "a": 0.5, "c": 0.1}})
    assert m["MRR@10"] == 1.0 and m["Recall@1"] == 1.0
    m = retrieval_metrics({"q": {"b": 1}}, {"q": {"b": 0.5, "a": 0.5, "c": 0.1}})
    assert m["MRR@10"] == 0.5 and m["Recall@1"] == 0.0


def test_mrr_cut_respects_the_tie_rule():
    # 11 passages tie; the relevant "z" has the largest id, so it is 11th: outside the top 10
    scores = {f"a{i:02d}": 1.0 for i in range(10)} | {"z": 1.0}
    assert retrieval_metrics({"q": {"z": 1}}, {"q": scores})["MRR@10"] == 0.0
    assert retrieval_metrics({"q": {"a00": 1}}, {"q": scores})["MRR@10"] == 1.0


def test_custom_k_values_and_validation():
    m = retrieval_metrics({"q": {"a": 1}}, {"q": ranked("x", "a")}, k_values=(2, 1))
    assert list(m) == ["Recall@1", "Recall@2", "MRR@10", "nDCG@10"]
    assert m["Recall@1"] == 0.0 and m["Recall@2"] == 1.0
    for bad in [(), (0,), (-1,), (1.5,)]:
        with pytest.raises(ValueError):
            retrieval_metrics({"q": {"a": 1}}, {"q": ranked("a")}, k_values=bad)


def test_non_finite_scores_are_refused():
    with pytest.raises(ValueError):
        retrieval_metrics({"q": {"a": 1}}, {"q": {"a": float("nan")}})


def test_recall_curve_toy():
    # relevant {a, b}: a at rank 1, b at rank 4 -> R@1 1/2, R@3 1/2, R@4 1, R@50 1
    curve = recall_at_k_curve({"q": {"a": 1, "b": 1}}, {"q": ranked("a", "x", "y", "b")}, [1, 3, 4, 50])
    assert curve == pytest.approx({1: 0.5, 3: 0.5, 4: 1.0, 50: 1.0})


# --- random cases against independent oracles ------------------------------------------------

def _random_case(rng: np.random.Generator, n_queries: int = 40, n_docs: int = 60, tied: bool = False):
    """Random qrels (1-4 relevant per query) and results (a random subset of docs, maybe with ties)."""
    docs = [f"d{i:03d}" for i in rng.permutation(n_docs)]
    qrels, results = {}, {}
    for q in range(n_queries):
        qid = f"q{q}"
        rel = rng.choice(n_docs, size=rng.integers(1, 5), replace=False)
        qrels[qid] = {docs[i]: 1 for i in rel}
        if q % 10 == 9:
            continue  # some queries get no results at all
        shown = rng.choice(n_docs, size=rng.integers(0, n_docs), replace=False)
        scores = rng.random(shown.size)
        if tied:
            scores = np.round(scores, 1)  # many exact ties
        results[qid] = {docs[i]: float(s) for i, s in zip(shown, scores)}
    return qrels, results


def _oracle(qrels, results, ks):
    """numpy brute force: rank by (score desc, id asc), then count."""
    out = {f"Recall@{k}": [] for k in ks} | {"MRR@10": [], "nDCG@10": []}
    for qid, rels in qrels.items():
        res = results.get(qid, {})
        ids = np.array(list(res), dtype=object)
        sc = np.array([res[i] for i in ids], dtype=float)
        order = ids[np.lexsort((ids.astype(str), -sc))] if ids.size else ids
        hit = np.array([pid in rels for pid in order], dtype=bool)
        for k in ks:
            out[f"Recall@{k}"].append(hit[:k].sum() / len(rels))
        first = np.flatnonzero(hit[:10])
        out["MRR@10"].append(1.0 / (first[0] + 1) if first.size else 0.0)
        disc = 1.0 / np.log2(np.arange(2, 12))
        dcg = (hit[:10] * disc[: hit[:10].size]).sum()
        out["nDCG@10"].append(dcg / disc[: min(len(rels), 10)].sum())
    return {name: float(np.mean(v)) for name, v in out.items()}


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_recall_mrr_ndcg_match_numpy_brute_force(seed, tied):
    qrels, results = _random_case(np.random.default_rng(seed), tied=tied)
    ks = (1, 5, 10, 100)
    assert retrieval_metrics(qrels, results, ks) == pytest.approx(_oracle(qrels, results, ks), abs=1e-12)
    curve = recall_at_k_curve(qrels, results, [1, 2, 3, 7, 30, 1000])
    expected = _oracle(qrels, results, (1, 2, 3, 7, 30, 1000))
    assert curve == pytest.approx({k: expected[f"Recall@{k}"] for k in curve}, abs=1e-12)


@pytest.mark.parametrize("graded", [False, True])
@pytest.mark.parametrize("seed", range(5))
def test_ndcg_at_10_matches_sklearn(seed, graded):
    # sklearn's ndcg_score sees the whole score vector; it equals trec's ndcg_cut.10 when every doc
    # (so every relevant doc) is scored and there are no ties (sklearn averages over tied orders).
    rng = np.random.default_rng(100 + seed)
    n_queries, n_docs = 30, 25
    y_true = rng.integers(0, 4 if graded else 2, size=(n_queries, n_docs))
    y_true[:, 0] = np.maximum(y_true[:, 0], 1)  # at least one relevant per query
    y_score = rng.random((n_queries, n_docs))
    qrels = {f"q{i}": {f"d{j}": int(y_true[i, j]) for j in range(n_docs) if y_true[i, j] > 0}
             for i in range(n_queries)}
    results = {f"q{i}": {f"d{j}": float(y_score[i, j]) for j in range(n_docs)} for i in range(n_queries)}
    per_query = per_query_metrics(qrels, results)["nDCG@10"]
    for i in range(n_queries):
        assert per_query[f"q{i}"] == pytest.approx(ndcg_score(y_true[i:i + 1], y_score[i:i + 1], k=10), abs=1e-9)
    assert retrieval_metrics(qrels, results)["nDCG@10"] == pytest.approx(ndcg_score(y_true, y_score, k=10), abs=1e-9)


def test_per_query_means_are_the_summary():
    qrels, results = _random_case(np.random.default_rng(7))
    per_query = per_query_metrics(qrels, results)
    summary = retrieval_metrics(qrels, results)
    assert set(per_query) == set(summary)
    for name, vals in per_query.items():
        assert set(vals) == set(qrels)
        assert np.mean(list(vals.values())) == pytest.approx(summary[name])


def test_binary_metrics_agree_with_trec_eval():
    """The selection loop's fast path against trec_eval (`per_query_metrics`) on random scores, with ties, relevant
    passages missing from the corpus, several positives and an unjudged query."""
    import numpy as np

    from embedfit.metrics.retrieval import binary_metrics

    rng = np.random.default_rng(7)
    pids = [f"d{i:03d}" for i in rng.permutation(300)]
    qids = [f"q{i}" for i in range(40)]
    scores = rng.standard_normal((40, 300)).round(2)  # rounding makes exact ties
    qrels = {q: {pids[j]: 1 for j in rng.choice(300, size=rng.integers(1, 4), replace=False)} for q in qids[:-1]}
    qrels["q0"]["not-in-corpus"] = 1
    results = {q: {pids[j]: float(scores[i, j]) for j in range(300)} for i, q in enumerate(qids)}
    want = per_query_metrics(qrels, results, (1, 5, 10, 100))
    got = binary_metrics(scores, qids, pids, qrels, (1, 5, 10, 100))
    assert set(got) == set(want)
    for m in want:
        assert set(got[m]) == set(want[m]) == set(qids[:-1])
        for q in want[m]:
            assert got[m][q] == pytest.approx(want[m][q], abs=1e-9), (m, q)
    with pytest.raises(ValueError, match="binary"):
        binary_metrics(scores, qids, pids, {"q1": {pids[0]: 2}})
