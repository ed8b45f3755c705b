"""The store's BM25 index (`embedfit.retrieval.lexical`): built once by ingest, saved, loaded without re-tokenizing,
rebuilt only when the corpus changes, refused when missing, damaged or stale, and `--lexical-only`.

The oracle for "the saved index is right" is a fresh in-memory build of the same corpus (itself checked
against the BM25 formula in test_bm25.py): a loaded index must give identical ids, order and scores."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, build_small_store

import embedfit.retrieval.lexical as lexical
from embedfit.errors import StoreError
from embedfit.pipeline.ingest import build_lexical, format_summary, run_ingest
from embedfit.retrieval.lexical import LEXICAL_DIR, bm25_search, build_index, load_index, save_index
from embedfit.store import chroma_store
from embedfit.store.store import Store
from embedfit.types import Passage, corpus_fingerprint

MODEL = "paraphrase-MiniLM-L3-v2"


def read_nq(nq_dir: Path, n_queries: int = 200):
    corpus = {}
    with open(nq_dir / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            corpus[row["id"]] = Passage(row["title"], row["text"])
    queries = {}
    with open(nq_dir / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            queries[row["id"]] = row["text"]
            if len(queries) == n_queries:
                break
    return corpus, queries


@pytest.fixture(scope="module")
def nq_index(nq_dir, tmp_path_factory):
    """The whole shared NQ corpus (8.5k passages), 200 real queries, a fresh index and its saved folder."""
    corpus, queries = read_nq(nq_dir)
    fresh = build_index(corpus, corpus_fingerprint(corpus))
    folder = tmp_path_factory.mktemp("nq") / LEXICAL_DIR
    save_index(fresh, folder)
    return corpus, queries, fresh, folder


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(cfg, summary) of a small real store; tests that damage it work on a copy (`copy_store`)."""
    return build_small_store(tmp_path_factory.mktemp("lex"), model=MODEL, limit=60)


def copy_store(cfg, tmp_path) -> Path:
    dst = tmp_path / "store"
    shutil.copytree(cfg.store, dst, ignore=shutil.ignore_patterns(".store.lock"))
    return dst


def run_cli(*args):
    env = {**os.environ, "NQ_DATA": "/nonexistent/nq"}  # --lexical-only must not need the data
    return subprocess.run([sys.executable, "-m", "embedfit", "ingest", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=env)


# -- the index itself ------------------------------------------------------------------------------------

def test_saved_index_ranks_exactly_as_a_fresh_one_on_real_nq(nq_index):
    corpus, queries, fresh, folder = nq_index
    loaded = load_index(folder, corpus_fingerprint(corpus))
    assert loaded.ids == sorted(corpus) and loaded.fingerprint == fresh.fingerprint
    want, got = fresh.search_queries(queries, 100), loaded.search_queries(queries, 100)
    assert list(got) == list(queries)
    for qid in queries:
        assert list(got[qid].items()) == list(want[qid].items()), qid  # same ids, order and scores
    assert sum(len(r) for r in got.values()) > 150 * 100 * 0.9  # real queries do find passages
    assert bm25_search(corpus, queries, k=100) == want  # one BM25 implementation


def test_loading_does_not_tokenize_the_corpus(nq_index, monkeypatch):
    corpus, queries, _, folder = nq_index
    seen: list[int] = []
    real = lexical.tokenize

    def counting(texts):
        seen.append(len(texts))
        return real(texts)

    monkeypatch.setattr(lexical, "tokenize", counting)
    index = load_index(folder)
    assert seen == []
    index.search(list(queries.values())[:3], 10)
    assert seen == [3]  # the queries only


def test_ranking_rules_on_a_toy():
    # five identical passages: every score ties, so the order (and the cut at k) is by id
    corpus = {pid: Passage("River", "the river flows") for pid in ("p3", "p1", "p4", "p0", "p2")}
    corpus["q"] = Passage("Tea", "hot tea")
    index = build_index(corpus, corpus_fingerprint(corpus))
    assert list(index.search(["river"], 3)[0]) == ["p0", "p1", "p2"]
    assert list(index.search(["river tea"], 1000)[0]) == ["q", "p0", "p1", "p2", "p3", "p4"]  # k > corpus
    assert index.search(["", "the and of", "   ", "zzzz"], 5) == [{}, {}, {}, {}]
    assert index.search([], 5) == [] and index.search_queries({}, 5) == {}
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError):
            index.search(["river"], bad)


