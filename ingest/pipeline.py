"""The ingest run: load -> clean/filter -> limit -> split -> embed (cached) -> upsert -> mine -> manifest.

Everything that can fail on bad input (loading, validation) happens before the store is touched. Each
later step is idempotent and writes atomically, and the manifest is written last, so an interrupted
run is finished by running the same command again: cached batches are not re-embedded, rows already in
Chroma with the same content are not re-written.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Iterator


from core import atomic, chroma_store, query_vectors
from core.embedding import EmbeddingCache, embed_cached, load_embedder
from core.embedding.base import Embedder
from core.outputs import check_output
from core.store import STORE_OUTPUT, Store, raw_collection_name
from core.errors import DataError
from core.types import SPLITS, Dataset, corpus_fingerprint, text_sha
from ingest.config import IngestConfig
from ingest.filters import apply_limit, filter_by_length
from ingest.negatives import mine_negatives
from ingest.sources import SourceKind, detect_source, load_source
from ingest.split import split_queries

log = logging.getLogger(__name__)


class _Timer:
    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        log.info("step: %s", name)
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - t0, 3)


def load_dataset_for(cfg: IngestConfig, kind: SourceKind | None = None) -> Dataset:
    """Load, clean, length-filter and limit: the pure part of ingest (no store writes)."""
    ds = load_source(cfg.data, cfg.min_words, cfg.max_words, limit=cfg.limit, kind=kind)
    ds = filter_by_length(ds, cfg.min_words, cfg.max_words)
    ds = apply_limit(ds, cfg.limit)
    if not ds.queries:
        raise DataError(f"no usable queries after cleaning and filtering (skipped: {ds.skipped})", cfg.data)
    return ds


def run_ingest(cfg: IngestConfig, embedder: Embedder | None = None) -> dict:
    """Run every step; returns the summary (also saved as STORE/ingest_summary.json)."""
    timer = _Timer()
    t_start = time.perf_counter()
    check_output(cfg.store, STORE_OUTPUT, cfg.force, option="--store")  # a wrong --store costs a message, not data
    # the model loads in the background while the data is read (both take seconds); a bad file is
    # still reported first, and its error does not wait for the model
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest")
    try:
        model_future = None if embedder is not None else pool.submit(load_embedder, cfg.model)
        with timer.step("load"):
            kind = detect_source(cfg.data)
            ds = load_dataset_for(cfg, kind)
        with timer.step("split"):
            splits = split_queries(ds.queries, ds.qrels, cfg.split, cfg.seed)
        with timer.step("load_model"):
            embedder = embedder or model_future.result()
        return _store_and_embed(cfg, ds, kind, splits, embedder, timer, t_start, pool)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def _store_and_embed(cfg: IngestConfig, ds: Dataset, kind: str, splits: dict, embedder: Embedder,
                     timer: _Timer, t_start: float, pool: ThreadPoolExecutor) -> dict:
    store = Store(cfg.store, cfg.chroma_host, cfg.chroma_port, write=True)
    client = store.client  # takes the lock now: refuse early if another process writes (or the server is down)
    store.root.mkdir(parents=True, exist_ok=True)
    store.mark()
    fingerprint = corpus_fingerprint(ds.corpus)
    pids = sorted(ds.corpus)
    qids = sorted(ds.queries)
    texts = [ds.corpus[p].embedding_text() for p in pids]
    shas = [text_sha(t) for t in texts]
    name = raw_collection_name(embedder.model_id)
    with timer.step("check_collection"):  # another model or dimension is refused before any work
        col = chroma_store.ensure_collection(
            client, name,
            {"kind": "raw", "model_id": embedder.model_id, "dim": embedder.dim, "data_fingerprint": fingerprint},
            check_keys=("kind", "model_id", "dim"),
        )
        have = chroma_store.existing_ids(col, "text_sha")
    with timer.step("save_dataset"):
        store.save_dataset(ds)
        store.save_splits(splits, {"seed": cfg.seed, "fractions": list(cfg.split), "data_fingerprint": fingerprint})

    cache = EmbeddingCache(cfg.cache_dir, embedder.model_id, embedder.dim) if cfg.cache_dir else None
    with timer.step("embed_passages"):
        pvecs, pstats = embed_cached(embedder, texts, "passage", cache, cfg.batch_size, desc="embed passages")
    todo = [i for i, p in enumerate(pids) if have.get(p) != shas[i]]
    stale = sorted(set(have) - set(pids))

    def upsert() -> tuple[int, float]:
        log.info("step: upsert")
        t0 = time.perf_counter()
        if stale:
            log.warning("removing %d passages no longer in the data from %s", len(stale), name)
            chroma_store.delete_ids(col, client, stale)
        chroma_store.upsert_batched(
            col, client, [pids[i] for i in todo], pvecs[todo] if todo else pvecs[:0],
            documents=[ds.corpus[pids[i]].text for i in todo],
            metadatas=[{"title": ds.corpus[pids[i]].title, "text_sha": shas[i]} for i in todo],
            desc=f"upsert {name}")
        chroma_store.set_metadata(col, {"data_fingerprint": fingerprint})
        return col.count(), time.perf_counter() - t0

    # Chroma writes the passages while the model embeds the queries (the upsert is mostly I/O)
    with timer.step("embed_queries"):
        upsert_future = pool.submit(upsert)
        qvecs, qstats = embed_cached(embedder, [ds.queries[q] for q in qids], "query", cache, cfg.batch_size,
                                     desc="embed queries")
        query_vectors.save(store.root, embedder.model_id, qids, qvecs)
    with timer.step("upsert_wait"):
        n_in_collection, upsert_seconds = upsert_future.result()
    timer.seconds["upsert"] = round(upsert_seconds, 3)  # overlapped with embed_queries

    with timer.step("mine_negatives"):
        examples, mining_stats = mine_negatives(
            qids, qvecs, pids, pvecs, {p: ds.corpus[p].text for p in pids}, ds.qrels, splits,
            ds.same_doc, cfg.mining())
        store.save_examples(embedder.model_id, examples)

    total = time.perf_counter() - t_start
    manifest = store.manifest()
    if manifest.get("data_fingerprint") not in (None, fingerprint):
        stale_models = [m for m in manifest.get("models", {}) if m != embedder.model_id]
        if stale_models:
            log.warning("data changed: dropping %s from the manifest (re-ingest them)", stale_models)
        manifest["models"] = {}
    split_counts = {s: sum(1 for q in splits.values() if q == s) for s in SPLITS}
    manifest.update({
        "format_version": 1,
        "data_source": cfg.data,
        "source_kind": kind,
        "data_fingerprint": fingerprint,
        "n_passages": len(pids),
        "n_queries": len(qids),
        "splits": split_counts,
    })
    manifest.setdefault("models", {})[embedder.model_id] = {
        "collection": name,
        "dim": embedder.dim,
        "data_fingerprint": fingerprint,
        "n_vectors": n_in_collection,
        "mining": cfg.mining().__dict__,
        "ingested_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    summary = {
        "data": cfg.data,
        "source_kind": kind,
        "store": str(store.root),
        "chroma": store.target.describe(),
        "model": embedder.model_id,
        "dim": embedder.dim,
        "collection": name,
        "data_fingerprint": fingerprint,
        "passages": len(pids),
        "queries": len(qids),
        "queries_per_split": split_counts,
        "skipped": dict(sorted(ds.skipped.items())),
        "passages_embedded_now": pstats["embedded"],
        "queries_embedded_now": qstats["embedded"],
        "rows_upserted": len(todo),
        "rows_deleted": len(stale),
        "collection_count": n_in_collection,
        "mining": mining_stats,
        "seconds": timer.seconds,
        "total_seconds": round(total, 3),
        "embed_passages_per_s": round(pstats["embedded"] / pstats["model_seconds"], 2) if pstats["model_seconds"] else None,
        "pipeline_passages_per_s": round(len(pids) / total, 2) if total else None,
        "config": cfg.to_json(),
    }
    store.write_manifest(manifest)
    atomic.write_json(store.root / "ingest_summary.json", summary)
    return summary


def format_summary(s: dict) -> str:
    """The human-readable end-of-run summary the CLI prints."""
    lines = [
        f"Ingested {s['passages']} passages and {s['queries']} queries from {s['data']} ({s['source_kind']})",
        f"  model {s['model']} ({s['dim']}-d) -> collection {s['collection']} in {s['chroma']} ({s['collection_count']} vectors)",
        "  queries per split: " + ", ".join(f"{k} {v}" for k, v in s["queries_per_split"].items()),
        "  skipped: " + (", ".join(f"{k} {v}" for k, v in s["skipped"].items()) or "nothing"),
        f"  embedded now: {s['passages_embedded_now']} passages, {s['queries_embedded_now']} queries "
        f"(the rest came from the cache); upserted {s['rows_upserted']} rows, deleted {s['rows_deleted']}",
        "  negatives: " + ", ".join(f"{k} {v}" for k, v in s["mining"].items()),
        "  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items()) + f" | total {s['total_seconds']:.1f}",
    ]
    if s.get("embed_passages_per_s"):
        lines.append(f"  passages/s: model {s['embed_passages_per_s']}, whole pipeline {s['pipeline_passages_per_s']}")
    return "\n".join(lines)
