"""Real `kill -9` of real child processes (ingest, adapter saving, projection) at seeded random points, then a
rerun: the result on disk must be exactly that of an uninterrupted run. A few points only, so that `make test`
stays fast; `scripts/fault_inject.py` runs the full count.

The script's process tools (`Child`: start a command, wait for a log line, SIGKILL it) start and kill the
children; every verdict is made here, by reading what is on disk, never from the script's own report:
- ingest: the rerun store opened with the store reader and compared with an uninterrupted reference store,
  ids counted against the store's own corpus file, cache chunks loaded after the kill;
- adapter saving: the folder loaded with the real loader and compared, tensor by tensor, with clean saves
  of the two adapters the child alternates between;
- projection: the app's refusal check after the kill, then the rerun collection against a reference
  projection and against the adapter's matrix applied to the raw vectors with numpy.
"""
from __future__ import annotations

import json
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import nq_data_dir

from embedfit.store import chroma_store, query_vectors
from embedfit.store.store import Store
from scripts import fault_inject as fi

MODEL = "paraphrase-MiniLM-L3-v2"
LIMIT = 120
SIDE_FILES = ("dataset/corpus.jsonl", "dataset/queries.jsonl", "dataset/qrels.tsv", "dataset/same_doc.json",
              "splits.json")
PROJECTED = "adapted-fault-both-" + fi.fault_uid("fault-both")


def read_collection(root: Path, name: str) -> dict | None:
    """A collection of the store at `root` as plain arrays sorted by id (None when it does not exist)."""
    store = Store(root)
    try:
        col = chroma_store.get_collection(store.client, name)
        if col is None:
            return None
        d = chroma_store.fetch_all(col, with_documents=True, with_metadatas=True)
        order = sorted(range(len(d.ids)), key=lambda i: d.ids[i])
        return {"count": col.count(), "ids": [d.ids[i] for i in order],
                "documents": [d.documents[i] for i in order], "metadatas": [d.metadatas[i] for i in order],
                "embeddings": np.asarray(d.embeddings)[order]}
    finally:
        if store._client is not None:
            store._client.close()
        chroma_store.release_locks()


def read_store(root: Path) -> dict:
    """Everything an ingest leaves, read from disk: the raw collection, side files, query vectors, manifest."""
    manifest = json.loads((root / "manifest.json").read_text("utf-8"))
    info = manifest["models"][MODEL]
    info.pop("ingested_at", None)
    corpus_ids = [json.loads(line)["_id"] for line in (root / "dataset" / "corpus.jsonl").open(encoding="utf-8")]
    qids, qvecs = query_vectors.load(root, MODEL)
    negatives = sorted((root / "negatives").glob("*.jsonl"))
    return {"collection": read_collection(root, info["collection"]), "corpus_ids": corpus_ids,
            "files": {rel: (root / rel).read_bytes() for rel in SIDE_FILES},
            "negatives": [p.read_bytes() for p in negatives], "query_vectors": (qids, qvecs), "manifest": manifest}


def assert_same_collection(got: dict | None, want: dict) -> None:
    assert got is not None
    assert got["count"] == len(got["ids"]) == len(set(got["ids"])) == len(want["ids"])  # no duplicates, none lost
    assert got["ids"] == want["ids"]
    assert got["documents"] == want["documents"] and got["metadatas"] == want["metadatas"]
    assert np.array_equal(got["embeddings"], want["embeddings"])  # bit for bit


def cache_rejects(cache: Path, tmp: Path, dim: int = 384) -> tuple[int, int]:
    """(chunks the cache refuses, vectors it serves), read from a copy (opening a cache deletes damaged chunks)."""
    from embedfit.embed.cache import EmbeddingCache

    copy = tmp / f"cache-copy-{time.monotonic_ns()}"
    shutil.copytree(cache, copy)
    c = EmbeddingCache(copy, MODEL, dim)
    return c.rejected_files, len(c)


@pytest.fixture(scope="module")
def ref(tmp_path_factory, artifacts_dir):
    """An uninterrupted ingest (`reference`, read; `base`, a pristine copy trials start from), with when each
    step started and how long it took; the trials' records are written to artifacts/tests/crash_safety.json."""
    work = tmp_path_factory.mktemp("faults")
    child = fi.run_to_end(fi.ingest_args(nq_data_dir(), work / "reference" / "store", work / "reference" / "cache",
                                         MODEL, LIMIT), fi.INGEST_MARKERS)
    shutil.copytree(work / "reference", work / "base")
    summary = json.loads((work / "reference" / "store" / "ingest_summary.json").read_text("utf-8"))
    records: dict[str, list] = {"ingest": [], "adapter_save": [], "projection": []}
    yield {"work": work, "seen": dict(child.seen), "seconds": summary["seconds"],
           "snapshot": read_store(work / "reference" / "store"), "records": records, "rng": random.Random(7)}
    (artifacts_dir / "crash_safety.json").write_text(json.dumps(records, indent=2, default=str), encoding="utf-8")


