"""The fine-tune baseline (`eval --baselines finetune`): what users would do instead of a customization.

End to end on the small real store (NQ sample, all-MiniLM-L6-v2, one epoch): it is trained on the train split only,
its epoch is chosen on dev, and its row is the exact-search ranking of the queries and corpus embedded by the tuned
model (the oracle re-ranks those vectors itself)."""
from __future__ import annotations

import numpy as np
import pytest

from embedfit.errors import InputError
from embedfit.evaluation.finetune import no_duplicate_batches, training_pairs, tunable

MODEL = "all-MiniLM-L6-v2"


def test_batches_never_hold_a_passage_twice_and_lose_no_pair():
    pairs = [(f"q{i}", f"question {i}", f"p{i % 5}") for i in range(23)]  # 5 passages, each the answer ~5 times
    batches = no_duplicate_batches(pairs, size=4, seed=3)
    assert sorted(p for b in batches for p in b) == sorted(pairs)
    assert all(len(b) <= 4 and len({p for _, _, p in b}) == len(b) for b in batches)


def test_an_onnx_model_is_refused_with_the_reason():
    with pytest.raises(InputError, match="cannot be fine-tuned"):
        tunable("paraphrase-MiniLM-L3-v2")


@pytest.mark.slow  # ~90 s on 2 cores: the corpus is embedded three times
def test_finetune_baseline_end_to_end(small_store, monkeypatch):
    import embedfit as ef
    from embedfit.evaluation import evaluate as ev_mod
    from embedfit.store.store import Store

    store_root = small_store[0].store
    store = Store(store_root)
    seen: dict = {}
    real = ev_mod.finetune

    def spy(model, train, dev_queries, dev_qrels, corpus, pids, scored, epochs, seed):
        seen["train"], seen["dev"] = {q for q, _, _ in train}, set(dev_queries)
        seen["result"] = res = real(model, train, dev_queries, dev_qrels, corpus, pids, scored, epochs=epochs, seed=seed)
        seen["pids"] = pids
        return res

    monkeypatch.setattr(ev_mod, "finetune", spy)
    ev = ef.evaluate(store_root, [], baselines=["finetune"], finetune_epochs=1, mse_baseline=False, nudge=False,
                     hnsw=False, plots=False, bm25=False, bootstrap_resamples=200)
    model = ev.outcome.models[0]
    system = model.systems["finetune"]
    splits = store.load_splits()
    assert seen["train"] and {splits[q] for q in seen["train"]} == {"train"}  # fitted on train only ...
    assert {splits[q] for q in seen["dev"]} == {"dev"}  # ... its epoch chosen on dev
    assert seen["train"] == {q for q, _, _ in training_pairs(store.load_queries(), store.load_qrels(),
                                                              store.split_query_ids("train"), store.load_corpus())}
    res = seen["result"]
    assert [c["epoch"] for c in res.curve] == [0, 1] and res.best_epoch in (0, 1)
    # the row is the tuned vectors' exact ranking (oracle: full sort by cosine, here)
    Q, P = res.query_vectors, res.passage_vectors
    S = (Q / np.linalg.norm(Q, axis=1, keepdims=True)) @ (P / np.linalg.norm(P, axis=1, keepdims=True)).T
    for i, qid in enumerate(model.query_ids[:20]):
        top = [seen["pids"][j] for j in np.argsort(-S[i], kind="stable")[:10]]
        assert list(system.results[qid])[:10] == top
    m = ev.metrics
    assert m["retrieval"]["finetune"] is not None and m["vs_raw"]["finetune"]["MRR@10"]["p"] <= 1.0
    assert m["costs"]["finetune"]["fit_seconds"] > 0 and m["costs"]["finetune"]["storage_bytes"] > 10_000_000
    assert m["decision"]["recommended"] != "finetune"  # a baseline: reported beside, never recommended
    assert any("Full fine-tune baseline" in n for n in model.notes)
