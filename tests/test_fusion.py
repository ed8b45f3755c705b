"""embedfit.retrieval.fusion against hand-worked toys and a brute-force sweep written independently here."""
from __future__ import annotations

import math
import random
import statistics

import pytest

from embedfit.retrieval.fusion import (
    RRF_DEFAULT,
    FusionChoice,
    FusionSpec,
    choose_fusion,
    fuse,
    fuse_results,
    normalise,
)


def test_zscore_and_minmax_by_hand():
    s = {"a": 3.0, "b": 1.0, "c": 2.0}
    # mean 2, population std sqrt(2/3)
    sd = math.sqrt(2 / 3)
    assert normalise(s, "zscore") == pytest.approx({"a": 1 / sd, "b": -1 / sd, "c": 0.0})
    assert normalise(s, "minmax") == pytest.approx({"a": 1.0, "b": 0.0, "c": 0.5})
    # all equal: no order, everyone 0
    assert normalise({"a": 2.0, "b": 2.0}, "zscore") == {"a": 0.0, "b": 0.0}
    assert normalise({"a": 2.0}, "minmax") == {"a": 0.0}
    assert normalise({}, "zscore") == {}


def test_minmax_fusion_worked_by_hand_with_a_passage_on_one_side_only():
    dense = {"a": 0.9, "b": 0.7, "c": 0.5}          # minmax: a 1, b 0.5, c 0
    lexical = {"c": 12.0, "d": 8.0, "b": 4.0}       # minmax: c 1, d 0.5, b 0
    # a is missing from the lexical side -> the lexical floor 0; d missing from dense -> the dense floor 0
    got = fuse(dense, lexical, FusionSpec("minmax", weight=0.4))
    want = {"a": 0.6 * 1.0 + 0.4 * 0.0, "b": 0.6 * 0.5 + 0.4 * 0.0, "c": 0.6 * 0.0 + 0.4 * 1.0, "d": 0.6 * 0 + 0.4 * 0.5}
    assert got == pytest.approx(want)
    assert list(got) == ["a", "c", "b", "d"]  # 0.6, 0.4, 0.3, 0.2


def test_ties_break_by_id_and_weights_zero_and_one_are_the_sides():
    dense = {"b": 0.5, "a": 0.5, "c": 0.1}
    lexical = {"c": 3.0, "x": 1.0}
    assert list(fuse(dense, lexical, FusionSpec("zscore", weight=0.0)))[:3] == ["a", "b", "c"]
    only_lex = fuse(dense, lexical, FusionSpec("zscore", weight=1.0))
    # a and b are missing from the lexical side: they get its lowest value, x's, and tie with x (id order)
    assert list(only_lex) == ["c", "a", "b", "x"]
    assert only_lex["a"] == only_lex["b"] == only_lex["x"] == pytest.approx(-1.0)


def test_rrf_by_hand():
    dense = {"a": 0.9, "b": 0.8}
    lexical = {"b": 5.0, "c": 1.0}
    got = fuse(dense, lexical, RRF_DEFAULT)
    k = 60
    # a: dense rank 1, lexical missing -> the lexical side's last rank (2); c: dense missing -> dense rank 2
    want = {"a": 0.5 / (k + 1) + 0.5 / (k + 2), "b": 0.5 / (k + 2) + 0.5 / (k + 1), "c": 0.5 / (k + 2) + 0.5 / (k + 2)}
    assert got == pytest.approx(want)
    assert list(got) == ["a", "b", "c"]  # a and b tie: id order


def test_only_top_n_of_each_side_are_candidates_and_an_empty_side_keeps_the_other_order():
    dense = {f"p{i}": 1.0 - i / 100 for i in range(10)}
    lexical = {f"p{i}": float(i) for i in range(10)}
    got = fuse(dense, lexical, FusionSpec("minmax", 0.5, n=3))
    assert set(got) == {"p0", "p1", "p2", "p7", "p8", "p9"}
    assert list(fuse(dense, {}, FusionSpec("zscore", 0.7))) == [f"p{i}" for i in range(10)]
    assert fuse_results({"q": dense}, {}, FusionSpec("zscore", 0.7), k=2) == {"q": {"p0": pytest.approx(0.3 * 1.5666989), "p1": pytest.approx(0.3 * 1.2185436)}}