@pytest.mark.parametrize("phase, truncate", [("embedding", True), ("upsert", False), ("mining", False)])
def test_killed_ingest_reruns_to_exactly_the_uninterrupted_store(ref, tmp_path, phase, truncate):
    trial = tmp_path / "trial"
    store, cache = trial / "store", trial / "cache"
    trial.mkdir()
    if phase != "embedding":  # reach upsert/mining in seconds: the embedding phase has its own trial
        shutil.copytree(ref["work"] / "base" / "cache", cache)
    args = fi.ingest_args(nq_data_dir(), store, cache, MODEL, LIMIT)
    steps = fi.PHASE_STEPS[phase]
    delay = ref["rng"].uniform(0.0, max(sum(ref["seconds"][s] for s in steps), 0.005))
    child = fi.Child(args, fi.INGEST_MARKERS)
    assert child.wait_for(steps[0]), child.output[-2000:]
    time.sleep(delay)
    last, killed = child.kill()
    record = {"phase": phase, "landed": last, "killed": killed, "delay_s": round(delay, 4)}
    ref["records"]["ingest"].append(record)
    assert killed, record  # the kill hit a running ingest

    # atomic chunk writes: whatever the kill interrupted, no chunk on disk is torn
    if cache.exists():
        assert cache_rejects(cache, tmp_path)[0] == 0, record
    if truncate:  # what a non-atomic writer or a bad disk leaves: the cache must notice and embed the batch again
        victim = fi.truncate_a_chunk(cache, ref["rng"])
        assert victim is not None, "no chunk written before the kill"
        assert cache_rejects(cache, tmp_path)[0] == 1

    rerun = fi.Child(args, fi.INGEST_MARKERS)
    assert rerun.finish() == 0, rerun.output[-3000:]
    want, got = ref["snapshot"], read_store(store)
    assert_same_collection(got["collection"], want["collection"])
    assert got["collection"]["ids"] == sorted(got["corpus_ids"])  # one vector per passage of the store's corpus
    assert got["files"] == want["files"] and got["negatives"] == want["negatives"]
    assert got["query_vectors"][0] == want["query_vectors"][0]
    assert np.array_equal(got["query_vectors"][1], want["query_vectors"][1])
    assert got["manifest"] == want["manifest"]
    rejected, n_cached = cache_rejects(cache, tmp_path)
    assert rejected == 0 and n_cached == cache_rejects(ref["work"] / "base" / "cache", tmp_path)[1]


# -- adapter saving ----------------------------------------------------------------------------------------------

def same_adapter(a, b) -> bool:
    """Same config and the same tensors, bit for bit."""
    sa, sb = a.module.state_dict(), b.module.state_dict()
    return a.config == b.config and sa.keys() == sb.keys() and all(np.array_equal(sa[k].numpy(), sb[k].numpy()) for k in sa)


@pytest.fixture(scope="module")
def clean_saves(tmp_path_factory):
    """The two adapters the save loop alternates between, each saved once without interruption and read back."""
    from embedfit.adapters.io import load_adapter

    root = tmp_path_factory.mktemp("clean-saves")
    out = {}
    for name in ("A", "B"):
        fi.save_named(root / name, name)
        out[name] = load_adapter(root / name)
    assert not same_adapter(out["A"], out["B"])
    return out


@pytest.mark.parametrize("trial", [0, 1])
def test_killed_adapter_save_leaves_a_whole_adapter(ref, clean_saves, tmp_path, trial):
    from embedfit.adapters.io import load_adapter

    folder = tmp_path / "save" / "adapter"
    folder.parent.mkdir()
    child = fi.Child([sys.executable, str(Path(fi.__file__).resolve()), "save-loop", str(folder)],
                     {r"^ready A": "end A", r"^begin A": "begin A", r"^end A": "end A",
                      r"^begin B": "begin B", r"^end B": "end B"})
    assert child.wait_for("end A", timeout=120), child.output[-2000:]
    delay = ref["rng"].uniform(0.0, 0.6)
    time.sleep(delay)
    last, killed = child.kill()
    state, name = last.split()
    allowed = {name} if state == "end" else {"A", "B"}  # mid-save: the new adapter or the one before it
    got = load_adapter(folder)  # the reader the app and eval use
    matches = [n for n, want in clean_saves.items() if same_adapter(got, want)]
    ref["records"]["adapter_save"].append({"trial": trial, "landed": last, "killed": killed, "delay_s": round(delay, 4),
                                           "loaded": matches})
    assert killed
    assert len(matches) == 1 and matches[0] in allowed, (last, matches)  # whole, and one of the two: never a mix
    fi.save_named(folder, "A")  # the next save clears what the killed one left
    assert list(folder.parent.glob(".adapter.*")) == []
    assert same_adapter(load_adapter(folder), clean_saves["A"])


