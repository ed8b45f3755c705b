"""Writing the adapter-projected collection: raw stored vectors -> adapter -> `adapted-<name>-<uid>`.

No re-embedding: the raw vectors are read back from Chroma. The collection's metadata carries
`adapter_sha` (`embedfit.adapters.io.adapter_sha` of the adapter folder) and each row a `projection_key`
(`adapter_sha:text_sha`), so a rerun skips rows already projected by this very adapter (idempotent,
resumable after a crash) and a retrained adapter re-projects everything.

`projection_problem` is the one staleness check: the app's Retriever refuses a stale projection, eval
skips its Chroma (HNSW) figures with the same reason.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from embedfit.adapters.adapter import Adapter
from embedfit.adapters.io import adapter_sha, check_compatible, is_adapter_dir, load_adapter, save_adapter
from embedfit.errors import EmbedfitError, InputError, MismatchError, StoreError
from embedfit.store import chroma_store
from embedfit.store.store import Store

log = logging.getLogger(__name__)


def project_collection(store: Store, adapter: Adapter, adapter_sha: str, batch: int = 2000) -> dict:
    """Upsert projected vectors of every raw passage; returns counts."""
    c = adapter.config
    if adapter.collection_name is None:
        raise InputError(f"adapter {c.name!r} adapts queries only (no query memory): passages keep their raw vectors, "
                         "nothing to project. "
                         "eval and the app apply it to query vectors.")
    info = store.model_info(c.base_model)
    check_compatible(adapter, c.base_model, int(info["dim"]), info["data_fingerprint"])
    raw = store.raw_collection(c.base_model)
    log.info("project: reading the raw vectors of %s", raw.name)
    dump = chroma_store.fetch_all(raw, with_documents=True, with_metadatas=True)
    col = chroma_store.ensure_collection(
        store.client, adapter.collection_name,
        {"kind": "adapted", "adapter": c.name, "base_model": c.base_model, "dim": c.dim_out,
         "raw_collection": raw.name, "adapter_sha": adapter_sha, "data_fingerprint": info["data_fingerprint"]},
        check_keys=("kind", "base_model", "dim"),
    )
    have = chroma_store.existing_ids(col, "projection_key")
    keys = [f"{adapter_sha}:{(m or {}).get('text_sha', '')}" for m in dump.metadatas]
    todo = [i for i, pid in enumerate(dump.ids) if have.get(pid) != keys[i]]
    stale = sorted(set(have) - set(dump.ids))
    if stale:
        chroma_store.delete_ids(col, store.client, stale)
    log.info("project: writing %d of %d vectors to %s", len(todo), len(dump.ids), adapter.collection_name)
    # All rows go through the adapter, then the missing ones are picked: a matrix product over a handful of rows
    # can round differently from the same rows inside a big one, and a resumed run must write the very bits
    # of an uninterrupted one.
    vectors = adapter.project_passages(dump.embeddings, dump.ids)[todo] if todo else np.zeros((0, c.dim_out), np.float32)
    metas = [{**(dump.metadatas[i] or {}), "projection_key": keys[i]} for i in todo]
    chroma_store.upsert_batched(col, store.client, [dump.ids[i] for i in todo], vectors,
                                documents=[dump.documents[i] for i in todo], metadatas=metas,
                                desc=f"project -> {adapter.collection_name}")
    chroma_store.set_metadata(col, {"adapter_sha": adapter_sha, "data_fingerprint": info["data_fingerprint"]})
    return {"collection": adapter.collection_name, "projected": len(todo), "deleted": len(stale),
            "unchanged": len(dump.ids) - len(todo), "count": col.count()}


def save_and_project(store: Store, adapter: Adapter, out: Path, project: bool = True, force: bool = False,
                     extra_files: dict[str, bytes] | None = None) -> dict | None:
    """Save `adapter` to `out` and, when it moves passages, write its projected collection; returns the counts.

    Nothing the user had is lost on the way: the store's write lock is taken before anything is written (a store
    in use by the app or another trainer refuses here, with the previous adapter untouched); the new collection
    (named by the adapter's own uid) is projected from the complete saved folder *before* that folder replaces
    the previous adapter, so a failed projection leaves the previous adapter and its collection as they were;
    only after the swap is the previous adapter's own collection (replaced with it) deleted.
    """
    previous = _collection_of(out)
    moves = project and adapter.moves_passages
    wstore = None
    if moves or (project and previous):  # the caller's store when it already writes: one client, one lock
        wstore = store if store.write else Store(store.root, store.chroma_host, store.chroma_port, write=True)
    if wstore is not None:
        wstore.client  # noqa: B018 - the exclusive lock, now: refuse before anything is replaced
    counts: dict = {}

    def project_first(tmp: Path) -> None:
        if moves:
            counts.update(project_collection(wstore, load_adapter(tmp), adapter_sha(tmp)))

    try:
        save_adapter(adapter, out, extra_files=extra_files, force=force, before_publish=project_first)
    except BaseException:
        if counts:  # projected, then the swap failed: the new collection belongs to no adapter
            chroma_store.delete_collection(wstore.client, counts["collection"])
        raise
    if wstore is not None and previous and previous != adapter.collection_name:
        if chroma_store.delete_collection(wstore.client, previous):
            log.info("deleted %s, the projected collection of the adapter %s replaced", previous, out)
    return counts or None


def _collection_of(adapter_dir: Path) -> str | None:
    """The projected collection of the adapter saved at `adapter_dir`, if one is there and readable."""
    if not is_adapter_dir(adapter_dir):
        return None
    try:
        return load_adapter(adapter_dir).collection_name
    except EmbedfitError:
        return None


def reproject_command(store: Store, adapter_dir: str | None = None) -> str:
    return f"embedfit project --store {store.root} --adapter {adapter_dir or 'ADAPTER_DIR'}"


def projection_problem(store: Store, adapter: Adapter, adapter_sha: str | None,
                       adapter_dir: str | None = None) -> StoreError | MismatchError | None:
    """Why the adapter's projected collection cannot be searched, or None when it can.

    It must exist, hold one vector per raw passage, and (when `adapter_sha` is given) have been written by
    this very version of the adapter: a retrained but not re-projected adapter would otherwise search
    stale vectors without a word. The error names the command that fixes it.
    """
    c = adapter.config
    name = adapter.collection_name
    if name is None:
        return None
    fix = reproject_command(store, adapter_dir)
    col = chroma_store.get_collection(store.client, name)
    if col is None:
        return StoreError(f"adapter {c.name!r} projects passages too, but its collection {name!r} is not in the "
                          f"store; build it with: {fix}")
    have = (col.metadata or {}).get("adapter_sha")
    if adapter_sha and have is not None and have != adapter_sha:
        return MismatchError(f"collection {name!r} was projected by another version of adapter {c.name!r} "
                             f"(adapter_sha {have} != {adapter_sha}); re-project it: {fix}")
    n_raw, n_adapted = store.raw_collection(c.base_model).count(), col.count()
    if n_adapted != n_raw:
        return StoreError(f"collection {name!r} holds {n_adapted} vectors but the raw collection {n_raw}; "
                          f"finish the projection: {fix}")
    return None
