"""NUDGE-N and NUDGE-M as eval baselines (issue 21, item 1): our call gives the package's own output on a toy, and
eval scores exactly the ranking those vectors make (an independent numpy ranking and pytrec_eval)."""
from __future__ import annotations

import numpy as np
import pytest
import pytrec_eval
import torch
from nudge import NUDGEM, NUDGEN

from embedfit.adapters.data import SplitData, TrainingData, load_training_data
from embedfit.adapters.nudge import applied_gamma, nudge_embeddings

MODEL = "all-MiniLM-L6-v2"


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _toy(seed: int = 0) -> TrainingData:
    """Questions are their passage plus one shared shift plus noise, and dev asks about passages train answered:
    moving answered passages toward their questions pays on dev, so the package chooses a real move."""
    rng = np.random.default_rng(seed)
    P = _unit(rng.normal(size=(40, 8))).astype(np.float32)
    shift = rng.normal(size=8)
    answered = rng.choice(40, size=15, replace=False)

    def split(n: int, offset: int) -> SplitData:
        gold = rng.choice(answered, size=n)
        Q = _unit(P[gold] + 0.8 * shift + 0.3 * rng.normal(size=(n, 8))).astype(np.float32)
        pos = [np.array([g], dtype=np.int64) for g in gold]
        return SplitData(query_ids=[f"q{offset + i}" for i in range(n)], Q=Q, positives=pos, hard=pos, weak=pos,
                         qrels={f"q{offset + i}": {f"p{g}": 1} for i, g in enumerate(gold)})

    return TrainingData(model_id="toy", dim=8, data_fingerprint="toy", raw_collection="", passage_ids=[f"p{i}" for i in range(40)],
                        P=P, train=split(30, 0), dev=split(12, 100))


@pytest.mark.parametrize("key, cls", [("nudge_n", NUDGEN), ("nudge_m", NUDGEM)])
def test_our_call_gives_the_packages_own_output(key, cls):
    data = _toy()
    train = {"q_embs": data.train.Q, "q_ans_indx": [p.tolist() for p in data.train.positives]}
    val = {"q_embs": data.dev.Q, "q_ans_indx": [p.tolist() for p in data.dev.positives]}
    direct = cls(device=torch.device("cpu")).finetune_embeddings(data.P.copy(), train, val)
    ours = nudge_embeddings(data.P, data.train, data.dev, key)
    np.testing.assert_allclose(ours, direct, atol=1e-6)
    answered = sorted({int(p[0]) for p in data.train.positives})
    assert not np.allclose(ours[answered], data.P[answered], atol=1e-4)  # it did move the answered passages
    others = sorted(set(range(40)) - set(answered))
    if key == "nudge_n":  # NUDGE-N keeps every passage on the sphere and leaves unanswered ones as they were
        np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(ours[others], data.P[others], atol=1e-6)


def test_eval_scores_the_ranking_nudge_vectors_make(small_store):
    import embedfit as ef
    from embedfit.store.store import Store

    cfg, _ = small_store
    store = Store(cfg.store)
    ev = ef.evaluate(store, models=[MODEL], bm25=False, mse_baseline=False, plots=False, hnsw=False,
                     bootstrap_resamples=100)
    systems = ev.outcome.models[0].systems
    data = load_training_data(store, MODEL)
    from embedfit.store import query_vectors

    qids_all, Q = query_vectors.load(store.root, MODEL)
    row = {q: i for i, q in enumerate(qids_all)}
    qrels = {q: r for q, r in store.load_qrels().items() if q in set(store.split_query_ids("test"))}
    qids = [q for q in ev.outcome.models[0].query_ids]
    for key, dot in (("nudge_n", False), ("nudge_m", True)):
        P = nudge_embeddings(data.P, data.train, data.dev, key)
        scores = _unit(Q[[row[q] for q in qids]]) @ (P if dot else _unit(P)).T
        run = {q: {data.passage_ids[j]: float(scores[i, j]) for j in np.argsort(-scores[i])[:100]}
               for i, q in enumerate(qids)}
        per_query = pytrec_eval.RelevanceEvaluator({q: qrels[q] for q in qids}, {"recip_rank"}).evaluate(run)
        mrr_all = float(np.mean([v["recip_rank"] for v in per_query.values()]))
        # eval's MRR@10 is cut at 10: equal when the first answer is in the top 10, never larger
        assert systems[key].means["MRR@10"] <= mrr_all + 1e-9
        top1 = {q: max(run[q], key=run[q].get) for q in qids}
        assert {q: next(iter(systems[key].results[q])) for q in qids} == top1
    assert ev.metrics["retrieval"]["nudge_n"] is not None and "nudge_m" in ev.metrics["ci95"]
    said = [n for n in ev.outcome.models[0].notes if n.startswith("NUDGE-N and NUDGE-M")]
    for key, name in (("nudge_n", "NUDGE-N"), ("nudge_m", "NUDGE-M")):
        g = applied_gamma(data.P, nudge_embeddings(data.P, data.train, data.dev, key), key)
        assert len(said) == 1 and f"{name} {g:g}" in said[0]



