"""`python -m scripts.bench --quick`: a smoke-size run that every part of the benchmark works and
writes what the README table is built from. The real numbers come from a full run (`make bench`),
never from a timed test.

Oracles: the test's own clock around the run, known delays slipped into the timed work (each must show in
the figure that times it, and only there), numpy's percentiles, and a README table written out by hand.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from embedfit.store import chroma_store
from scripts.bench import main, markdown_table, percentiles

DELAY_S = 1.0  # added to one ingest step and to training
EMBED_DELAY_MS = 20.0  # added to every query embedding of the latency part


def slowed(fn, seconds: float):
    def wrapper(*args, **kwargs):
        time.sleep(seconds)
        return fn(*args, **kwargs)
    return wrapper


def test_quick_bench_times_the_work_it_reports(nq_dir, tmp_path, monkeypatch, capsys):
    import embedfit.pipeline.ingest
    import scripts.bench
    from embedfit.search.retriever import Retriever

    monkeypatch.setenv("NQ_DATA", str(nq_dir))
    monkeypatch.setattr(embedfit.pipeline.ingest, "mine_negatives", slowed(embedfit.pipeline.ingest.mine_negatives, DELAY_S))
    monkeypatch.setattr(scripts.bench, "train_adapter", slowed(scripts.bench.train_adapter, DELAY_S))
    monkeypatch.setattr(Retriever, "embed", slowed(Retriever.embed, EMBED_DELAY_MS / 1000))
    out = tmp_path / "bench.json"
    t0 = time.perf_counter()
    rc = main(["--quick", "--model", "paraphrase-MiniLM-L3-v2", "--out", str(out), "--work-dir", str(tmp_path / "work")])
    wall = time.perf_counter() - t0
    assert rc == 0
    r = json.loads(out.read_text())
    i, t, lat = r["ingest"], r["training"], r["search_latency_ms"]

    # every timed part happened inside the run the test timed, one after the other
    assert i["pipeline_seconds"] + i["bare_seconds"] + t["seconds"] < r["total_seconds"] <= wall + 0.05  # rounded to 0.1 s
    # the delays show where they were put: in the pipeline (not the bare model), in training, in the embed part
    assert i["pipeline_steps_seconds"]["mine_negatives"] >= DELAY_S
    assert i["pipeline_seconds"] >= DELAY_S + i["pipeline_steps_seconds"]["embed_passages"]
    assert i["bare_seconds"] < i["pipeline_seconds"] - DELAY_S / 2
    assert i["ratio"] < 1 and i["meets_target"] is False  # a pipeline slowed by a second cannot keep up
    assert t["seconds"] >= DELAY_S and t["epochs_run"] >= 1
    assert lat["parts"]["embed"]["p50"] >= EMBED_DELAY_MS and lat["parts"]["raw_search"]["p50"] < EMBED_DELAY_MS
    for col in ("raw", "adapted", "hybrid", "all"):  # every column the page shows, and one whole search
        assert EMBED_DELAY_MS <= lat[col]["p50"] <= lat[col]["p95"] <= lat[col]["p99"]
    assert lat["queries"] == lat["all"]["n"] == lat["hybrid"]["n"] == lat["parts"]["lexical"]["n"] == 10  # --quick
    # the trained adapter carries the fusion training chose on dev: the hybrid column is "Adapter + BM25"
    assert lat["hybrid_fusion"]["label"] == "Adapter + BM25" and lat["hybrid_fusion"]["method"] in ("zscore", "minmax")
    # the BM25 query is a part of the hybrid column, which is a part of the whole search
    lexical = lat["parts"]["lexical"]
    assert 0 < lexical["p50"] <= lexical["p95"] and lat["hybrid"]["p50"] >= lexical["p50"] + EMBED_DELAY_MS
    assert lexical["p50"] + lat["parts"]["fuse"]["p50"] <= lat["all"]["p50"]
    assert lat["all"]["p50"] >= lat["adapted"]["p50"]
    lx = lat["lexical_index"]
    assert lx["passages"] == lat["corpus_passages"] == i["passages"] and lx["build_seconds"] > 0 and lx["load_ms"] > 0

    (scale,) = r["chroma_scale"]
    assert scale["n"] == 2000 and 0.5 <= scale["ann_recall@10"] <= 1.0 and scale["peak_rss_mb"] > 0
    # the collection was built with the product's HNSW settings (read back from Chroma), and searched with its beam
    assert {k: scale["hnsw"][k] for k in chroma_store.HNSW} == chroma_store.HNSW
    assert [e["ef_search"] for e in scale["ef_search_sweep"]] == [chroma_store.HNSW["ef_search"]]
    assert scale["ann_recall@10"] == scale["ef_search_sweep"][0]["ann_recall@10"]
    assert "training and latency ran on the benchmark's own" in " ".join(r["notes"])
    assert markdown_table(r) in capsys.readouterr().out


def test_percentiles_are_numpy_percentiles():
    p = percentiles(list(range(1, 101)))
    assert p["p50"] == 50.5 and p["p95"] == 95.05 and p["p99"] == 99.01 and p["n"] == 100
    sample = np.random.default_rng(0).lognormal(2.0, 0.5, 333)
    q = percentiles(sample.tolist())
    for name, pct in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert q[name] == pytest.approx(np.percentile(sample, pct), abs=0.005)
    assert q["mean"] == pytest.approx(sample.mean(), abs=0.005)


def test_markdown_table_for_a_known_result():
    r = {"ingest": {"model": "m", "passages": 100, "pipeline_passages_per_s": 50.0, "bare_model": "encode",
                    "bare_passages_per_s": 52.0, "ratio": 0.9612, "target": 0.95, "meets_target": True},
         "training": {"seconds": 12.5, "settings": "linear, sides=query", "n_train_queries": 200, "epochs_run": 3,
                      "target": 10.0, "meets_target": False},
         "search_latency_ms": {"corpus_passages": 1000, "raw": {"p50": 1, "p95": 2, "p99": 3},
                               "adapted": {"p50": 2, "p95": 3, "p99": 4}, "hybrid": {"p50": 3, "p95": 4, "p99": 5},
                               "hybrid_fusion": {"label": "Adapter + BM25", "method": "zscore"},
                               "all": {"p50": 5, "p95": 6, "p99": 7}, "parts": {"lexical": {"p50": 0.4, "p95": 0.6}},
                               "lexical_index": {"passages": 1000, "build_seconds": 0.25, "load_ms": 3.5, "disk_mb": 0.4},
                               "target_p95_all_ms": 25.0, "meets_target": True},
         "chroma_scale": [{"n": 10000, "query_ms": {"p50": 0.5, "p95": 0.9, "p99": 1.2}, "ann_recall@10": 0.987,
                           "insert_vectors_per_s": 4000.0, "insert_seconds": 2.4, "peak_rss_mb": 300.0, "disk_mb": 50.0,
                           "hnsw": {"space": "cosine", "max_neighbors": 32, "ef_construction": 200, "ef_search": 200},
                           "ef_search_sweep": [{"ef_search": 100, "ann_recall@10": 0.9512, "query_ms": {"p50": 0.4, "p95": 0.7}},
                                               {"ef_search": 200, "ann_recall@10": 0.987, "query_ms": {"p50": 0.5, "p95": 0.9}}]},
                          {"n": 1000000, "skipped": "too slow"}]}
    assert markdown_table(r).splitlines() == [
        "| measure | value | target | met |",
        "|---|---:|---:|:---:|",
        "| ingest, whole pipeline (m, 100 passages) | 50.0 passages/s | | |",
        "| bare model on the same texts (encode) | 52.0 passages/s | | |",
        "| pipeline / bare model | 0.961 | ≥ 0.95 | yes |",
        "| adapter training (linear, sides=query, 200 train queries, 3 epochs) | 12.5 s | ≤ 10.0 s | **no** |",
        "| search latency, raw column (embed included, 1000 passages) | p50 1 / p95 2 / p99 3 ms |  |  |",
        "| search latency, adapted column (embed included, 1000 passages) | p50 2 / p95 3 / p99 4 ms |  |  |",
        "| search latency, hybrid column (Adapter + BM25) (embed included, 1000 passages) | p50 3 / p95 4 / p99 5 ms |  |  |",
        "| search latency, all columns, one search (embed included, 1000 passages) | p50 5 / p95 6 / p99 7 ms | p95 ≤ 25.0 ms | yes |",
        "| BM25 query alone | p50 0.4 / p95 0.6 ms | | |",
        "| BM25 index of 1000 passages | build 0.25 s; load 3.5 ms; disk 0.4 MB | | |",
        "| Chroma, 10,000 synthetic vectors, HNSW M 32 / ef_construction 200 / ef_search 200 | query p50 0.5 / p95 0.9 / "
        "p99 1.2 ms; ANN recall@10 0.987; insert 4000/s (2 s); peak RSS 300 MB; disk 50 MB | | |",
        "| same collection, other ef_search | 100: recall@10 0.951, p50 0.4 / p95 0.7 ms | | |",
        "| Chroma, 1,000,000 synthetic vectors | skipped: too slow | | |",
    ]


def test_a_partial_run_keeps_the_other_parts_of_an_existing_file(tmp_path):
    out = tmp_path / "bench.json"
    out.write_text(json.dumps({"generated_at": "2020-01-01T00:00:00+00:00", "ingest": {"ratio": 0.5},
                               "chroma_scale": [{"n": 1}]}))
    assert main(["--quick", "--parts", "scale", "--out", str(out), "--work-dir", str(tmp_path / "w")]) == 0
    r = json.loads(out.read_text())
    assert r["ingest"] == {"ratio": 0.5, "measured_at": "2020-01-01T00:00:00+00:00"}  # kept, dated
    assert [c["n"] for c in r["chroma_scale"]] == [2000] and "measured_at" in r["chroma_scale"][0]  # replaced
    assert "training" not in r and any("other parts come from an earlier run" in n for n in r["notes"])
