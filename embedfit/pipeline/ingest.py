"""The ingest run: load -> clean/filter -> limit -> split -> BM25 index -> embed (cached) -> upsert -> mine -> manifest.

Everything that can fail on bad input (loading, validation) happens before the store is touched. Each
later step is idempotent and writes atomically, and the manifest is written last, so an interrupted
run is finished by running the same command again: cached batches are not re-embedded, rows already in
Chroma with the same content are not re-written, and the BM25 index is rebuilt only when the corpus changed.
`build_lexical` (`embedfit ingest --store STORE --lexical-only`) builds that index alone, from the store's
own dataset, to repair a missing or damaged one.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from embedfit import __version__, atomic
from embedfit.data.filters import apply_limit, filter_by_length
from embedfit.data.sources import SourceKind, detect_source, load_source
from embedfit.data.split import split_queries
from embedfit.embed import EmbeddingCache, embed_cached, load_embedder
from embedfit.embed.base import Embedder, encoder_id
from embedfit.embed.registry import DEFAULT_MODEL
from embedfit.errors import DataError, StoreError
from embedfit.outputs import check_output
from embedfit.pipeline.config import IngestConfig
from embedfit.pipeline.negatives import MiningInput, mine_negatives
from embedfit.pipeline.ray_engine import RayEngine, ray_session
from embedfit.retrieval.fusion import dev_signature, load_raw_fusion, save_raw_fusion
from embedfit.retrieval.fusion_choice import choose_dev_fusion
from embedfit.retrieval.lexical import build_index, load_index, require_indexable, save_index
from embedfit.settings import with_options
from embedfit.store import chroma_store, query_vectors
from embedfit.store.store import FORMAT_VERSION as STORE_FORMAT_VERSION
from embedfit.store.store import STORE_OUTPUT, Store, check_collection_encoder, is_store_dir, raw_collection_name
from embedfit.types import SPLITS, Corpus, Dataset, SplitName, corpus_fingerprint, text_sha

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
    if cfg.lexical_only:
        return build_lexical(cfg.store)
    timer = _Timer()
    t_start = time.perf_counter()
    cfg.validate()
    check_output(cfg.store, STORE_OUTPUT, cfg.force, option="--store")  # a wrong --store costs a message, not data
    # the model loads in the background while the data is read (both take seconds); a bad file is
    # still reported first, and its error does not wait for the model
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest")
    with ExitStack() as stack:
        stack.callback(pool.shutdown, wait=False, cancel_futures=True)
        model_future = None if embedder is not None else pool.submit(load_embedder, cfg.model, cfg.device)
        with timer.step("load"):
            kind = detect_source(cfg.data)
            ds = load_dataset_for(cfg, kind)
        with timer.step("split"):
            splits = split_queries(ds.queries, ds.qrels, cfg.split, cfg.seed, by=cfg.split_by)
        require_indexable(ds.corpus)  # before anything is written: a refusal leaves no half store
        ray = None
        if cfg.engine == "ray":  # while the model loads; an unreachable cluster fails before the store is touched
            with timer.step("ray_start"):
                ray = stack.enter_context(ray_session(cfg.model, cfg.device, cfg.ray_address, cfg.ray_actors))
        with timer.step("load_model"):
            embedder = embedder or model_future.result()
        run = _open_store(cfg, ds, kind, splits, embedder, ray)
        return _write_store(run, timer, t_start, pool)


def ingest(data: str | Path, store: str | Path | None = None, model: str = DEFAULT_MODEL, *,
           embedder: Embedder | None = None, config: IngestConfig | None = None, **options) -> Store:
    """Load a dataset, embed it (cached), store it in Chroma, build its BM25 index and mine negatives.

    Rerunning with the same arguments finishes an interrupted run and re-embeds nothing already cached; another
    `model` adds its collection beside the first.

    Args:
        data: a BEIR folder, a pairs `.jsonl`, an NQ simplified `.jsonl(.gz)`, or a hub dataset id.
        store: the store folder to write (default: env EMBEDFIT_STORE, else `.data/store`).
        model: "all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2", "openai:text-embedding-3-small", or a local
            sentence-transformers folder.
        embedder: an `Embedder` to use instead of loading `model` (its `model_id` must be `model`).
        config: an `IngestConfig` to start from; `options` override its fields.
        **options: any `IngestConfig` field, e.g. `limit=500`, `split=(0.8, 0.1, 0.1)`, `k_hard=4`, `force=True`.

    Returns:
        The `Store` (read-only); `store.last_ingest` holds the run's summary (counts, timings).

    Raises:
        DataError: the data cannot be read. OutputError: `store` is a folder that is not a store. OfflineError:
        the model or dataset must be downloaded and there is no network.

    Example:
        >>> import embedfit as ef
        >>> store = ef.ingest("data/scifact", ".data/scifact", "all-MiniLM-L6-v2")   # doctest: +SKIP
    """
    base = with_options(config or IngestConfig(), options, {"data", "store", "model"}, "ingest")
    cfg = replace(base, data=str(data), store=Path(store) if store is not None else base.store, model=model)
    summary = run_ingest(cfg, embedder)
    out = Store(cfg.store, cfg.chroma_host, cfg.chroma_port)
    out.last_ingest = summary
    return out


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
    ray: RayEngine | None = None  #: embeds the passages with --engine ray; None: in this process


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
                embedder: Embedder, ray: RayEngine | None = None) -> _Run:
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
                pids=pids, qids=sorted(ds.queries), texts=texts, shas=[text_sha(t) for t in texts], ray=ray)


def _write_store(run: _Run, timer: _Timer, t_start: float, pool: ThreadPoolExecutor) -> dict:
    """The writing steps in order. The manifest is written last: until then nothing claims the run
    finished, and every earlier step is idempotent, so re-running the command finishes the work."""
    with timer.step("check_collection"):  # another model or dimension is refused before any work
        col, have = _check_collection(run)
    with timer.step("save_dataset"):
        run.store.save_dataset(run.ds)
        run.store.save_splits(run.splits, {"seed": run.cfg.seed, "fractions": list(run.cfg.split), "by": run.cfg.split_by,
                                           "data_fingerprint": run.fingerprint})
    with timer.step("lexical_index"):
        lexical = ensure_lexical_index(run.store, run.ds.corpus, run.fingerprint)
    lexical["seconds"] = timer.seconds["lexical_index"]
    vectors = _embed_and_upsert(run, col, have, timer, pool)
    with timer.step("mine_negatives"):
        mining_stats = _mine_and_save(run, vectors)
    with timer.step("fusion"):
        fusion = _choose_raw_fusion(run.store, run.embedder.model_id, run.fingerprint,
                                    lambda: (run.qids, vectors.queries, run.pids, vectors.passages))
    total = time.perf_counter() - t_start
    manifest = _updated_manifest(run, vectors.n_in_collection)
    summary = _summary(run, vectors, mining_stats, timer.seconds, total)
    summary["lexical"] = lexical
    summary["fusion"] = fusion
    run.store.write_manifest(manifest)
    atomic.write_json(run.store.root / "ingest_summary.json", summary)
    return summary


def ensure_lexical_index(store: Store, corpus: Corpus, fingerprint: str, force: bool = False) -> dict:
    """Build and save the store's BM25 index, unless the saved one is intact and of this very corpus
    (then it is reused: tokenizing the corpus again would only reproduce it). A writer of the store calls
    this; returns what it did: {"reused", "fingerprint", "n"}."""
    folder = store.lexical_dir
    atomic.recover_dir(folder)  # a killed earlier write: finish or undo it, and clear its temporary folder
    atomic.remove_stale_temps(folder)
    if not force and folder.exists():
        try:
            index = load_index(folder, fingerprint)
        except StoreError as exc:
            log.info("rebuilding the BM25 index: %s", exc)
        else:
            log.info("BM25 index at %s is up to date (data %s, %d passages): reused", folder, fingerprint, len(index))
            return {"reused": True, "fingerprint": fingerprint, "n": len(index)}
    index = build_index(corpus, fingerprint)
    save_index(index, folder)
    return {"reused": False, "fingerprint": fingerprint, "n": len(index)}


def build_lexical(store_root: Path, force: bool = False) -> dict:
    """`--lexical-only`: build (or refresh) the BM25 index of an existing store from its own
    `dataset/corpus.jsonl`. Needs no --data and no model, and writes nothing but `lexical/` and the
    manifest's `lexical` entry. `force` rebuilds even an up-to-date index. Returns a summary."""
    t0 = time.perf_counter()
    store = Store(store_root)
    if store.root.exists() and not store.root.is_dir():
        raise StoreError(f"--store {store.root} is a file, not a store folder; pass the folder ingest built")
    if not is_store_dir(store.root) or not store.exists():
        raise StoreError(f"{store.root} is not a store built by ingest (no manifest.json); build one with:\n"
                         f"  embedfit ingest --data $EMBEDFIT_DATA --store {store.root}")
    manifest = store.require()
    store.client  # noqa: B018 - takes the store's lock now: an ingest writing this store refuses us (StoreBusyError)
    corpus = store.load_corpus()
    if not corpus:
        raise StoreError(f"{store.dataset_dir / 'corpus.jsonl'} holds no passages; re-run ingest")
    fingerprint = corpus_fingerprint(corpus)
    if manifest.get("data_fingerprint") not in (None, fingerprint):
        raise StoreError(f"{store.dataset_dir / 'corpus.jsonl'} (data {fingerprint}) does not match the manifest "
                         f"(data {manifest['data_fingerprint']}); re-run the full ingest of this store")
    lexical = ensure_lexical_index(store, corpus, fingerprint, force=force)
    if manifest.get("lexical") != {"fingerprint": fingerprint, "n": lexical["n"]}:
        manifest["lexical"] = {"fingerprint": fingerprint, "n": lexical["n"]}
        store.write_manifest(manifest)
    lexical["seconds"] = round(time.perf_counter() - t0, 3)
    fusion = {model: _choose_raw_fusion(store, model, fingerprint, _stored_vectors(store, model), force=force)
              for model in sorted(manifest.get("models", {}))}  # each model's raw+BM25 fusion, from its stored vectors
    return {"lexical_only": True, "store": str(store.root), "passages": len(corpus), "lexical": lexical,
            "fusion": fusion}