@pytest.mark.parametrize("key, cls", [("nudge_n", NUDGEN), ("nudge_m", NUDGEM)])
def test_applied_gamma_reads_back_the_gamma_the_package_applied(key, cls):
    """The report names the gamma the package chose; nudge-ft returns only the moved vectors, so it is read back.
    Oracle: the package itself, given each gamma; and for its own choice, called again with the gamma read back, it
    gives the same vectors."""
    data = _toy()
    train = {"q_embs": data.train.Q, "q_ans_indx": [p.tolist() for p in data.train.positives]}
    val = {"q_embs": data.dev.Q, "q_ans_indx": [p.tolist() for p in data.dev.positives]}
    for gamma in (0.0, 0.04, 0.2, 0.46):
        out = cls(device=torch.device("cpu")).finetune_embeddings(data.P.copy(), train, val, gamma=gamma)
        assert applied_gamma(data.P, out, key) == pytest.approx(gamma, abs=1e-4)
    chosen = nudge_embeddings(data.P, data.train, data.dev, key)
    g = applied_gamma(data.P, chosen, key)
    assert g > 0  # the toy is built so that a move pays on dev
    again = cls(device=torch.device("cpu")).finetune_embeddings(data.P.copy(), train, val, gamma=g)
    np.testing.assert_allclose(again, chosen, atol=1e-4)


def test_selection_ships_nudge_n_when_it_wins_and_applies_it_as_the_package_does():
    """Issue 21, item 1: NUDGE-N enters selection as a candidate; when it wins on held-out folds it ships as a
    query memory whose projected passages are the package's own output (fitted on train + dev, the chosen gamma)."""
    from embedfit.adapters.config import TrainConfig
    from embedfit.adapters.select import concat_splits, select_adapter, table_markdown

    data = _toy(1)
    # no unseen guard here: in this toy every question shares one shift, so moved passages pull unseen ones away
    cfg = TrainConfig(methods=("nudge",), folds=3, tune_fusion=False, nudge_gammas=(0.05, 0.1, 0.2, 0.4),
                      unseen_tolerance=None)
    result, sel, chosen = select_adapter(None, cfg, data)
    assert chosen.method == "nudge", table_markdown(sel, chosen)
    ad = result.adapter
    assert ad.config.memory["method"] == "nudge-n" and ad.config.memory["gamma"] == chosen.alpha
    assert "NUDGE-N passage move" in ad.describe()
    both = concat_splits(data.train, data.dev)
    train = {"q_embs": both.Q, "q_ans_indx": [p.tolist() for p in both.positives]}
    val = {"q_embs": data.dev.Q, "q_ans_indx": [p.tolist() for p in data.dev.positives]}
    expected = NUDGEN(device=torch.device("cpu")).finetune_embeddings(data.P.copy(), train, val, gamma=chosen.alpha)
    got = ad.project_passages(data.P, data.passage_ids)
    answered = sorted({int(p) for pos in both.positives for p in pos})
    np.testing.assert_allclose(got[answered], expected[answered], atol=1e-5)
    others = sorted(set(range(len(data.P))) - set(answered))
    np.testing.assert_array_equal(got[others], data.P[others])
    np.testing.assert_array_equal(ad.project_queries(data.dev.Q), data.dev.Q)  # passage-side only


def test_query_plus_nudge_moves_passages_toward_the_adapted_queries_as_the_package_does():
    """Issue 21, item 2: `query+nudge` = the query adapter, then NUDGE-N fitted on the *adapted* train queries
    (gamma given). Its shipped memory projects the passages to the package's own output for those queries, and its
    queries go through the adapter."""
    from embedfit.adapters.config import TrainConfig
    from embedfit.adapters.select import Point, _adapt, fit, memory_alpha

    data = _toy(2)
    cfg = TrainConfig(tune_fusion=False, lr=0.01, weight_decay=0.0)
    point = Point("query+nudge", "mined", 0.05, 3, 0.2)
    module, memory = fit(cfg, point, data)
    assert module is not None and memory is not None and memory_alpha(point) == 1.0
    adapted = {"q_embs": _adapt(module, data.train.Q), "q_ans_indx": [p.tolist() for p in data.train.positives]}
    val = {"q_embs": _adapt(module, data.dev.Q), "q_ans_indx": [p.tolist() for p in data.dev.positives]}
    expected = NUDGEN(device=torch.device("cpu")).finetune_embeddings(data.P.copy(), adapted, val, gamma=0.2)
    where = {pid: i for i, pid in enumerate(data.passage_ids)}
    rows = np.array([where[p] for p in memory.ids])
    np.testing.assert_allclose(data.P[rows] + memory.vectors, expected[rows], atol=1e-5)
    assert not np.allclose(_adapt(module, data.dev.Q), data.dev.Q, atol=1e-4)  # the adapter did train
    raw = nudge_embeddings(data.P, data.train, data.dev, gamma=0.2)  # and the move is not the raw queries' one
    assert not np.allclose(raw[rows], expected[rows], atol=1e-4)