# -- projection --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def proj(ref):
    """Two both-sides adapters of one name (new, old), a store projected by `new` without interruption (the
    reference) and a pristine store already holding `old`'s projection."""
    from embedfit.adapters.io import adapter_sha, save_adapter

    work = ref["work"]
    info = ref["snapshot"]["manifest"]["models"][MODEL]
    meta = {"data_fingerprint": info["data_fingerprint"], "raw_collection": info["collection"], "base_model": MODEL}
    new = save_adapter(fi.demo_adapter(11, name="fault-both", **meta), work / "adapters" / "new")
    old = save_adapter(fi.demo_adapter(10, name="fault-both", **meta), work / "adapters" / "old")
    full = work / "project-reference"
    shutil.copytree(work / "base" / "store", full)
    child = fi.run_to_end(fi.project_args(full, new), fi.PROJECT_MARKERS)
    with_old = work / "project-base-old"
    shutil.copytree(work / "base" / "store", with_old)
    fi.run_to_end(fi.project_args(with_old, old), fi.PROJECT_MARKERS)
    return {"new": new, "sha": adapter_sha(new), "with_old": with_old, "seen": dict(child.seen),
            "reference": read_collection(full, PROJECTED), "dim": info["dim"]}


def served_check(store_root: Path, proj: dict) -> str:
    """What the check the app and eval run says about the store's projection: 'accepted' or the refusal."""
    from embedfit.adapters.io import load_adapter
    from embedfit.errors import EmbedfitError
    from embedfit.search.retriever import check_adapter

    store = Store(store_root)
    try:
        check_adapter(store, MODEL, proj["dim"], load_adapter(proj["new"]), proj["sha"])
        return "accepted"
    except EmbedfitError as exc:
        return f"refused: {type(exc).__name__}"
    finally:
        if store._client is not None:
            store._client.close()
        chroma_store.release_locks()


def test_the_reference_projection_is_the_adapter_matrix_applied_to_the_raw_vectors(ref, proj):
    from safetensors.numpy import load_file

    state = load_file(str(proj["new"] / "model.safetensors"))
    w = state["base"] + state["delta"]
    raw = ref["snapshot"]["collection"]
    want = raw["embeddings"] @ w
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    got = proj["reference"]
    assert got["ids"] == raw["ids"] and got["documents"] == raw["documents"]
    assert np.allclose(got["embeddings"], want, atol=1e-5)
    assert not np.allclose(got["embeddings"], raw["embeddings"], atol=1e-3)  # the adapter really moved them


@pytest.mark.parametrize("over_old, when", [(False, 0.0), (True, 0.5)])
def test_killed_projection_is_refused_until_rerun_then_exact(ref, proj, tmp_path, over_old, when):
    """Killed as the write starts (`when` 0) or up to half-way through the reference's write time (0.5)."""
    store = tmp_path / "store"
    shutil.copytree(proj["with_old"] if over_old else ref["work"] / "base" / "store", store)
    args = fi.project_args(store, proj["new"])
    window = proj["seen"].get("done", proj["seen"]["upsert"] + 0.05) - proj["seen"]["upsert"]
    delay = ref["rng"].uniform(0.0, max(window * when, 0.0))
    child = fi.Child(args, fi.PROJECT_MARKERS)
    assert child.wait_for("upsert"), child.output[-2000:]
    time.sleep(delay)
    last, killed = child.kill()
    after_kill = read_collection(store, PROJECTED)
    served = served_check(store, proj)
    complete = after_kill is not None and after_kill["ids"] == proj["reference"]["ids"] and \
        np.array_equal(after_kill["embeddings"], proj["reference"]["embeddings"])
    ref["records"]["projection"].append({"over_old": over_old, "landed": last, "killed": killed,
                                         "delay_s": round(delay, 4), "served_after_kill": served,
                                         "complete_after_kill": complete})
    assert killed
    # a half-written collection is never served: accepted only when it already equals the reference
    assert served.startswith("refused") or (served == "accepted" and complete), (served, complete)

    rerun = fi.Child(args, fi.PROJECT_MARKERS)
    assert rerun.finish() == 0, rerun.output[-3000:]
    assert_same_collection(read_collection(store, PROJECTED), proj["reference"])
    assert_same_collection(read_collection(store, ref["snapshot"]["manifest"]["models"][MODEL]["collection"]),
                           ref["snapshot"]["collection"])  # the raw vectors untouched
    assert served_check(store, proj) == "accepted"


def test_a_resumed_projection_writes_the_bits_of_an_uninterrupted_one(ref, proj, tmp_path):
    """A projection that resumes with a few rows left computes them as part of the whole matrix: a product over
    three rows rounds differently from the same rows inside a big one (this test failed before that fix)."""
    from embedfit.adapters.io import adapter_sha, load_adapter
    from embedfit.adapters.project import project_collection

    shutil.copytree(ref["work"] / "base" / "store", tmp_path / "store")
    ad = load_adapter(proj["new"])
    sha = adapter_sha(proj["new"])
    store = Store(tmp_path / "store", write=True)
    try:
        project_collection(store, ad, sha)
        col = store.collection(ad.collection_name)
        full = chroma_store.fetch_all(col)
        gone = random.Random(0).sample(full.ids, 3)
        col.delete(ids=gone)
        counts = project_collection(store, ad, sha)
        assert counts["projected"] == 3
        resumed = chroma_store.fetch_all(store.collection(ad.collection_name))
        assert resumed.ids == full.ids
        assert np.array_equal(resumed.embeddings, full.embeddings)
    finally:
        store.client.close()
        chroma_store.release_locks()