#: query ids, query vectors, passage ids, passage vectors of one model (rows in id order)
_Vecs = tuple[list[str], np.ndarray, list[str], np.ndarray]


def _stored_vectors(store: Store, model_id: str) -> Callable[[], _Vecs]:
    """The model's vectors as the store holds them, read only when called (a kept choice needs none)."""
    def load() -> _Vecs:
        qids, qvecs = query_vectors.load(store.root, model_id)
        dump = chroma_store.fetch_all(store.raw_collection(model_id))
        return qids, qvecs, dump.ids, dump.embeddings
    return load


def _choose_raw_fusion(store: Store, model_id: str, fingerprint: str, vectors: Callable[[], _Vecs],
                       force: bool = False) -> dict:
    """Choose on dev how this model's raw ranking is fused with BM25, save it beside the store
    (`STORE/fusion/MODEL.json`); a choice already made on the same data and dev split is kept (same
    vectors, same answer) unless `force`. Returns what the summary says about it."""
    splits = store.load_splits()
    dev_sha = dev_signature(splits)
    saved = None if force else load_raw_fusion(store.root, model_id, fingerprint, dev_sha)
    if saved is not None:
        return {"reused": True, **saved.spec.to_json()}
    choice = choose_dev_fusion(*vectors(), store.load_queries(), store.load_qrels(),
                               splits, load_index(store.lexical_dir, fingerprint))
    if choice is None:
        return {"skipped": "no judged dev query"}
    save_raw_fusion(store.root, model_id, choice, fingerprint, dev_sha)
    return {"reused": False, **choice.spec.to_json(), "dev_score": choice.score, "dev_dense_only": choice.dense_only}


