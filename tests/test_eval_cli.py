"""`embedfit eval` end to end on a real 120-query store: schema, oracles, held-out queries, errors.

The numbers in metrics.json are checked against independent oracles computed here from the stored
vectors: a float64 full sort for Recall@k and MRR@10, sklearn's `ndcg_score` for nDCG@10, and a
brute-force sweep over every candidate threshold for threshold accuracy.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import build_small_store
from sklearn.metrics import ndcg_score

from embedfit.adapters.adapter import Adapter, AdapterConfig
from embedfit.adapters.io import load_adapter, save_adapter
from embedfit.adapters.modules import build_module
from embedfit.evaluation.cli import main
from embedfit.store import chroma_store, query_vectors
from embedfit.store.store import Store

MODEL = "paraphrase-MiniLM-L3-v2"
METRICS = ["Recall@1", "Recall@5", "Recall@10", "Recall@100", "MRR@10", "nDCG@10"]
TOP_KEYS = {"n_queries", "model", "adapter", "retrieval", "ci95", "p_value_adapted_vs_raw", "threshold_accuracy",
            "p_value_raw_bm25_vs_raw", "p_value_adapted_bm25_vs_raw", "p_value_raw_rrf_vs_raw",
            "p_value_adapted_rrf_vs_raw", "p_value_nudge_n_vs_raw", "p_value_nudge_m_vs_raw", "fusion",
            "vs_best_non_adapter", "seen_unseen", "seen_reason", "labels", "vs_raw", "costs", "decision",
            "embedfit_version"}
NUDGE = {"nudge_n", "nudge_m"}
HYBRIDS = {"raw_bm25", "adapted_bm25", "raw_rrf", "adapted_rrf"}
EXTRA_ADAPTERS = {"adapted:both", "adapted:ident"}
EXTRA_HYBRIDS = {f"{a}{s}" for a in EXTRA_ADAPTERS for s in ("_bm25", "_rrf")}
FAST = ["--bootstrap-resamples", "300", "--mse-epochs", "2"]


def _perturbed_adapter(name: str, sides: str, info: dict, scale: float, seed: int, identity: bool = False) -> Adapter:
    module = build_module("linear", 384, 384)
    with torch.no_grad():
        module.delta.add_(torch.randn(384, 384, generator=torch.Generator().manual_seed(seed)) * scale)
    cfg = AdapterConfig(name=name, kind="linear", sides=sides, dim_in=384, dim_out=384, base_model=MODEL,
                        data_fingerprint=info["data_fingerprint"], raw_collection=info["collection"],
                        identity=identity, loss="infonce", training={"best_epoch": 1})
    return Adapter(cfg, module)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 120-query store plus three adapters: query-only, both-sides (projected into Chroma), identity."""
    root = tmp_path_factory.mktemp("evalcli")
    cfg, _ = build_small_store(root, model=MODEL, limit=120)
    store = Store(cfg.store, write=True)
    info = store.model_info(MODEL)
    q_only = _perturbed_adapter("qonly", "query", info, 0.04, seed=1)
    both = _perturbed_adapter("both", "both", info, 0.03, seed=2)
    ident = _perturbed_adapter("ident", "query", info, 0.0, seed=3, identity=True)
    curves = [{"epoch": 0, "train_loss": None, "MRR@10": 0.7}, {"epoch": 1, "train_loss": 0.5, "MRR@10": 0.72}]
    dirs = {}
    for ad in (q_only, both, ident):
        dirs[ad.name] = save_adapter(ad, root / "adapters" / ad.name,
                                     extra_files={"curves.json": json.dumps(curves).encode()})
    dump = chroma_store.fetch_all(store.raw_collection(MODEL))
    col = chroma_store.ensure_collection(store.client, both.collection_name, {"kind": "adapted", "model_id": MODEL}, ())
    chroma_store.upsert_batched(col, store.client, dump.ids, both.project_passages(dump.embeddings))
    return {"root": root, "store": cfg.store, "adapters": dirs, "objs": {"qonly": q_only, "both": both, "ident": ident}}


@pytest.fixture(scope="module")
def full_run(tiny):
    out = tiny["root"] / "report"
    args = ["--store", str(tiny["store"]), "--out", str(out), *FAST,
            "--adapter", str(tiny["adapters"]["qonly"]), "--adapter", str(tiny["adapters"]["both"]),
            "--adapter", str(tiny["adapters"]["ident"])]
    assert main(args) == 0
    return {"out": out, "metrics": json.loads((out / "metrics.json").read_text()),
            "details": json.loads((out / "details.json").read_text()), "report": (out / "report.md").read_text()}


