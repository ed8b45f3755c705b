"""The whole ingest on real NQ rows: counts, idempotence, resume after interruption, guards, bad input."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import REPO, build_small_store

from embedfit.embed.base import Embedder
from embedfit.errors import DataError, MismatchError, OfflineError
from embedfit.pipeline.config import IngestConfig
from embedfit.pipeline.ingest import run_ingest
from embedfit.store import chroma_store
from embedfit.store.store import Store


class HashEmbedder(Embedder):
    """Deterministic text -> vector (Chroma's own test trick), for guards that need no real model."""

    default_batch_size = 8

    def __init__(self, model_id: str, dim: int):
        self.model_id, self.dim = model_id, dim

    def _embed_batch(self, texts):
        return np.stack([np.random.default_rng(int(hashlib.sha1(t.encode()).hexdigest()[:8], 16)).standard_normal(self.dim)
                         for t in texts])


class FailingAfter(Embedder):
    """A real embedder that dies after `n` batches (like a crash in the middle of embedding)."""

    def __init__(self, inner: Embedder, n: int):
        self.inner, self.left = inner, n
        self.model_id, self.dim, self.default_batch_size = inner.model_id, inner.dim, inner.default_batch_size

    def _embed_batch(self, texts):
        if self.left == 0:
            raise RuntimeError("simulated crash")
        self.left -= 1
        return self.inner._embed_batch(texts)


def dump(store_root, model_id):
    store = Store(store_root)
    d = chroma_store.fetch_all(store.raw_collection(model_id), with_documents=True, with_metadatas=True)
    return d


def test_small_store_is_consistent(small_store):
    cfg, s = small_store
    store = Store(cfg.store)
    manifest = store.require(s["model"])
    assert s["collection_count"] == s["passages"] == manifest["n_passages"]
    assert sum(s["queries_per_split"].values()) == s["queries"] == manifest["n_queries"] == cfg.limit
    # the encoder build is recorded (an fp32 model's build is its name) in the manifest and the collection
    assert store.model_info(s["model"])["encoder"] == s["model"] == store.raw_collection(s["model"]).metadata["encoder"]
    qrels = store.load_qrels()
    examples = store.load_examples(s["model"])
    assert {e.query_id for e in examples} == set(store.load_queries())
    corpus = store.load_corpus()
    for e in examples:
        assert set(e.positive_ids) == set(qrels[e.query_id])
        assert not set(e.hard_ids) & set(e.positive_ids) and not set(e.weak_ids) & set(e.positive_ids)
        assert set(e.hard_ids) <= set(corpus) and len(e.weak_ids) == cfg.k_weak
    d = dump(cfg.store, s["model"])
    assert d.ids == sorted(corpus) and len(set(d.ids)) == len(d.ids)
    assert [m["title"] for m in d.metadatas] == [corpus[i].title for i in d.ids]
    assert d.documents == [corpus[i].text for i in d.ids]
    np.testing.assert_allclose(np.linalg.norm(d.embeddings, axis=1), 1.0, atol=1e-5)
    assert store.lexical_index().ids == sorted(corpus)  # the BM25 index is built with the store
    col = store.raw_collection(s["model"])
    assert col.configuration["hnsw"]["space"] == "cosine"
    assert col.metadata["model_id"] == s["model"] and col.metadata["dim"] == 384


def test_reingest_same_data_changes_nothing(tmp_path):
    cfg, first = build_small_store(tmp_path, model="paraphrase-MiniLM-L3-v2", limit=120)
    before = dump(cfg.store, first["model"])
    splits_before = (cfg.store / "splits.json").read_text()
    negatives_before = Store(cfg.store).negatives_path(first["model"]).read_text()
    lexical_before = {p.name: p.read_bytes() for p in Store(cfg.store).lexical_dir.iterdir()}
    second = run_ingest(cfg)
    assert second["passages_embedded_now"] == 0 and second["queries_embedded_now"] == 0
    assert first["lexical"]["reused"] is False and second["lexical"]["reused"] is True  # BM25 index kept
    assert {p.name: p.read_bytes() for p in Store(cfg.store).lexical_dir.iterdir()} == lexical_before
    assert second["rows_upserted"] == 0 and second["rows_deleted"] == 0
    after = dump(cfg.store, first["model"])
    assert after.ids == before.ids and after.documents == before.documents and after.metadatas == before.metadatas
    assert np.array_equal(after.embeddings, before.embeddings)
    assert (cfg.store / "splits.json").read_text() == splits_before
    assert Store(cfg.store).negatives_path(first["model"]).read_text() == negatives_before


def test_interrupted_embedding_resumes_and_matches_uninterrupted_run(tmp_path):
    from embedfit.embed import load_embedder

    real = load_embedder("paraphrase-MiniLM-L3-v2")
    ref_cfg, ref = build_small_store(tmp_path / "ref", model="paraphrase-MiniLM-L3-v2", limit=120)
    cfg = dataclasses.replace(ref_cfg, store=tmp_path / "crash" / "store", cache_dir=tmp_path / "crash" / "cache")
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_ingest(cfg, embedder=FailingAfter(real, 2))
    assert not (cfg.store / "manifest.json").exists()  # not marked complete
    resumed = run_ingest(cfg, embedder=real)
    batch = real.default_batch_size
    assert resumed["passages_embedded_now"] == ref["passages"] - 2 * batch  # two batches were kept
    a, b = dump(ref_cfg.store, ref["model"]), dump(cfg.store, ref["model"])
    assert a.ids == b.ids and a.documents == b.documents and np.array_equal(a.embeddings, b.embeddings)


def test_other_dimension_into_existing_collection_is_refused(small_store, tmp_path):
    cfg, s = build_small_store(tmp_path, model="paraphrase-MiniLM-L3-v2", limit=30)
    before = dump(cfg.store, s["model"])
    with pytest.raises(MismatchError, match="dim"):
        run_ingest(dataclasses.replace(cfg, cache_dir=None), embedder=HashEmbedder(s["model"], 16))
    after = dump(cfg.store, s["model"])
    assert np.array_equal(after.embeddings, before.embeddings) and after.ids == before.ids


@pytest.mark.parametrize("content,expected", [
    ('{"query": "q1", "passage": "some passage text here"}\n{"query": "q2", "pass', r":2: not valid JSON"),
    ('{"query": 5.5, "passage": "text text text"}\n', r":1: field 'query' must be a string"),
    ("", "empty file"),
    ('["not", "an", "object"]\n', r":1: expected a JSON object"),
    ('{"foo": 1}\n', "cannot tell the format"),
])
def test_bad_pairs_file_errors_name_file_and_line_and_write_nothing(tmp_path, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    cfg = IngestConfig(data=str(path), store=tmp_path / "store", cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match=expected) as err:
        run_ingest(cfg, embedder=HashEmbedder("hash", 8))
    assert str(path) in str(err.value)
    assert not (tmp_path / "store").exists()


def test_bom_and_crlf_pairs_file_loads(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"query": "who wrote hamlet", "passage": "Hamlet is a tragedy written by William Shakespeare .", "title": "Hamlet"},
            {"query": "capital of france", "passage": "Paris is the capital and largest city of France ."}]
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(json.dumps(r) for r in rows).encode() + b"\r\n\r\n")
    cfg = IngestConfig(data=str(path), store=tmp_path / "store", cache_dir=None, split=(0.5, 0.0, 0.5))
    s = run_ingest(cfg, embedder=HashEmbedder("hash", 8))
    assert s["source_kind"] == "pairs" and s["queries"] == 2 and s["passages"] == 2
    corpus = Store(cfg.store).load_corpus()
    assert "Hamlet is a tragedy written by William Shakespeare." in [p.text for p in corpus.values()]


