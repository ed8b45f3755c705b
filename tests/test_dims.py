"""`embedfit eval dims`: smaller vectors against raw, on the shared store; the truncation row checked against
nDCG@10 written out by hand over a brute-force ranking."""
from __future__ import annotations

import json

import numpy as np

from embedfit.evaluation.cli import main as eval_main
from embedfit.evaluation.learning_curve import load_test_split
from embedfit.store.store import Store


def ndcg10(Q, P, pids, qids, qrels) -> float:
    """Binary-relevance nDCG@10: sum 1/log2(rank+1) over relevant hits in the top 10, over the ideal."""
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    Pn = P / np.linalg.norm(P, axis=1, keepdims=True)
    out = []
    for i, q in enumerate(qids):
        s = Pn @ Qn[i]
        top = sorted(range(len(pids)), key=lambda j: (-s[j], pids[j]))[:10]
        rel = {p for p, r in qrels[q].items() if r > 0}
        dcg = sum(1 / np.log2(r + 2) for r, j in enumerate(top) if pids[j] in rel)
        ideal = sum(1 / np.log2(r + 2) for r in range(min(len(rel), 10)))
        out.append(dcg / ideal)
    return float(np.mean(out))


def test_dims_table_and_truncation_oracle(small_store, tmp_path):
    cfg, s = small_store
    from embedfit.store import chroma_store
    chroma_store.release_locks()
    assert eval_main(["dims", "--store", str(cfg.store), "--model", s["model"], "--sizes", "64", "--epochs", "1",
                      "--out", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "dims.json").read_text())
    assert (tmp_path / "dims.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {(r["method"], r["dim"]): r for r in out["rows"]}
    assert set(rows) == {("raw", 384), ("truncate", 64), ("pca", 64), ("adapter", 64)}
    assert rows[("raw", 384)]["bytes"] == 1536 and rows[("truncate", 64)]["bytes"] == 256
    store = Store(cfg.store)
    test = load_test_split(store, s["model"])
    dump = chroma_store.fetch_all(store.raw_collection(s["model"]))
    P = np.asarray(dump.embeddings, dtype=np.float64)
    want_raw = ndcg10(test.Q.astype(np.float64), P, dump.ids, test.query_ids, test.qrels)
    want_trunc = ndcg10(test.Q[:, :64].astype(np.float64), P[:, :64], dump.ids, test.query_ids, test.qrels)
    assert abs(rows[("raw", 384)]["nDCG@10"] - want_raw) < 1e-3
    assert abs(rows[("truncate", 64)]["nDCG@10"] - want_trunc) < 1e-3
    assert want_trunc < want_raw  # a 64-d cut of a model not trained for it loses quality