# -- oracles ---------------------------------------------------------------------------------------

def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def oracle_metrics(Q: np.ndarray, qids: list[str], P: np.ndarray, pids: list[str], qrels: dict) -> dict[str, float]:
    """Full float64 sort (ties by passage id); Recall/MRR by hand, nDCG@10 by sklearn."""
    S = _unit(Q) @ _unit(P).T
    pid_arr = np.array(pids)
    out = {m: [] for m in METRICS}
    for i, qid in enumerate(qids):
        rel = {p for p, r in qrels[qid].items() if r > 0}
        order = np.lexsort((pid_arr, -S[i]))
        ranked = [pids[j] for j in order]
        for k in (1, 5, 10, 100):
            out[f"Recall@{k}"].append(len(rel & set(ranked[:k])) / len(rel))
        first = next((r for r, p in enumerate(ranked[:10], start=1) if p in rel), None)
        out["MRR@10"].append(1.0 / first if first else 0.0)
        gains = np.array([[qrels[qid].get(p, 0) for p in pids]], dtype=float)
        out["nDCG@10"].append(ndcg_score(gains, S[i][None, :], k=10))
    return {m: float(np.mean(v)) for m, v in out.items()}


def _store_arrays(store_dir: Path):
    store = Store(store_dir)
    dump = chroma_store.fetch_all(store.raw_collection(MODEL))
    ids, vecs = query_vectors.load(store.root, MODEL)
    return store, dump.ids, dump.embeddings, {q: vecs[i] for i, q in enumerate(ids)}


def brute_force_threshold(pos: np.ndarray, neg: np.ndarray) -> float:
    """Try every score (and +inf) as the threshold; highest among the most accurate."""
    best_acc, best_t = -1.0, None
    for t in sorted(set(pos.tolist()) | set(neg.tolist())) + [math.inf]:
        acc = (np.sum(pos >= t) + np.sum(neg < t)) / (len(pos) + len(neg))
        if acc >= best_acc:
            best_acc, best_t = acc, t
    return best_t


# -- the default run: test split, three adapters -------------------------------------------------------

def test_metrics_json_has_exactly_the_contract_keys(full_run):
    m = full_run["metrics"]
    extra = {f"p_value_{k}_vs_raw" for k in EXTRA_ADAPTERS | EXTRA_HYBRIDS}
    assert set(m) == TOP_KEYS | extra
    assert m["model"] == MODEL and m["adapter"] == "qonly"
    assert set(m["retrieval"]) == {"raw", "adapted", "bm25", "mse_baseline", "finetune"} | NUDGE | HYBRIDS | EXTRA_ADAPTERS | EXTRA_HYBRIDS
    assert m["retrieval"]["finetune"] is None  # an optional baseline (--baselines finetune), not asked for
    assert all(m["retrieval"][k] is not None and m["p_value_" + k + "_vs_raw"] is not None for k in NUDGE)
    assert set(m["fusion"]) == HYBRIDS | EXTRA_HYBRIDS
    assert all(f["chosen_on"] == "dev" for k, f in m["fusion"].items() if k.endswith("_bm25"))
    assert all(f["method"] == "rrf" and f["rrf_k"] == 60 for k, f in m["fusion"].items() if k.endswith("_rrf"))
    assert set(m["vs_best_non_adapter"]) == {"adapted", "adapted_bm25", "adapted_rrf"} | EXTRA_ADAPTERS | EXTRA_HYBRIDS
    assert {v["system"] for v in m["vs_best_non_adapter"].values()} <= {"raw", "bm25", "raw_bm25", "raw_rrf"}
    for name, vals in m["retrieval"].items():
        if name == "finetune":
            continue
        assert list(vals) == METRICS, name
        assert all(0.0 <= v <= 1.0 for v in vals.values())
    assert set(m["ci95"]) == set(m["retrieval"])
    for name, cis in m["ci95"].items():
        if name == "finetune":
            continue
        assert set(cis) == {"MRR@10", "nDCG@10", "Recall@10"}
        for metric, (lo, hi) in cis.items():
            assert lo <= m["retrieval"][name][metric] + 1e-12 and m["retrieval"][name][metric] <= hi + 1e-12
    assert set(m["p_value_adapted_vs_raw"]) == {"MRR@10", "nDCG@10"}
    assert all(0.0 < p <= 1.0 for p in m["p_value_adapted_vs_raw"].values())
    for kind in ("weak", "hard"):
        t = m["threshold_accuracy"][kind]
        assert {"raw", "adapted", "raw_se", "adapted_se"} <= set(t)
        assert 0.5 <= t["raw"] <= 1.0 and 0.0 <= t["raw_se"] < 0.2


