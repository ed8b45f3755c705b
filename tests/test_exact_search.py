"""Exact cosine top-k search against a brute-force full sort."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from embedfit.metrics.retrieval import retrieval_metrics
from embedfit.retrieval.exact import exact_search


def brute_force(q, p, pids, k):
    """Full cosine matrix in float64, each row fully sorted by (score desc, id asc)."""
    q = np.asarray(q, np.float64)
    p = np.asarray(p, np.float64)
    s = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (p / np.linalg.norm(p, axis=1, keepdims=True)).T
    ids = np.array(pids)
    out = []
    for row in s:
        order = np.lexsort((ids, -row))[:k]
        out.append([(pids[i], row[i]) for i in order])
    return out


def as_lists(results, qids):
    return [list(results[q].items()) for q in qids]


def random_ids(rng, n, prefix):
    return [f"{prefix}{x}" for x in rng.permutation(10 * n)[:n]]  # unsorted, so id order != row order


@pytest.mark.parametrize("k", [1, 5, 53, 100])
@pytest.mark.parametrize("batch", [1, 7, 1024])
def test_matches_full_sort_float64(k, batch):
    rng = np.random.default_rng(k * 31 + batch)
    q, p = rng.normal(size=(37, 8)), rng.normal(size=(53, 8))
    qids, pids = random_ids(rng, 37, "q"), random_ids(rng, 53, "p")
    got = as_lists(exact_search(q, qids, p, pids, k=k, batch=batch), qids)
    want = brute_force(q, p, pids, k)
    for g, w in zip(got, want):
        assert [pid for pid, _ in g] == [pid for pid, _ in w]
        np.testing.assert_allclose([s for _, s in g], [s for _, s in w], rtol=0, atol=1e-12)


@pytest.mark.parametrize("k", [1, 3, 10, 40])
def test_ties_break_by_passage_id(k):
    # entries of +-0.5 in 4 dimensions: unit vectors whose dot products (-1, -0.5, 0, 0.5, 1) are
    # exact in any summation order, with only 16 distinct vectors -> many exact ties, even at the k-th place
    rng = np.random.default_rng(k)
    q = rng.choice([-0.5, 0.5], size=(25, 4))
    p = rng.choice([-0.5, 0.5], size=(40, 4))
    qids, pids = random_ids(rng, 25, "q"), random_ids(rng, 40, "p")
    for dtype in (np.float32, np.float64):
        got = as_lists(exact_search(q.astype(dtype), qids, p.astype(dtype), pids, k=k, batch=4), qids)
        assert got == [[(pid, float(s)) for pid, s in w] for w in brute_force(q, p, pids, k)]


def test_float32_agrees_with_float64_oracle():
    rng = np.random.default_rng(3)
    q, p = rng.normal(size=(20, 16)).astype(np.float32), rng.normal(size=(200, 16)).astype(np.float32)
    qids, pids = random_ids(rng, 20, "q"), random_ids(rng, 200, "p")
    results = exact_search(q, qids, p, pids, k=10)
    for qid, want in zip(qids, brute_force(q, p, pids, 10)):
        assert list(results[qid]) == [pid for pid, _ in want]
        np.testing.assert_allclose(list(results[qid].values()), [s for _, s in want], atol=1e-6)


def test_raw_and_normalised_vectors_give_the_same_results():
    rng = np.random.default_rng(4)
    q, p = rng.normal(size=(5, 6)) * 7, rng.normal(size=(30, 6)) * 0.01
    qids, pids = random_ids(rng, 5, "q"), random_ids(rng, 30, "p")
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    a = exact_search(q, qids, p, pids, k=5)
    b = exact_search(unit(q), qids, unit(p), pids, k=5)
    assert {qid: list(r) for qid, r in a.items()} == {qid: list(r) for qid, r in b.items()}


def test_query_equal_to_its_passage_is_found_first():
    rng = np.random.default_rng(5)
    p = rng.normal(size=(100, 12))
    pids = [f"p{i}" for i in range(100)]
    results = exact_search(p[:30], [f"q{i}" for i in range(30)], p, pids, k=10)
    qrels = {f"q{i}": {f"p{i}": 1} for i in range(30)}
    assert retrieval_metrics(qrels, results, k_values=(1,))["Recall@1"] == 1.0
    assert all(r[f"p{i}"] == pytest.approx(1.0) for i, r in enumerate(results.values()))


def test_no_queries_and_no_passages():
    assert exact_search(np.zeros((0, 3)), [], np.eye(3), ["a", "b", "c"]) == {}
    assert exact_search(np.eye(2), ["q1", "q2"], np.zeros((0, 2)), []) == {"q1": {}, "q2": {}}


@pytest.mark.parametrize("kwargs", [
    dict(query_vectors=np.zeros((1, 3))),                                 # zero vector
    dict(passage_vectors=np.full((3, 3), np.nan)),                        # NaN
    dict(passage_ids=["a", "b"]),                                         # ids do not match rows
    dict(passage_ids=["a", "a", "b"]),                                    # duplicate passage ids
    dict(query_ids=["q", "q"], query_vectors=np.eye(3)[:2]),              # duplicate query ids
    dict(passage_vectors=np.eye(4)[:3]),                                  # dimensions differ
    dict(query_vectors=np.ones(3)),                                       # not 2-D
    dict(k=0), dict(batch=0),
])
def test_bad_input_raises(kwargs):
    args = dict(query_vectors=np.eye(3)[:1], query_ids=["q"], passage_vectors=np.eye(3),
                passage_ids=["a", "b", "c"], k=2, batch=8) | kwargs
    with pytest.raises(ValueError):
        exact_search(**args)


def _exact_vectors(n: int):
    """n rows of +-0.5 in 4 dims, each scaled by a power of two: norms are powers of two, so
    normalising is exact and every cosine (-1, -0.5, 0, 0.5, 1) is exact; ties are everywhere."""
    signs = arrays(np.float64, (n, 4), elements=st.sampled_from([-0.5, 0.5]))
    scales = arrays(np.float64, (n, 1), elements=st.sampled_from([0.125, 0.5, 1.0, 4.0, 64.0]))
    return st.tuples(signs, scales).map(lambda t: t[0] * t[1])


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 12), st.integers(1, 30), st.integers(1, 40), st.integers(1, 9), st.data())
def test_property_matches_full_sort_with_ties(n_q, n_p, k, batch, data):
    q, p = data.draw(_exact_vectors(n_q)), data.draw(_exact_vectors(n_p))
    pids = data.draw(st.lists(st.text("abcé", min_size=1, max_size=4), min_size=n_p, max_size=n_p, unique=True))
    qids = [f"q{i}" for i in range(n_q)]
    results = exact_search(q, qids, p, pids, k=k, batch=batch)
    assert list(results) == qids
    for qid, want in zip(qids, brute_force(q, p, pids, k)):
        assert list(results[qid].items()) == [(pid, float(s)) for pid, s in want]
