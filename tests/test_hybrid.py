"""Hybrid search wiring on a real 300-query store: ingest chooses the raw+BM25 fusion on dev and saves it,
adapter training chooses its own, `--lexical-only` brings an older store up to date, and test queries
never choose anything."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from embedfit.adapters.config import TrainConfig
from embedfit.adapters.io import load_adapter, save_adapter
from embedfit.adapters.train import train_adapter
from embedfit.embed import load_embedder
from embedfit.evaluation.config import EvalConfig
from embedfit.evaluation.evaluate import run_eval
from embedfit.pipeline.cli import main as ingest_main
from embedfit.retrieval.fusion import fusion_path, load_raw_fusion
from embedfit.search.retriever import Retriever
from embedfit.store import chroma_store, query_vectors
from embedfit.store.store import Store

MODEL = "all-MiniLM-L6-v2"


def _dev_mrr_raw(store: Store) -> float:
    """MRR@10 of raw exact search on the judged dev queries, by numpy (the oracle for `dev_dense_only`)."""
    qrels, splits = store.load_qrels(), store.load_splits()
    ids, Q = query_vectors.load(store.root, MODEL)
    dump = chroma_store.fetch_all(store.raw_collection(MODEL))
    P = dump.embeddings / np.linalg.norm(dump.embeddings, axis=1, keepdims=True)
    pids = np.array(dump.ids)
    total, n = 0.0, 0
    for i, q in enumerate(ids):
        if splits.get(q) != "dev" or not qrels.get(q):
            continue
        s = P @ (Q[i] / np.linalg.norm(Q[i]))
        ranked = pids[np.lexsort((pids, -s))][:10]
        total += next((1 / (r + 1) for r, p in enumerate(ranked) if qrels[q].get(p, 0) > 0), 0.0)
        n += 1
    return total / n


def test_ingest_saves_a_raw_fusion_chosen_on_dev(small_store):
    cfg, summary = small_store
    store = Store(cfg.store)
    choice = load_raw_fusion(store.root, MODEL, store.manifest()["data_fingerprint"])
    assert choice is not None and choice.split == "dev" and choice.metric == "MRR@10"
    splits, qrels = store.load_splits(), store.load_qrels()
    assert choice.n_queries == sum(1 for q, s in splits.items() if s == "dev" and qrels.get(q))
    assert choice.dense_only == pytest.approx(_dev_mrr_raw(store), abs=1e-6)  # weight 0 is raw itself
    assert choice.score >= choice.dense_only and len(choice.grid) == 22
    assert summary["fusion"]["method"] == choice.spec.method and summary["fusion"]["reused"] is False


def test_test_queries_never_choose(small_store, tmp_path):
    """Scramble every test-split judgement: the choice, made on dev, must not move."""
    cfg, _ = small_store
    copy = tmp_path / "store"
    shutil.copytree(cfg.store, copy, ignore=shutil.ignore_patterns(".store.lock"))
    store = Store(copy)
    before = json.loads(fusion_path(copy, MODEL).read_text())
    splits = store.load_splits()
    qrels_path = store.dataset_dir / "qrels.tsv"
    lines = qrels_path.read_text().splitlines()
    pids = sorted(store.load_corpus())
    scrambled = [lines[0]] + [f"{q}\t{pids[i % len(pids)]}\t{r}" if splits.get(q) == "test" else line
                              for i, line in enumerate(lines[1:]) for q, _, r in [line.split("\t")]]
    qrels_path.write_text("\n".join(scrambled) + "\n")
    fusion_path(copy, MODEL).unlink()
    assert ingest_main(["--store", str(copy), "--lexical-only"]) == 0
    after = json.loads(fusion_path(copy, MODEL).read_text())
    assert {k: after[k] for k in ("method", "weight", "dev_score", "grid")} == \
           {k: before[k] for k in ("method", "weight", "dev_score", "grid")}


def test_lexical_only_brings_an_older_store_up_to_date(small_store, tmp_path, capsys):
    cfg, _ = small_store
    copy = tmp_path / "store"
    shutil.copytree(cfg.store, copy, ignore=shutil.ignore_patterns(".store.lock", "lexical", "fusion"))
    assert load_raw_fusion(copy, MODEL) is None
    assert ingest_main(["--store", str(copy), "--lexical-only"]) == 0
    out = capsys.readouterr().out
    assert "BM25 index: built" in out and f"raw+BM25 fusion ({MODEL}): chosen on dev" in out
    assert json.loads(fusion_path(copy, MODEL).read_text())["grid"] == \
           json.loads(fusion_path(cfg.store, MODEL).read_text())["grid"]
    assert ingest_main(["--store", str(copy), "--lexical-only"]) == 0  # a second run keeps both
    assert "kept (chosen on dev before, same data)" in capsys.readouterr().out


def test_a_trained_adapter_records_its_fusion(small_store):
    cfg, _ = small_store
    store = Store(cfg.store)
    res = train_adapter(store, TrainConfig(store=cfg.store, model=MODEL, epochs=2, batch_size=64))
    f = res.adapter.config.fusion
    assert f is not None and f["chosen_on"] == "dev" and f["metric"] == "MRR@10"
    assert res.adapter.fusion.method in ("zscore", "minmax") and 0.0 <= res.adapter.fusion.weight <= 1.0
    # weight 0 is the adapter alone: its dev score is the selected epoch's (identity: raw's)
    assert f["dev_dense_only"] == pytest.approx(res.adapter.config.dev_metrics["selected"]["MRR@10"], abs=1e-9)
    assert f["dev_score"] >= f["dev_dense_only"]
    assert res.adapter.config.training["split"] == {"by": cfg.split_by, "seed": cfg.seed, "fractions": list(cfg.split)}


def test_eval_and_the_app_rank_hybrids_the_same(small_store, tmp_path):
    """The shared-layer property: for the same question, the page's hybrid column (the Retriever: Chroma + the
    store's BM25 index + embedfit.retrieval.fusion) shows eval's hybrid top 10 (exact search + the same index and fusion)."""
    cfg, _ = small_store
    store = Store(cfg.store)
    res = train_adapter(store, TrainConfig(store=cfg.store, model=MODEL, epochs=2, batch_size=64))
    save_adapter(res.adapter, tmp_path / "ad")
    outcome = run_eval(EvalConfig(store=cfg.store, out=tmp_path / "report", adapters=[tmp_path / "ad"],
                                  models=[MODEL], mse_baseline=False, hnsw=False, plots=False,
                                  bootstrap_resamples=100)).outcome
    systems = outcome.models[0].systems
    embedder = load_embedder(MODEL)
    queries = store.load_queries()
    qids = outcome.models[0].query_ids[:15]
    for adapter, key in ((None, "raw_bm25"), (load_adapter(tmp_path / "ad"), "adapted_bm25")):
        r = Retriever(store, MODEL, adapter, embedder=embedder)
        for qid in qids:
            page = [h.id for h in r.search(queries[qid], 10).hybrid.hits]
            assert page == list(systems[key].results[qid])[:10], (key, qid)


def test_a_resplit_store_chooses_its_fusion_again(small_store, tmp_path):
    """`--split-by grouped` on the same (randomly split) data: splits.json says so, and the raw+BM25 fusion chosen
    on the old dev split is not reused (it is chosen again on the new one)."""
    cfg, _ = small_store
    copy = tmp_path / "store"
    shutil.copytree(cfg.store, copy, ignore=shutil.ignore_patterns(".store.lock"))
    before = json.loads(fusion_path(copy, MODEL).read_text())
    args = ["--data", str(cfg.data), "--store", str(copy), "--model", MODEL, "--limit", str(cfg.limit),
            "--cache", str(cfg.cache_dir), "--split-by", "grouped"]
    assert cfg.split_by == "random" and ingest_main(args) == 0
    meta = json.loads((copy / "splits.json").read_text())
    assert meta["by"] == "grouped" and meta["seed"] == cfg.seed
    after = json.loads(fusion_path(copy, MODEL).read_text())
    assert after["dev_sha"] != before["dev_sha"]
    assert after["n_dev_queries"] == sum(1 for q, s in Store(copy).load_splits().items()
                                         if s == "dev" and Store(copy).load_qrels().get(q))


def test_an_adapter_whose_fusion_was_chosen_against_an_older_bm25(small_store, tmp_path):
    """An adapter trained by the release before stemming (its fusion saved with no record of the BM25 it was
    chosen against): eval chooses its fusion again on dev and says why; the page keeps serving the old weight and
    warns, naming the command that chooses again. A current adapter gets neither."""
    cfg, _ = small_store
    store = Store(cfg.store)
    res = train_adapter(store, TrainConfig(store=cfg.store, model=MODEL, epochs=1, batch_size=64))
    save_adapter(res.adapter, tmp_path / "current")
    shutil.copytree(tmp_path / "current", tmp_path / "old")
    config_path = tmp_path / "old" / "config.json"
    config = json.loads(config_path.read_text("utf-8"))
    del config["fusion"]["lexical"]
    config_path.write_text(json.dumps(config), "utf-8")

    def eval_notes(adapter_dir) -> list[str]:
        outcome = run_eval(EvalConfig(store=cfg.store, out=tmp_path / f"report-{adapter_dir.name}",
                                      adapters=[adapter_dir], models=[MODEL], mse_baseline=False, hnsw=False,
                                      plots=False, bootstrap_resamples=100)).outcome
        return [n for n in outcome.models[0].notes if "BM25 fusion" in n]

    assert any("older BM25" in n and "retrain the adapter" in n for n in eval_notes(tmp_path / "old"))
    assert eval_notes(tmp_path / "current") == []
    old = Retriever(store, MODEL, load_adapter(tmp_path / "old"), embedder=load_embedder(MODEL))
    assert old.fusion is not None and any("older BM25" in w and "embedfit train" in w for w in old.warnings)
    current = Retriever(store, MODEL, load_adapter(tmp_path / "current"), embedder=load_embedder(MODEL))
    assert not any("older BM25" in w for w in current.warnings)