def test_n_queries_is_the_test_split(tiny, full_run):
    store = Store(tiny["store"])
    qrels = store.load_qrels()
    expected = [q for q in store.split_query_ids("test") if q in qrels]
    assert full_run["metrics"]["n_queries"] == len(expected) > 0
    assert full_run["details"]["models"][MODEL]["query_ids"] == expected


def test_raw_and_adapted_metrics_match_a_brute_force_oracle(tiny, full_run):
    store, pids, P, qvec = _store_arrays(tiny["store"])
    qrels = store.load_qrels()
    qids = full_run["details"]["models"][MODEL]["query_ids"]
    Q = np.stack([qvec[q] for q in qids])
    got = full_run["metrics"]["retrieval"]
    assert got["raw"] == pytest.approx(oracle_metrics(Q, qids, P, pids, qrels), abs=1e-6)
    qonly, both = tiny["objs"]["qonly"], tiny["objs"]["both"]
    assert got["adapted"] == pytest.approx(oracle_metrics(qonly.project_queries(Q), qids, P, pids, qrels), abs=1e-6)
    assert got["adapted:both"] == pytest.approx(
        oracle_metrics(both.project_queries(Q), qids, both.project_passages(P), pids, qrels), abs=1e-6)
    assert got["adapted:ident"] == got["raw"]


def test_threshold_accuracy_matches_a_brute_force_sweep(tiny, full_run):
    store, pids, P, qvec = _store_arrays(tiny["store"])
    prow = {p: i for i, p in enumerate(pids)}
    Pn = _unit(P)
    examples = store.load_examples(MODEL)
    for kind in ("weak", "hard"):
        scores = {}
        for split in ("dev", "test"):
            pos, neg = [], []
            for e in examples:
                if e.split != split:
                    continue
                ps = [prow[p] for p in e.positive_ids]
                ns = [prow[p] for p in (e.weak_ids if kind == "weak" else e.hard_ids)]
                n = min(len(ps), len(ns))  # one negative per positive
                q = _unit(qvec[e.query_id][None, :])[0]
                pos += [float(q @ Pn[j]) for j in ps[:n]]
                neg += [float(q @ Pn[j]) for j in ns[:n]]
            scores[split] = (np.array(pos), np.array(neg))
        t = brute_force_threshold(*scores["dev"])
        pos, neg = scores["test"]
        acc = (np.sum(pos >= t) + np.sum(neg < t)) / (len(pos) + len(neg))
        reported = full_run["metrics"]["threshold_accuracy"][kind]
        assert reported["raw"] == pytest.approx(acc, abs=1e-9)
        assert reported["raw_se"] == pytest.approx(math.sqrt(acc * (1 - acc) / (len(pos) + len(neg))), abs=1e-9)


def test_report_md_names_the_split_and_shows_raw_beside_every_delta(full_run):
    r = full_run["report"]
    n = full_run["metrics"]["n_queries"]
    assert f"test split, {n} queries" in r
    raw_mrr = f"{full_run['metrics']['retrieval']['raw']['MRR@10']:.3f}"
    assert f"MRR@10 {raw_mrr} → " in r
    for words in ("BM25", "MSE cookbook baseline", "HNSW", "Threshold accuracy", "dev", "95% CI"):
        assert words in r
    assert any(w in r for w in ("**helped**", "**hurt**", "**no significant difference**"))
    assert "adapter ident is the identity" in r or "is the identity" in r


def test_every_linked_figure_exists(full_run):
    out = full_run["out"]
    figures = full_run["details"]["models"][MODEL]["figures"]
    for key in ("similarity_hist", "recall_at_k", "latent_space", "latent_space_html"):
        assert key in figures
    assert "training:adapted" in figures and "training:mse_baseline" in figures
    for rel in figures.values():
        assert (out / rel).stat().st_size > 1000
        assert f"]({rel})" in full_run["report"]
    html = (out / figures["latent_space_html"]).read_text()
    assert "../plotly.min.js" in html and (out / "figures" / "plotly.min.js").exists()