def test_bad_specs_are_refused():
    for kwargs in ({"method": "sum"}, {"weight": 1.5}, {"n": 0}):
        with pytest.raises(ValueError):
            FusionSpec(**kwargs)
    spec = FusionSpec("minmax", 0.3, n=50)
    assert FusionSpec.from_json(spec.to_json()) == spec


# -- the weight search against a brute-force sweep --------------------------------------------------------

def _naive_fuse(dense, lexical, method, w, n):
    """The rule as the docstring states it, written again without the library's helpers."""
    def top(s):
        return dict(sorted(s.items(), key=lambda kv: (-kv[1], kv[0]))[:n])

    def norm(s):
        if not s:
            return {}
        vals = list(s.values())
        if method == "zscore":
            m, sd = statistics.fmean(vals), statistics.pstdev(vals)
            return {p: ((v - m) / sd if sd > 0 else 0.0) for p, v in s.items()}
        lo, hi = min(vals), max(vals)
        return {p: ((v - lo) / (hi - lo) if hi > lo else 0.0) for p, v in s.items()}

    d, lx = norm(top(dense)), norm(top(lexical))
    fd, fl = (min(d.values()) if d else 0.0), (min(lx.values()) if lx else 0.0)
    return {p: (1 - w) * d.get(p, fd) + w * lx.get(p, fl) for p in set(d) | set(lx)}


def _naive_mrr10(qrels, results):
    total = 0.0
    for q, rel in qrels.items():
        ranking = sorted(results.get(q, {}).items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        total += next((1 / (i + 1) for i, (p, _) in enumerate(ranking) if rel.get(p, 0) > 0), 0.0)
    return total / len(qrels)


def _toy_runs(seed: int, n_queries: int = 40, n_passages: int = 60):
    rng = random.Random(seed)
    dense, lexical, qrels = {}, {}, {}
    for qi in range(n_queries):
        q = f"q{qi}"
        gold = f"p{rng.randrange(n_passages)}"
        qrels[q] = {gold: 1}
        # each side finds the gold passage some of the time, the two sides independently
        dense[q] = {f"p{j}": rng.gauss(0.5, 0.1) + (0.15 if f"p{j}" == gold and rng.random() < 0.6 else 0)
                    for j in rng.sample(range(n_passages), 30)}
        lexical[q] = {f"p{j}": max(0.0, rng.gauss(5, 3)) + (6 if f"p{j}" == gold and rng.random() < 0.6 else 0)
                      for j in rng.sample(range(n_passages), 20)}
    return dense, lexical, qrels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_weight_search_equals_a_brute_force_sweep(seed):
    dense, lexical, qrels = _toy_runs(seed)
    choice = choose_fusion(dense, lexical, qrels, n=25)
    sweep = []
    for method in ("zscore", "minmax"):
        for w in [i / 10 for i in range(11)]:
            fused = {q: _naive_fuse(dense[q], lexical.get(q, {}), method, w, 25) for q in dense}
            sweep.append((method, w, _naive_mrr10(qrels, fused)))
    assert [(g["method"], g["weight"]) for g in choice.grid] == [(m, w) for m, w, _ in sweep]
    assert [g["MRR@10"] for g in choice.grid] == pytest.approx([v for _, _, v in sweep])
    best = max(v for _, _, v in sweep)
    first_best = next((m, w) for m, w, v in sweep if math.isclose(v, best, abs_tol=1e-12))
    assert (choice.spec.method, choice.spec.weight) == first_best and choice.score == pytest.approx(best)
    assert choice.dense_only == pytest.approx(sweep[0][2]) and choice.split == "dev" and choice.n_queries == 40
    assert FusionChoice.from_json(choice.to_json()) == choice


def test_when_bm25_only_adds_noise_the_search_keeps_the_dense_ranking():
    dense, _, qrels = _toy_runs(3)
    noise = {q: {p: random.Random(q).random() for p in list(s)[:10]} for q, s in dense.items()}
    perfect_dense = {q: {**s, next(iter(qrels[q])): 10.0} for q, s in dense.items()}  # gold always first
    choice = choose_fusion(perfect_dense, noise, qrels, n=25)
    assert choice.spec.weight == 0.0 and choice.score == 1.0 == choice.dense_only
