"""The query memory (passage-side transform) against hand-computed numbers, the adapter that carries it, and the
selection among identity / memory / query adapter / both (never worse than identity on what decided)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from embedfit.adapters.adapter import Adapter, AdapterConfig, PassageMemory
from embedfit.adapters.config import TrainConfig
from embedfit.adapters.data import SplitData, TrainingData
from embedfit.adapters.io import adapter_sha, load_adapter, save_adapter
from embedfit.adapters.memory import apply_memory, query_memory
from embedfit.adapters.modules import LinearAdapter
from embedfit.adapters.select import Point, fold_rows, folds_of, run_selection, select_adapter
from embedfit.embed.base import l2_normalise


def test_query_memory_by_hand():
    # passages 0..3 in 2-d; query a answers passages 0 and 2, query b answers 2, nothing answers 1 or 3
    P = np.array([[1, 0], [0, 1], [0.6, 0.8], [-1, 0]], dtype=np.float32)
    Q = np.array([[0, 1], [1, 0]], dtype=np.float32)  # a = (0, 1), b = (1, 0)
    rows, M = query_memory(Q, [np.array([0, 2, 2]), np.array([2])], n_passages=4)  # a repeated row counts once
    assert rows.tolist() == [0, 2]
    np.testing.assert_allclose(M, [[0, 1], [0.5, 0.5]])
    out = apply_memory(P, rows, M, alpha=1.0)
    # passage 0: (1, 0) + (0, 1) = (1, 1) -> (0.7071, 0.7071); passage 2: (0.6, 0.8) + (0.5, 0.5) = (1.1, 1.3) / 1.7029
    np.testing.assert_allclose(out[0], [0.70710678, 0.70710678], atol=1e-6)
    np.testing.assert_allclose(out[2], [1.1 / 1.70293864, 1.3 / 1.70293864], atol=1e-6)
    assert np.array_equal(out[[1, 3]], P[[1, 3]])  # unanswered passages keep their vectors
    assert np.array_equal(apply_memory(P, rows, M, alpha=0.0), P) and np.array_equal(P[0], [1, 0])  # no move, no mutation


def _memory_adapter(alpha=0.5, sides="query", module=None):
    cfg = AdapterConfig(name="mem", kind="linear", sides=sides, dim_in=2, dim_out=2, base_model="m", data_fingerprint="fp",
                        raw_collection="raw-m", identity=module is None, memory={"alpha": alpha, "n_passages": 1})
    return Adapter(cfg, module or LinearAdapter(2, 2), PassageMemory(("p2",), np.array([[0.0, 1.0]], np.float32)))


def test_adapter_with_memory_moves_passages_by_id_and_round_trips(tmp_path):
    P = np.array([[1, 0], [0.6, 0.8], [1, 0]], dtype=np.float32)
    ad = _memory_adapter()
    with pytest.raises(ValueError, match="by id"):
        ad.project_passages(P)
    out = ad.project_passages(P, ["p0", "p1", "p2"])
    want = np.array([1, 0.5]) / np.linalg.norm([1, 0.5])
    np.testing.assert_allclose(out[2], want, atol=1e-6)
    assert np.array_equal(out[:2], P[:2])
    assert ad.moves_passages and ad.collection_name == f"adapted-mem-{ad.config.uid}" and not ad.is_identity
    assert len(ad.config.uid) == 12 and _memory_adapter().collection_name != ad.collection_name  # same name, two adapters
    np.testing.assert_array_equal(ad.project_queries(P), P)  # the query side is the identity
    save_adapter(ad, tmp_path / "a")
    back = load_adapter(tmp_path / "a")
    assert back.memory.ids == ("p2",) and np.array_equal(back.project_passages(P, ["p0", "p1", "p2"]), out)
    assert back.collection_name == ad.collection_name  # the uid is saved: the collection is found again
    sha = adapter_sha(tmp_path / "a")
    (tmp_path / "a" / "memory.json").write_text(json.dumps(["p1"]))  # another passage moved: another adapter
    assert adapter_sha(tmp_path / "a") != sha
    (tmp_path / "a" / "memory.json").write_text(json.dumps(["p1", "p2"]))
    with pytest.raises(Exception, match="do not match"):
        load_adapter(tmp_path / "a")


def test_folds_cover_every_query_once():
    parts = fold_rows(103, 5, seed=3)
    allrows = np.concatenate(parts)
    assert sorted(allrows.tolist()) == list(range(103)) and {len(p) for p in parts} <= {20, 21}
    assert [p.tolist() for p in fold_rows(103, 5, seed=3)] == [p.tolist() for p in parts]  # seeded


def repeated_documents(n_passages=300, n_train=600, n_dev=200, dim=16, seed=0, shared=True):
    """Users ask about the same documents in their own words: each passage p has a hidden topic t_p; its
    queries are norm(t_p + noise), its text embeds as norm(0.35 t_p + other content). With `shared`, dev asks
    about the passages train asked about (the query memory should win); without, about other passages only."""
    rng = np.random.default_rng(seed)
    T = l2_normalise(rng.standard_normal((n_passages, dim)))
    P = l2_normalise(0.35 * T + rng.standard_normal((n_passages, dim)) / np.sqrt(dim))
    half = n_passages // 2

    def split(n, lo, hi, tag):
        rows = rng.integers(lo, hi, size=n)
        Q = l2_normalise(T[rows] + 0.5 * rng.standard_normal((n, dim)) / np.sqrt(dim)).astype(np.float32)
        qids = [f"{tag}{i}" for i in range(n)]
        return SplitData(query_ids=qids, Q=Q, positives=[np.array([r]) for r in rows],
                         hard=[np.array([(r + 1) % n_passages]) for r in rows],
                         weak=[np.array([(r + 7) % n_passages]) for r in rows],
                         qrels={q: {f"p{r}": 1} for q, r in zip(qids, rows)})

    train = split(n_train, 0, n_passages if shared else half, "t")
    dev = split(n_dev, 0, n_passages, "d") if shared else split(n_dev, half, n_passages, "d")
    return TrainingData(model_id="synthetic", dim=dim, data_fingerprint="fp", raw_collection="raw-synthetic",
                        passage_ids=[f"p{i}" for i in range(n_passages)], P=P.astype(np.float32), train=train, dev=dev)


FAST = dict(model="synthetic", epochs=4, max_epochs=8, temperatures=(0.05,), candidate_sets=("mined",), lr=0.01,
            weight_decay=0.0, tune_fusion=False)


def test_selection_picks_the_memory_when_documents_repeat_and_never_loses_to_identity():
    data = repeated_documents()
    res, sel, chosen = select_adapter(None, TrainConfig(**FAST, folds=3), data)
    identity = sel.mean(Point("identity"))
    assert chosen.method in ("memory", "query+memory") and sel.mean(chosen) > identity + 0.1, sel.table()
    assert all(sel.mean(chosen) >= sel.mean(p) for p in sel.scores if len(sel.scores[p]) == 3)  # the best, really
    assert sel.folds == 3 and sel.decided_by == 800  # every labelled query decided once
    ad = res.adapter
    assert ad.memory is not None and ad.config.training["fit_splits"] == ["train", "dev"]
    # the fitted memory: every passage some train or dev query answers, the mean of those queries
    pool = np.concatenate([data.train.Q, data.dev.Q])
    pos = [int(p[0]) for p in data.train.positives + data.dev.positives]
    first = ad.memory.ids[0]
    mine = [i for i, r in enumerate(pos) if f"p{r}" == first]
    want = pool[mine] if chosen.method == "memory" else ad.project_queries(pool[mine])
    np.testing.assert_allclose(ad.memory.vectors[0], want.mean(0), atol=1e-5)
    assert len(ad.memory.ids) == len(set(pos))


def test_the_memory_does_little_for_queries_about_new_documents():
    """Dev asks only about passages no training query answered: their positives never move. (Moved passages can
    still change dev rankings a little, by leaving or entering a query's neighbourhood.) Whatever wins, it is
    never below identity on dev."""
    data = repeated_documents(shared=False)
    sel = run_selection(TrainConfig(**FAST, folds=1, methods=("memory",)), data)
    identity = sel.mean(Point("identity"))
    assert sel.decided_by == 200 and sel.folds == 1
    gains = [sel.mean(Point("memory", alpha=a)) - identity for a in (0.25, 0.5, 1.0, 2.0)]
    assert max(abs(g) for g in gains) < 0.02, gains
    assert sel.mean(sel.best()) >= identity and (sel.best() == Point("identity")) == (max(gains) <= 0)


def test_folds_train_on_the_rest():
    data = repeated_documents(n_train=90, n_dev=30)
    folds = folds_of(data, 4, seed=1)
    held = [q for f in folds for q in f.dev.query_ids]
    assert sorted(held) == sorted(data.train.query_ids + data.dev.query_ids)
    for f in folds:
        assert not set(f.dev.query_ids) & set(f.train.query_ids)
        assert len(f.dev.query_ids) + len(f.train.query_ids) == 120


def test_a_family_whose_every_point_is_refused_leaves_the_identity(small_store, monkeypatch):
    """Issue 22, case 15: the unseen guard refusing every point of a family (a small or non-English corpus, or a
    tolerance of 0) was a `KeyError: None`; now selection finishes, keeps the identity and lists the refused rows."""
    from embedfit.adapters.select import Selection
    from embedfit.store import chroma_store
    from embedfit.store.store import Store

    chroma_store.release_locks()
    monkeypatch.setattr(Selection, "guarded", lambda self, p, served=None: p.method != "identity")
    cfg = TrainConfig(store=small_store[0].store, model="all-MiniLM-L6-v2", methods=("query+memory",), folds=2,
                      epochs=1, max_epochs=1, temperatures=(0.05,), candidate_sets=("mined",), alphas=(0.5,))
    result, sel, chosen = select_adapter(Store(small_store[0].store), cfg)
    assert chosen == Point("identity") and result.adapter.is_identity
    rows = sel.table()
    assert [r["method"] for r in rows] == ["identity", "query+memory"] and rows[1]["guarded"]
    chroma_store.release_locks()


def test_bounded_memory_moves_each_passage_only_as_far_as_its_queries_need():
    """Worked by hand in 2-d. Passages p0 (1, 0), p1 (0, 1), p2 (0.8, 0.6); query a (0.6, 0.8) answers p0, query b
    (0, 1) answers p1. a's best other passage is p2 (0.96); b's is p2 (0.6).
    - p1 already wins b by 0.4: it does not move at margin 0 or 0.3, and moves at margin 0.5 (1 - 0.6 < 0.5) as far
      as it can (t = 1: its move is toward b itself, which cannot raise b . p1 above 1).
    - p0 along normalise(p0 + t * 4 * a): a . p = (0.6 + 4t) / sqrt(1 + 4.8t + 16t^2), 0.9558 at t = 0.5 and
      0.9615 at t = 0.55, so on the grid of 0.05 steps the first t with a . p >= 0.96 is 0.55. At alpha 1 even t = 1
      gives 0.894 < 0.96: unsatisfiable, so the full move."""
    from embedfit.adapters.memory import sufficient_moves

    P = np.array([[1, 0], [0, 1], [0.8, 0.6]], dtype=np.float32)
    Q = np.array([[0.6, 0.8], [0, 1]], dtype=np.float32)
    positives = [np.array([0]), np.array([1])]
    rows, M = query_memory(Q, positives, 3)
    assert rows.tolist() == [0, 1]
    t = sufficient_moves(P, rows, M, 4.0, Q, positives, margin=0.0)
    np.testing.assert_allclose(t, [0.55, 0.0])
    assert sufficient_moves(P, rows, M, 4.0, Q, positives, margin=0.3)[1] == 0.0
    assert sufficient_moves(P, rows, M, 4.0, Q, positives, margin=0.5)[1] == 1.0
    assert sufficient_moves(P, rows, M, 1.0, Q, positives, margin=0.0)[0] == 1.0
    # the bound is the memory scaled per passage: p0 moves 0.55 of its way, p1 stays
    moved = apply_memory(P, rows, M * t[:, None], 4.0)
    assert float(moved[0] @ Q[0]) >= 0.96 > float(apply_memory(P, rows, M * 0.5, 4.0)[0] @ Q[0])
    assert np.array_equal(moved[1], P[1])


def _costly_memory_toy(n_passages=200, n_train=400, n_dev=200, dim=16, seed=0) -> TrainingData:
    """Queries share a direction passages lack (they are all questions): q = norm(t_p + c + noise). Train asks about
    the first half of the passages, dev about all of them, so half of dev is unseen; moving a passage toward its
    queries moves it along c too, toward every query."""
    rng = np.random.default_rng(seed)
    T = l2_normalise(rng.standard_normal((n_passages, dim)))
    c = l2_normalise(rng.standard_normal((1, dim)))[0]
    P = l2_normalise(0.5 * T + rng.standard_normal((n_passages, dim)) / np.sqrt(dim)).astype(np.float32)

    def split(n, hi, tag):
        rows = rng.integers(0, hi, size=n)
        Q = l2_normalise(T[rows] + 1.5 * c + 0.5 * rng.standard_normal((n, dim)) / np.sqrt(dim)).astype(np.float32)
        qids = [f"{tag}{i}" for i in range(n)]
        return SplitData(query_ids=qids, Q=Q, positives=[np.array([r]) for r in rows],
                         hard=[np.array([(r + 1) % n_passages]) for r in rows],
                         weak=[np.array([(r + 7) % n_passages]) for r in rows],
                         qrels={q: {f"p{r}": 1} for q, r in zip(qids, rows)})

    return TrainingData(model_id="synthetic", dim=dim, data_fingerprint="fp", raw_collection="raw-synthetic",
                        passage_ids=[f"p{i}" for i in range(n_passages)], P=P, train=split(n_train, n_passages // 2, "t"),
                        dev=split(n_dev, n_passages, "d"))


def test_a_centred_memory_on_a_hand_worked_example():
    """Training queries (1,0,0) and (0,1,0): their mean points along u = (1,1,0)/sqrt 2. A memory vector (1,0,0)
    keeps only what is not along u: (1,0,0) - (1/sqrt 2) u = (0.5, -0.5, 0); one along u itself vanishes, one
    orthogonal to u is kept whole, and a zero mean changes nothing."""
    from embedfit.adapters.memory import centre_memory

    Q = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)
    M = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 2]], dtype=np.float32)
    np.testing.assert_allclose(centre_memory(M, Q), [[0.5, -0.5, 0], [0, 0, 0], [0, 0, 2]], atol=1e-6)
    np.testing.assert_array_equal(centre_memory(M, np.array([[1, 0, 0], [-1, 0, 0]], dtype=np.float32)), M)


def test_selection_tries_the_centred_memory_where_the_memory_costs_unseen_queries():
    """A toy where the plain memory costs the held-out unseen queries: the second stage scores the centred memory at
    every alpha on every fold; a chosen centred point is fitted (and recorded) centred."""
    from embedfit.adapters.config import TrainConfig
    from embedfit.adapters.memory import centre_memory, query_memory
    from embedfit.adapters.select import Point, _memory_of, fit, run_selection

    data = _costly_memory_toy()
    cfg = TrainConfig(methods=("memory",), alphas=(0.5, 1.0), folds=3, tune_fusion=False, unseen_tolerance=None)
    sel = run_selection(cfg, data)
    plain = sel.best([p for p in sel.scores if p.method == "memory" and not p.centred], guard=False)
    assert sel.unseen_change(plain) < 0  # the premise: the plain memory costs unseen queries here
    centred = [p for p in sel.scores if p.centred]
    assert {p.alpha for p in centred} == {0.5, 1.0} and all(len(sel.scores[p]) == sel.folds for p in centred)
    # the mechanism: without the move along the queries' shared direction, the unseen queries lose nothing here
    assert all(sel.unseen_change(p) > max(0.0, sel.unseen_change(Point("memory", alpha=p.alpha))) for p in centred)
    point = Point("memory", alpha=1.0, centred=True)
    rows, M = _memory_of(point, None, data)
    want_rows, want = query_memory(data.train.Q, data.train.positives, len(data.passage_ids))
    np.testing.assert_array_equal(rows, want_rows)
    np.testing.assert_allclose(M, centre_memory(want, data.train.Q), atol=1e-6)
    _, memory = fit(cfg, point, data)
    np.testing.assert_allclose(memory.vectors, centre_memory(want, data.train.Q), atol=1e-6)
    # chosen (no guard against it here, the tolerance made strict): the adapter says it is centred
    strict = TrainConfig(methods=("memory",), alphas=(0.5, 1.0), folds=3, tune_fusion=False, unseen_tolerance=0.0)
    res, _, chosen = select_adapter(None, strict, data)
    assert chosen.centred and res.adapter.config.memory["centred"] is True, chosen
    assert "centred" in res.adapter.describe()