def test_default_hub_dataset_fails_fast_offline(tmp_path, monkeypatch):
    for offline in ("1", None):
        if offline:
            monkeypatch.setenv("HF_DATASETS_OFFLINE", offline)
        else:
            monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
            monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        cfg = IngestConfig(data="sentence-transformers/natural-questions", store=tmp_path / "store")
        t0 = time.perf_counter()
        with pytest.raises(OfflineError, match="EMBEDFIT_DATA"):
            run_ingest(cfg, embedder=HashEmbedder("hash", 8))
        assert time.perf_counter() - t0 < 20
        assert not (tmp_path / "store").exists()


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "embedfit", "ingest", *args], cwd=REPO, capture_output=True, text=True, timeout=120, env=env)


def test_cli_errors_are_one_clear_line(tmp_path):
    r = run_cli("--data", str(tmp_path / "nope.jsonl"), "--store", str(tmp_path / "s"))
    assert r.returncode == 2 and "no such file or folder" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("--data", str(REPO.parent / "shared/data/nq"), "--store", str(tmp_path / "s"), "--model", "bogus")
    assert r.returncode == 2 and "all-MiniLM-L6-v2" in r.stderr and "paraphrase-MiniLM-L3-v2" in r.stderr
    assert not (tmp_path / "s" / "manifest.json").exists()


def test_simplified_source_ingests_with_same_document_negatives(nq_dir, tmp_path):
    cfg = IngestConfig(data=str(nq_dir / "simplified_sample.jsonl"), store=tmp_path / "store", cache_dir=None,
                       split=(1.0, 0.0, 0.0))
    s = run_ingest(cfg, embedder=HashEmbedder("hash", 8))
    assert s["source_kind"] == "simplified" and s["queries"] == 1 and s["skipped"]["no_long_answer"] == 1
    (example,) = Store(cfg.store).load_examples("hash")
    assert example.query_id == "nq_5328212470870865242"
    assert len(example.same_doc_ids) >= 5 and not set(example.same_doc_ids) & set(example.positive_ids)
    assert s["passages"] == 1 + len(Store(cfg.store).load_same_doc()[example.query_id])
