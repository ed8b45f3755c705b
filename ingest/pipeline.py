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
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

import numpy as np

from core import atomic, chroma_store, query_vectors
from core.embedding import EmbeddingCache, embed_cached, load_embedder
from core.embedding.base import Embedder
from core.outputs import check_output
from core.store import STORE_OUTPUT, Store, raw_collection_name
from core.errors import DataError
from core.types import SPLITS, Dataset, SplitName, corpus_fingerprint, text_sha
from ingest.config import IngestConfig
from ingest.filters import apply_limit, filter_by_length
from ingest.negatives import MiningInput, mine_negatives
from ingest.sources import SourceKind, detect_source, load_source
from ingest.split import split_queries

log = logging.getLogger(__name__)


class _Timer:
    """Seconds per named step, for the summary; scripts/bench.py and scripts/fault_inject.py rely on the step names."""

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
    cfg.validate()
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
        run = _open_store(cfg, ds, kind, splits, embedder)
        return _write_store(run, timer, t_start, pool)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class _Run:
    """What every store step needs: the validated inputs, the store opened for writing, and the ids
    in one fixed (sorted) order, so that rows, vectors and examples line up across steps."""

    cfg: IngestConfig
    ds: Dataset
    kind: SourceKind
    splits: dict[str, SplitName]
    embedder: Embedder
    store: Store
    client: Any  #: the Chroma client; holding it holds the store's write lock
    collection: str  #: name of the model's raw collection
    fingerprint: str  #: of the corpus, stored with everything derived from it
    pids: list[str]
    qids: list[str]
    texts: list[str]  #: passage texts exactly as embedded, in `pids` order
    shas: list[str]  #: their hashes: a row is re-written only when its text changed


@dataclass(frozen=True)
class _Vectors:
    """Embeddings of the run and what computing and upserting them did (for mining and the summary)."""

    passages: np.ndarray
    queries: np.ndarray
    passage_stats: dict
    query_stats: dict
    rows_upserted: int
    rows_deleted: int
    n_in_collection: int


def _open_store(cfg: IngestConfig, ds: Dataset, kind: SourceKind, splits: dict[str, SplitName],
                embedder: Embedder) -> _Run:
    """Open the store for writing only now, after the inputs passed every check, so bad input never
    leaves a half-made store; the lock is taken here, to refuse early if another process writes."""
    store = Store(cfg.store, cfg.chroma_host, cfg.chroma_port, write=True)
    client = store.client  # takes the lock now (or fails now if the Chroma server is down)
    store.root.mkdir(parents=True, exist_ok=True)
    store.mark()
    pids = sorted(ds.corpus)
    texts = [ds.corpus[p].embedding_text() for p in pids]
    return _Run(cfg=cfg, ds=ds, kind=kind, splits=splits, embedder=embedder, store=store, client=client,
                collection=raw_collection_name(embedder.model_id), fingerprint=corpus_fingerprint(ds.corpus),
                pids=pids, qids=sorted(ds.queries), texts=texts, shas=[text_sha(t) for t in texts])


def _write_store(run: _Run, timer: _Timer, t_start: float, pool: ThreadPoolExecutor) -> dict:
    """The writing steps in order. The manifest is written last: until then nothing claims the run
    finished, and every earlier step is idempotent, so re-running the command finishes the work."""
    with timer.step("check_collection"):  # another model or dimension is refused before any work
        col, have = _check_collection(run)
    with timer.step("save_dataset"):
        run.store.save_dataset(run.ds)
        run.store.save_splits(run.splits, {"seed": run.cfg.seed, "fractions": list(run.cfg.split),
                                           "data_fingerprint": run.fingerprint})
    vectors = _embed_and_upsert(run, col, have, timer, pool)
    with timer.step("mine_negatives"):
        mining_stats = _mine_and_save(run, vectors)
    total = time.perf_counter() - t_start
    manifest = _updated_manifest(run, vectors.n_in_collection)
    summary = _summary(run, vectors, mining_stats, timer.seconds, total)
    run.store.write_manifest(manifest)
    atomic.write_json(run.store.root / "ingest_summary.json", summary)
    return summary


def _check_collection(run: _Run) -> tuple[Any, dict[str, Any]]:
    """The model's raw collection (created, or checked to hold the same model and dimension) and the
    text hash of every row already in it, so unchanged rows are not written again."""
    col = chroma_store.ensure_collection(
        run.client, run.collection,
        {"kind": "raw", "model_id": run.embedder.model_id, "dim": run.embedder.dim,
         "data_fingerprint": run.fingerprint},
        check_keys=("kind", "model_id", "dim"),
    )
    return col, chroma_store.existing_ids(col, "text_sha")