def test_a_failed_save_keeps_the_old_index(nq_index, tmp_path, monkeypatch):
    corpus, queries, fresh, _ = nq_index
    folder = tmp_path / LEXICAL_DIR
    save_index(fresh, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fresh.bm25, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_index(fresh, folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == [LEXICAL_DIR]  # no temporary folder left behind
    monkeypatch.undo()
    assert load_index(folder).search_queries(queries, 10) == fresh.search_queries(queries, 10)


def damage_flip(folder: Path) -> None:
    path = folder / "data.csc.index.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage,message", [
    (damage_flip, "does not match its checksum"),
    (lambda f: (f / "vocab.index.json").unlink(), "vocab.index.json is missing"),
    (lambda f: (f / "index.json").write_text("{not json", "utf-8"), "index.json is unreadable"),
    (lambda f: (f / "index.json").write_text('{"ids": ["a"], "n": 2}', "utf-8"), "lacks consistent"),
    (lambda f: (f / "index.json").unlink(), "no BM25 index"),
    (lambda f: shutil.rmtree(f), "no BM25 index"),
])
def test_damaged_index_is_a_clear_store_error(nq_index, tmp_path, damage, message):
    corpus, _, fresh, _ = nq_index
    folder = tmp_path / LEXICAL_DIR
    save_index(fresh, folder)
    damage(folder)
    with pytest.raises(StoreError, match=message):
        load_index(folder, corpus_fingerprint(corpus))


def test_stale_index_is_refused(nq_index):
    *_, folder = nq_index
    with pytest.raises(StoreError, match="stale.*built for data"):
        load_index(folder, "0123456789abcdef")


# -- the index in a store ----------------------------------------------------------------------------------

def test_ingest_builds_the_index_with_the_store(store):
    cfg, s = store
    st = Store(cfg.store)
    manifest = st.require(s["model"])
    assert s["lexical"]["reused"] is False and s["lexical"]["n"] == s["passages"]
    assert "lexical_index" in s["seconds"]
    assert manifest["lexical"] == {"fingerprint": manifest["data_fingerprint"], "n": s["passages"]}
    meta = json.loads((st.lexical_dir / "index.json").read_text("utf-8"))
    assert meta["fingerprint"] == manifest["data_fingerprint"] and meta["n"] == s["passages"]
    corpus, queries = st.load_corpus(), st.load_queries()
    index = st.lexical_index()
    assert index is st.lexical_index()  # loaded once per Store
    assert index.search_queries(queries, 100) == bm25_search(corpus, queries, k=100)


def test_reingest_reuses_the_index_and_a_changed_corpus_rebuilds_it(store, tmp_path, caplog):
    cfg, first = store
    root = copy_store(cfg, tmp_path)
    cfg = dataclasses.replace(cfg, store=root)
    folder = Store(root).lexical_dir
    stamps = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    with caplog.at_level(logging.INFO):
        again = run_ingest(cfg)
    assert again["lexical"]["reused"] is True
    assert any("BM25 index" in r.message and "reused" in r.message for r in caplog.records)
    assert "BM25 index: reused" in format_summary(again)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == stamps
    changed = run_ingest(dataclasses.replace(cfg, limit=40))
    assert changed["lexical"]["reused"] is False and changed["data_fingerprint"] != first["data_fingerprint"]
    st = Store(root)
    index = st.lexical_index()
    assert index.fingerprint == changed["data_fingerprint"] == st.manifest()["data_fingerprint"]
    assert index.ids == sorted(st.load_corpus())
    with pytest.raises(StoreError, match="stale"):
        load_index(folder, first["data_fingerprint"])


def test_store_without_index_names_the_command_that_builds_it(store, tmp_path):
    cfg, _ = store
    root = copy_store(cfg, tmp_path)
    shutil.rmtree(root / LEXICAL_DIR)
    manifest = json.loads((root / "manifest.json").read_text("utf-8"))
    manifest.pop("lexical")  # a store from before ingest built the index
    (root / "manifest.json").write_text(json.dumps(manifest), "utf-8")
    with pytest.raises(StoreError, match=f"embedfit ingest --store {root} --lexical-only"):
        Store(root).lexical_index()

    # Chroma's own files are left out of the byte comparison: opening a PersistentClient (which reading the
    # vectors for the fusion choice takes, as eval and the app do) rewrites chroma.sqlite3's bookkeeping
    # pages; what it holds is compared below instead
    chroma_dir = root / "chroma"
    others = {p: p.read_bytes() for p in root.rglob("*")
              if p.is_file() and p.name != "manifest.json" and chroma_dir not in p.parents}
    before = chroma_store.fetch_all(Store(root).raw_collection(cfg.model))
    chroma_store.release_locks()
    r = run_cli("--store", str(root), "--lexical-only")
    assert r.returncode == 0, r.stderr
    assert "BM25 index" in r.stdout and "built" in r.stdout
    assert {p: p.read_bytes() for p in others} == others  # nothing else touched
    after_dump = chroma_store.fetch_all(Store(root).raw_collection(cfg.model))
    assert after_dump.ids == before.ids and np.array_equal(after_dump.embeddings, before.embeddings)
    assert {p for p in root.rglob("*") if p.is_file() and chroma_dir not in p.parents
            and p.name != ".store.lock"} - set(others) == {
        root / "manifest.json", *(root / LEXICAL_DIR).iterdir()}
    after = json.loads((root / "manifest.json").read_text("utf-8"))
    assert after.pop("lexical") == {"fingerprint": manifest["data_fingerprint"], "n": manifest["n_passages"]}
    assert after == manifest

    st = Store(root)
    corpus, queries = st.load_corpus(), st.load_queries()
    assert st.lexical_index().search_queries(queries, 50) == bm25_search(corpus, queries, k=50)
    again = build_lexical(root)
    assert again["lexical"]["reused"] is True


def test_damaged_or_stale_store_index_is_a_store_error_and_lexical_only_repairs_it(store, tmp_path):
    cfg, _ = store
    root = copy_store(cfg, tmp_path)
    damage_flip(root / LEXICAL_DIR)
    with pytest.raises(StoreError, match="damaged.*\n.*--lexical-only"):
        Store(root).lexical_index()
    assert build_lexical(root)["lexical"]["reused"] is False
    Store(root).lexical_index()

    manifest = json.loads((root / "manifest.json").read_text("utf-8"))
    (root / "manifest.json").write_text(json.dumps({**manifest, "data_fingerprint": "0" * 16}), "utf-8")
    with pytest.raises(StoreError, match="stale.*\n.*--lexical-only"):
        Store(root).lexical_index()
    with pytest.raises(StoreError, match="does not match the manifest"):
        build_lexical(root)  # the dataset is not what the manifest says: only a full ingest can fix that


def test_an_older_releases_index_and_fusion_are_rebuilt_and_chosen_again(store, tmp_path):
    """A store from the release before stemming: its index (format 1: unstemmed, k1 1.5, b 0.75) is refused with a
    message naming the repair, `--lexical-only` rebuilds it, and the raw+BM25 fusion chosen against the old BM25
    (saved with no record of which BM25) is chosen again instead of being kept."""
    cfg, _ = store
    root = copy_store(cfg, tmp_path)
    meta_path = root / LEXICAL_DIR / "index.json"
    meta = json.loads(meta_path.read_text("utf-8"))
    meta["format_version"] = 1
    meta["params"] = {**meta["params"], "tokenizer": {**meta["params"]["tokenizer"], "stemmer": None}, "k1": 1.5,
                      "b": 0.75}
    meta_path.write_text(json.dumps(meta), "utf-8")
    fusions = sorted((root / "fusion").glob("*.json"))
    assert fusions
    for path in fusions:
        old = json.loads(path.read_text("utf-8"))
        del old["lexical"]
        path.write_text(json.dumps(old), "utf-8")
    with pytest.raises(StoreError, match="another version of embedfit.*\n.*--lexical-only"):
        Store(root).lexical_index()
    out = build_lexical(root)
    assert out["lexical"]["reused"] is False
    assert all(f["reused"] is False for f in out["fusion"].values()), out["fusion"]
    assert Store(root).lexical_index().search_queries({"q": "what is a volcano"}, 5) is not None
    assert build_lexical(root)["lexical"]["reused"] is True  # and now it is current


@pytest.mark.parametrize("make", ["missing", "empty", "foreign", "file"])
def test_lexical_only_refuses_what_is_not_a_store(tmp_path, make):
    target = tmp_path / "s"
    if make == "empty":
        target.mkdir()
    elif make == "foreign":
        target.mkdir()
        (target / "notes.txt").write_text("mine", "utf-8")
    elif make == "file":
        target.write_text("x", "utf-8")
    r = run_cli("--store", str(target), "--lexical-only")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "store" in r.stderr and str(target) in r.stderr
    assert not (tmp_path / "s" / LEXICAL_DIR).exists()