def _check_collection(run: _Run) -> tuple[Any, dict[str, Any]]:
    """The model's raw collection (created, or checked to hold the same model and dimension) and the
    text hash of every row already in it, so unchanged rows are not written again."""
    encoder = encoder_id(run.embedder)  # the exact build (int8 graphs differ by machine)
    col = chroma_store.ensure_collection(
        run.client, run.collection,
        {"kind": "raw", "model_id": run.embedder.model_id, "dim": run.embedder.dim,
         "data_fingerprint": run.fingerprint, "encoder": encoder},
        check_keys=("kind", "model_id", "dim"),
    )
    check_collection_encoder(col, run.embedder.model_id, run.embedder.dim, encoder)
    return col, chroma_store.existing_ids(col, "text_sha")


def _embed_and_upsert(run: _Run, col: Any, have: dict[str, Any], timer: _Timer,
                      pool: ThreadPoolExecutor) -> _Vectors:
    """Embed passages, then upsert them in the background while the queries are embedded: the
    upsert is mostly I/O and the embedding mostly CPU, so overlapping them saves the shorter one.
    With --engine ray the passages are embedded by Ray actors (same batches, same vectors); the queries
    always here (`embedfit.pipeline.ray_engine` says why)."""
    cfg, embedder = run.cfg, run.embedder
    cache = EmbeddingCache(cfg.cache_dir, embedder.model_id, embedder.dim) if cfg.cache_dir else None
    embed_passages = run.ray.embed_cached if run.ray is not None else embed_cached
    with timer.step("embed_passages"):
        pvecs, pstats = embed_passages(embedder, run.texts, "passage", cache, cfg.batch_size, desc="embed passages")
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
        "format_version": STORE_FORMAT_VERSION,
        "embedfit_version": __version__,
        "data_source": run.cfg.data,
        "source_kind": run.kind,
        "data_fingerprint": run.fingerprint,
        "n_passages": len(run.pids),
        "n_queries": len(run.qids),
        "splits": _split_counts(run.splits),
        "lexical": {"fingerprint": run.fingerprint, "n": len(run.pids)},
    })
    manifest.setdefault("models", {})[run.embedder.model_id] = {
        "encoder": encoder_id(run.embedder),
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
        "engine": run.cfg.engine,
        **({"ray": run.ray.describe()} if run.ray is not None else {}),
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


def _format_ray(r: dict) -> str:
    return (f"  engine ray ({r['address']}, {r['ray_from']}, ready in {r['start_seconds']:.1f} s): {r['actors']} actor(s), "
            f"{r['batches_sent']} passage batches sent")


def _format_lexical(lx: dict) -> str:
    what = "reused (corpus unchanged)" if lx["reused"] else "built"
    return f"  BM25 index: {what}, {lx['n']} passages, data {lx['fingerprint']}, {lx['seconds']:.1f} s"


def _format_fusion(model: str, f: dict) -> str:
    if f.get("skipped"):
        return f"  raw+BM25 fusion ({model}): not chosen ({f['skipped']})"
    how = "kept (chosen on dev before, same data)" if f.get("reused") else "chosen on dev"
    gain = (f"; dev MRR@10 {f['dev_dense_only']:.4f} -> {f['dev_score']:.4f}" if "dev_score" in f else "")
    return f"  raw+BM25 fusion ({model}): {how}: {f['method']}, BM25 weight {f['weight']:g}, top {f['n']}{gain}"


def format_summary(s: dict) -> str:
    """The human-readable end-of-run summary the CLI prints."""
    if s.get("lexical_only"):
        return "\n".join([f"BM25 index of the store {s['store']}", _format_lexical(s["lexical"]),
                          *(_format_fusion(m, f) for m, f in s.get("fusion", {}).items())])
    lines = [
        f"Ingested {s['passages']} passages and {s['queries']} queries from {s['data']} ({s['source_kind']})",
        f"  model {s['model']} ({s['dim']}-d) -> collection {s['collection']} in {s['chroma']} ({s['collection_count']} vectors)",
        *([_format_ray(s["ray"])] if s.get("ray") else []),
        "  queries per split: " + ", ".join(f"{k} {v}" for k, v in s["queries_per_split"].items()),
        "  skipped: " + (", ".join(f"{k} {v}" for k, v in s["skipped"].items()) or "nothing"),
        f"  embedded now: {s['passages_embedded_now']} passages, {s['queries_embedded_now']} queries "
        f"(the rest came from the cache); upserted {s['rows_upserted']} rows, deleted {s['rows_deleted']}",
        "  negatives: " + ", ".join(f"{k} {v}" for k, v in s["mining"].items()),
        *([_format_lexical(s["lexical"])] if s.get("lexical") else []),
        *([_format_fusion(s["model"], s["fusion"])] if s.get("fusion") else []),
        "  seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in s["seconds"].items()) + f" | total {s['total_seconds']:.1f}",
    ]
    if s.get("embed_passages_per_s"):
        lines.append(f"  passages/s: model {s['embed_passages_per_s']}, whole pipeline {s['pipeline_passages_per_s']}")
    return "\n".join(lines)