def _embed_and_upsert(run: _Run, col: Any, have: dict[str, Any], timer: _Timer,
                      pool: ThreadPoolExecutor) -> _Vectors:
    """Embed passages, then upsert them in the background while the queries are embedded: the
    upsert is mostly I/O and the embedding mostly CPU, so overlapping them saves the shorter one."""
    cfg, embedder = run.cfg, run.embedder
    cache = EmbeddingCache(cfg.cache_dir, embedder.model_id, embedder.dim) if cfg.cache_dir else None
    with timer.step("embed_passages"):
        pvecs, pstats = embed_cached(embedder, run.texts, "passage", cache, cfg.batch_size, desc="embed passages")
    todo = [i for i, p in enumerate(run.pids) if have.get(p) != run.shas[i]]
    stale = sorted(set(have) - set(run.pids))
    with timer.step("embed_queries"):
        upsert_future = pool.submit(_upsert, run, col, pvecs, todo, stale)
        qvecs, qstats = embed_cached(embedder, [run.ds.queries[q] for q in run.qids], "query", cache,
                                     cfg.batch_size, desc="embed queries")
        query_vectors.save(run.store.root, embedder.model_id, run.qids, qvecs)
    with timer.step("upsert_wait"):
        n_in_collection, upsert_seconds = upsert_future.result()
    timer.seconds["upsert"] = round(upsert_seconds, 3)  # overlapped with embed_queries
    return _Vectors(passages=pvecs, queries=qvecs, passage_stats=pstats, query_stats=qstats,
                    rows_upserted=len(todo), rows_deleted=len(stale), n_in_collection=n_in_collection)


def _upsert(run: _Run, col: Any, pvecs: np.ndarray, todo: list[int], stale: list[str]) -> tuple[int, float]:
    """Make the collection equal the corpus: delete rows gone from the data, write new or changed ones.

    Runs on the pool's thread, so it times itself; returns (rows in the collection, seconds)."""
    log.info("step: upsert")
    t0 = time.perf_counter()
    if stale:
        log.warning("removing %d passages no longer in the data from %s", len(stale), run.collection)
        chroma_store.delete_ids(col, run.client, stale)
    corpus = run.ds.corpus
    chroma_store.upsert_batched(
        col, run.client, [run.pids[i] for i in todo], pvecs[todo] if todo else pvecs[:0],
        documents=[corpus[run.pids[i]].text for i in todo],
        metadatas=[{"title": corpus[run.pids[i]].title, "text_sha": run.shas[i]} for i in todo],
        desc=f"upsert {run.collection}")
    chroma_store.set_metadata(col, {"data_fingerprint": run.fingerprint})
    return col.count(), time.perf_counter() - t0


def _mine_and_save(run: _Run, vectors: _Vectors) -> dict[str, int]:
    """Mine weak and hard negatives from the raw vectors just computed and save them; returns the counts."""
    ds = run.ds
    data = MiningInput(run.qids, vectors.queries, run.pids, vectors.passages, {p: ds.corpus[p].text for p in run.pids},
                       ds.qrels, run.splits, ds.same_doc or {})
    examples, stats = mine_negatives(data, run.cfg.mining())
    run.store.save_examples(run.embedder.model_id, examples)
    return stats


def _split_counts(splits: dict[str, SplitName]) -> dict[str, int]:
    return {s: sum(1 for q in splits.values() if q == s) for s in SPLITS}


def _updated_manifest(run: _Run, n_in_collection: int) -> dict:
    """The store's manifest with this run's model entry. When the data changed, other models' entries
    are dropped: their vectors and negatives describe the old data and must be re-ingested."""
    manifest = run.store.manifest()
    if manifest.get("data_fingerprint") not in (None, run.fingerprint):
        stale_models = [m for m in manifest.get("models", {}) if m != run.embedder.model_id]
        if stale_models:
            log.warning("data changed: dropping %s from the manifest (re-ingest them)", stale_models)
        manifest["models"] = {}
    manifest.update({
        "format_version": 1,
        "data_source": run.cfg.data,
        "source_kind": run.kind,
        "data_fingerprint": run.fingerprint,
        "n_passages": len(run.pids),
        "n_queries": len(run.qids),
        "splits": _split_counts(run.splits),
    })
    manifest.setdefault("models", {})[run.embedder.model_id] = {
        "collection": run.collection,
        "dim": run.embedder.dim,
        "data_fingerprint": run.fingerprint,
        "n_vectors": n_in_collection,
        "mining": run.cfg.mining().__dict__,
        "ingested_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return manifest


def _summary(run: _Run, vectors: _Vectors, mining_stats: dict[str, int], seconds: dict[str, float],
             total: float) -> dict:
    """What the run did, for people (`format_summary`) and for scripts (STORE/ingest_summary.json)."""
    pstats = vectors.passage_stats
    return {
        "data": run.cfg.data,
        "source_kind": run.kind,
        "store": str(run.store.root),
        "chroma": run.store.target.describe(),
        "model": run.embedder.model_id,
        "dim": run.embedder.dim,
        "collection": run.collection,
        "data_fingerprint": run.fingerprint,
        "passages": len(run.pids),
        "queries": len(run.qids),
        "queries_per_split": _split_counts(run.splits),
        "skipped": dict(sorted(run.ds.skipped.items())),
        "passages_embedded_now": pstats["embedded"],
        "queries_embedded_now": vectors.query_stats["embedded"],
        "rows_upserted": vectors.rows_upserted,
        "rows_deleted": vectors.rows_deleted,
        "collection_count": vectors.n_in_collection,
        "mining": mining_stats,
        "seconds": seconds,
        "total_seconds": round(total, 3),
        "embed_passages_per_s": round(pstats["embedded"] / pstats["model_seconds"], 2) if pstats["model_seconds"] else None,
        "pipeline_passages_per_s": round(len(run.pids) / total, 2) if total else None,
        "config": run.cfg.to_json(),
    }


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