def test_hnsw_is_checked_against_exact_search_on_the_right_collections(full_run, tiny):
    systems = full_run["details"]["models"][MODEL]["systems"]
    assert systems["raw"]["hnsw"]["collection"] == "raw-paraphrase-minilm-l3-v2"
    assert systems["adapted"]["hnsw"]["collection"] == "raw-paraphrase-minilm-l3-v2"  # query-only adapter
    both = load_adapter(tiny["adapters"]["both"])
    assert systems["adapted:both"]["hnsw"]["collection"] == f"adapted-both-{both.config.uid}" == both.collection_name
    for key in ("raw", "adapted", "adapted:both"):
        assert 0.9 <= systems[key]["hnsw"]["recall@10_vs_exact"] <= 1.0
    assert systems["bm25"]["hnsw"] is None


# -- held-out queries -----------------------------------------------------------------------------------

def test_heldout_queries_score_exactly_the_given_queries(tiny, tmp_path):
    store = Store(tiny["store"])
    queries, qrels, splits = store.load_queries(), store.load_qrels(), store.load_splits()
    test_ids = [q for q in store.split_query_ids("test") if q in qrels][:6]
    train_id = next(q for q, s in splits.items() if s == "train" and q in qrels)
    pid = next(iter(qrels[test_ids[0]]))
    rows = [{"_id": f"new{i}", "text": queries[q]} for i, q in enumerate(test_ids)]  # new ids: embedded now
    rows.append({"_id": "para", "text": "  who  sang " + queries[test_ids[0]] + " ?"})  # an unseen wording
    rows.append({"_id": train_id, "text": queries[train_id]})  # a training query: must be flagged
    rows.append({"_id": "noqrels", "text": "a question nobody judged"})
    qrels_rows = [(f"new{i}", p, r) for i, q in enumerate(test_ids) for p, r in qrels[q].items()]
    qrels_rows += [("para", pid, 1), (train_id, next(iter(qrels[train_id])), 1),
                   ("ghost", pid, 1), ("new0", "p_not_in_store", 1), ("new1", pid, 0)]
    qfile, rfile = tmp_path / "queries.jsonl", tmp_path / "qrels.tsv"
    qfile.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rfile.write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{a}\t{b}\t{c}\n" for a, b, c in qrels_rows))
    out = tmp_path / "out"
    rc = main(["--store", str(tiny["store"]), "--out", str(out), "--queries", str(qfile), "--qrels", str(rfile),
               "--no-mse-baseline", "--no-plots", "--bootstrap-resamples", "300", "--min-queries", "5"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    details = json.loads((out / "details.json").read_text())["models"][MODEL]
    expected = [f"new{i}" for i in range(len(test_ids))] + ["para", train_id]
    assert metrics["n_queries"] == len(expected)
    assert details["query_ids"] == expected
    # threshold accuracy on the held-out queries' own pairs (at most one hard negative per positive, per query)
    n_pos = sum(1 for a, b, c in qrels_rows if a in expected and c > 0 and b != "p_not_in_store")
    assert 0 < details["threshold_pairs"]["hard"]["test_pos"] <= n_pos
    assert any("measured on these held-out queries' own pairs" in n for n in details["notes"])

    # the oracle embeds the given texts itself and ranks the whole corpus
    from embedfit.embed import load_embedder
    from embedfit.evaluation.heldout import read_queries_file

    given = read_queries_file(qfile)
    Q = load_embedder(MODEL).embed([given[q] for q in expected], "query")
    _, pids, P, _ = _store_arrays(tiny["store"])
    gold = {}
    for a, b, c in qrels_rows:
        if a in expected and c > 0 and b in set(pids):
            gold.setdefault(a, {})[b] = c
    assert metrics["retrieval"]["raw"] == pytest.approx(oracle_metrics(Q, expected, P, pids, gold), abs=1e-5)
    # seen/unseen: only the training query's passage was a training positive (the grouped split keeps every
    # test query's passages out of training), so exactly one held-out query is seen
    assert metrics["seen_unseen"]["n"] == {"seen": 1, "unseen": len(expected) - 1}

    report = (out / "report.md").read_text()
    assert f"held-out queries from {qfile}" in report
    assert "also in the store's train split" in report
    assert "query_without_usable_qrels 1" in report and "qrels_row_for_unknown_query 1" in report


def test_no_adapter_and_switched_off_baselines_are_null(tiny, tmp_path):
    out = tmp_path / "out"
    rc = main(["--store", str(tiny["store"]), "--out", str(out), "--no-plots", "--no-hnsw", "--no-bm25",
               "--no-mse-baseline", "--no-nudge", "--bootstrap-resamples", "300"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m) == TOP_KEYS
    assert m["retrieval"]["nudge_n"] is None and m["ci95"]["nudge_m"] is None
    assert m["adapter"] is None and m["p_value_adapted_vs_raw"] is None
    assert m["retrieval"]["adapted"] is None and m["retrieval"]["bm25"] is None and m["retrieval"]["mse_baseline"] is None
    assert m["ci95"]["adapted"] is None
    assert m["threshold_accuracy"]["weak"]["adapted"] is None and m["threshold_accuracy"]["weak"]["raw"] is not None
    assert "No adapter was given" in (out / "report.md").read_text()


# -- errors ---------------------------------------------------------------------------------------------

def test_adapter_of_another_model_is_refused(tiny, tmp_path, capsys):
    info = Store(tiny["store"]).model_info(MODEL)
    other = _perturbed_adapter("other", "query", info, 0.0, seed=0)
    other.config.base_model = "all-MiniLM-L6-v2"
    path = save_adapter(other, tmp_path / "other")
    rc = main(["--store", str(tiny["store"]), "--out", str(tmp_path / "o"), "--adapter", str(path)])
    assert rc == 2
    assert "all-MiniLM-L6-v2" in capsys.readouterr().err


def test_queries_without_qrels_is_a_usage_error(tiny, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--store", str(tiny["store"]), "--out", str(tmp_path), "--queries", str(tmp_path / "q.jsonl")])
    assert exc.value.code == 2


def test_heldout_files_with_nothing_to_score_fail_clearly(tiny, tmp_path, capsys):
    (tmp_path / "q.jsonl").write_text(json.dumps({"_id": "a", "text": "what is love"}) + "\n")
    (tmp_path / "r.tsv").write_text("query-id\tcorpus-id\tscore\na\tp_unknown\t1\n")
    rc = main(["--store", str(tiny["store"]), "--out", str(tmp_path / "o"),
               "--queries", str(tmp_path / "q.jsonl"), "--qrels", str(tmp_path / "r.tsv")])
    assert rc == 2
    assert "nothing to score" in capsys.readouterr().err


def test_missing_store_says_how_to_build_one(tmp_path, capsys):
    assert main(["--store", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "embedfit ingest" in capsys.readouterr().err


def test_heldout_with_almost_nothing_usable_is_refused_with_the_reasons(tiny, tmp_path, capsys):
    """Issue 9 case 5: 50 of 51 queries unusable used to exit 0 with a report on one query."""
    store = Store(tiny["store"])
    queries, qrels = store.load_queries(), store.load_qrels()
    qid = next(q for q in store.split_query_ids("test") if q in qrels)
    rows = [{"_id": qid, "text": queries[qid]}] + [{"_id": f"x{i}", "text": f"question number {i}"} for i in range(50)]
    (tmp_path / "q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pid = next(iter(qrels[qid]))
    (tmp_path / "r.tsv").write_text("query-id\tcorpus-id\tscore\n" + f"{qid}\t{pid}\t1\n"
                                    + "".join(f"x{i}\tp_not_in_this_store\t1\n" for i in range(50)))
    argv = ["--store", str(tiny["store"]), "--out", str(tmp_path / "o"), "--queries", str(tmp_path / "q.jsonl"),
            "--qrels", str(tmp_path / "r.tsv"), "--no-mse-baseline", "--no-plots", "--no-hnsw", "--no-bm25",
            "--bootstrap-resamples", "100"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "only 1 of the 51 queries can be scored" in err
    assert "qrels_row_for_passage_not_in_store 50" in err and "query_without_usable_qrels 50" in err
    assert not (tmp_path / "o").exists()
    assert main(argv + ["--min-queries", "1", "--min-usable", "0"]) == 0  # the user can still ask for it
    assert json.loads((tmp_path / "o" / "metrics.json").read_text())["n_queries"] == 1


def _oracle_fuse(dense: dict, lexical: dict, method: str, w: float, n: int = 100, k_rrf: int = 60) -> list[str]:
    """The fusion rule of embedfit.retrieval.fusion's docstring, written again: top n of each side, normalised per query
    (or 1/(k + rank)), a side's missing passage at that side's lowest value, weight w on BM25."""
    def top(sc):
        return sorted(sc.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def side(sc):
        t = top(sc)
        if not t:
            return {}
        if method == "rrf":
            return {p: 1.0 / (k_rrf + r) for r, (p, _) in enumerate(t, start=1)}
        v = np.array([x for _, x in t], dtype=np.float64)
        z = (v - v.mean()) / v.std() if method == "zscore" and v.std() > 0 else (
            (v - v.min()) / (v.max() - v.min()) if method == "minmax" and v.max() > v.min() else np.zeros_like(v))
        return {p: float(x) for (p, _), x in zip(t, z)}

    d, lx = side(dense), side(lexical)
    fd, fl = (min(d.values()) if d else 0.0), (min(lx.values()) if lx else 0.0)
    fused = {p: (1 - w) * d.get(p, fd) + w * lx.get(p, fl) for p in set(d) | set(lx)}
    return [p for p, _ in sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))]


def test_hybrids_match_an_oracle_fusion(tiny, full_run):
    """raw+BM25 (the fusion the report says it used) and raw RRF: numpy's exact ranking and BM25 from the
    formula (tests/test_bm25.py), fused by the rule written out above, scored by hand."""
    from test_bm25 import oracle_bm25

    store, pids, P, qvec = _store_arrays(tiny["store"])
    qrels, queries, corpus = store.load_qrels(), store.load_queries(), store.load_corpus()
    qids = full_run["details"]["models"][MODEL]["query_ids"]
    S = _unit(np.stack([qvec[q] for q in qids])) @ _unit(P).T
    bm25 = oracle_bm25(corpus)
    m = full_run["metrics"]
    for key in ("raw_bm25", "raw_rrf"):
        f = m["fusion"][key]
        mrr = []
        for i, qid in enumerate(qids):
            dense = {pids[j]: float(S[i, j]) for j in range(len(pids))}
            ranked = _oracle_fuse(dense, bm25(queries[qid]), f["method"], f["weight"], f["n"], f["rrf_k"])
            rel = {p for p, r in qrels[qid].items() if r > 0}
            mrr.append(next((1.0 / r for r, p in enumerate(ranked[:10], start=1) if p in rel), 0.0))
        assert m["retrieval"][key]["MRR@10"] == pytest.approx(float(np.mean(mrr)), abs=1e-9), key


def test_report_names_the_best_system_and_what_each_step_adds(full_run):
    text = full_run["report"]
    assert "**Best system on these queries:" in text and "→ +BM25" in text and "→ +adapter:" in text
    assert "Only the dense systems have it" in text


def test_seen_unseen_sizes_match_the_store(tiny, full_run):
    """Counted by hand from the store's files: a test query is seen when every relevant passage of it is a
    positive of a train query. None is, and the report gives the true reason (not a split policy the store did not use)."""
    store = Store(tiny["store"])
    qrels, splits = store.load_qrels(), store.load_splits()
    trained = {p for q, s in splits.items() if s == "train" for p, r in qrels.get(q, {}).items() if r > 0}
    qids = full_run["details"]["models"][MODEL]["query_ids"]
    seen = [q for q in qids if {p for p, r in qrels[q].items() if r > 0} <= trained]
    m = full_run["metrics"]
    assert m["seen_unseen"]["n"] == {"seen": len(seen), "unseen": len(qids) - len(seen)} == {"seen": 0, "unseen": len(qids)}
    unseen = m["seen_unseen"]["adapted"]["unseen"]
    assert unseen["means"]["MRR@10"] == pytest.approx(m["retrieval"]["adapted"]["MRR@10"])  # all of them
    # the true reason: this small store is split at random (its repeat questions are rare), not grouped
    assert store.split_policy()["by"] == "random"
    assert m["seen_reason"].startswith("This store was split at random, and still none of these")
    assert m["seen_reason"] in full_run["report"] and "grouped" not in m["seen_reason"]
