"""Real `kill -9` of real child processes (ingest, adapter saving, projection) at random points, then a rerun:
the result must be exactly that of an uninterrupted run. A few points only, so that `make test` stays fast;
`scripts/fault_inject.py` runs the full count with the same functions.

Oracles: an uninterrupted reference run of the same command (bit-for-bit comparison of collections, side files
and cache), the two known adapters of the save loop, and the app's own refusal check for projections.
"""
from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
from conftest import nq_data_dir

from scripts import fault_inject as fi

MODEL = "paraphrase-MiniLM-L3-v2"


@pytest.fixture(scope="module")
def figures(tmp_path_factory, artifacts_dir):
    work = tmp_path_factory.mktemp("faults")
    out = fi.run(ingest_kills=3, save_kills=2, project_kills=2, limit=120, model=MODEL, seed=7, work=work,
                 data=nq_data_dir(), truncate_every=1, log=lambda *_: None)
    (artifacts_dir / "crash_safety.json").write_text(json.dumps(out, indent=2, default=str), encoding="utf-8")
    out["work"] = work
    return out


def test_killed_ingest_reruns_to_exactly_the_uninterrupted_store(figures):
    trials = figures["trials"]["ingest"]
    assert [t["target"] for t in trials] == ["embedding", "upsert", "mining"]
    assert sum(t["killed"] for t in trials) >= 2, trials  # the kills hit running processes
    for t in trials:
        assert t["rerun_exit"] == 0, t
        assert t["diff"] == [], t  # ids, documents, metadata, embeddings, side files, manifest, cache
        assert t["duplicates"] == 0
        assert t["after_kill_damaged_chunks"] == 0  # atomic chunk writes: a kill never leaves a torn chunk
        assert t["ok"], t


def test_a_truncated_cache_chunk_is_detected_and_redone(figures):
    truncated = [t for t in figures["trials"]["ingest"] if t.get("truncated_chunk")]
    assert truncated, "no trial had a chunk to truncate"
    assert all(t["truncation_detected"] and t["ok"] for t in truncated), truncated


def test_killed_adapter_save_leaves_a_whole_adapter(figures):
    trials = figures["trials"]["adapter_save"]
    for t in trials:
        assert t["killed"] and t["saves_completed"] >= 1, t
        assert t["loaded"] in t["allowed"], t  # the previous adapter, or the new one once its rename happened
        assert t["leftovers_after_next_save"] == 0, t
        assert t["ok"], t


def test_killed_projection_is_refused_until_rerun_then_exact(figures):
    trials = figures["trials"]["projection"]
    assert [t["over_old_projection"] for t in trials] == [False, True]
    for t in trials:
        assert t["killed"], t
        assert t["check_after_kill"].startswith("refused") or t["complete_after_kill"], t
        assert t["rerun_exit"] == 0 and t["diff"] == [] and t["check_after_rerun"] == "accepted", t


def test_a_resumed_projection_writes_the_bits_of_an_uninterrupted_one(figures, tmp_path):
    """A projection that resumes with a few rows left computes them as part of the whole matrix: a product over
    three rows rounds differently from the same rows inside a big one (this test failed before that fix)."""
    from adapter.io import load_adapter, weights_sha
    from adapter.project import project_collection
    from core import chroma_store
    from core.store import Store

    shutil.copytree(figures["work"] / "base" / "store", tmp_path / "store")
    ad_dir = figures["work"] / "adapters" / "new"
    ad, sha = load_adapter(ad_dir), weights_sha(ad_dir)
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
