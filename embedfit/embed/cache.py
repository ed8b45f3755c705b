"""Content-addressed embedding cache on disk.

Key = sha256(model id, NUL, exact text sent to the model); the "model id" is `Embedder.cache_id`, which for a
graph built here (int8) also names the exact graph. Vectors are stored per *batch*: one `.npz`
chunk file holds the keys and vectors of one batch, written atomically and carrying a checksum that is
verified on load. A chunk that fails the check (truncated, garbled, foreign model, wrong dimension) is
deleted and its texts are embedded again: the cache is never trusted blindly. Only damage is treated
that way; any other error (a bug) propagates instead of silently emptying the cache.

Why per batch: batches are formed deterministically from the whole set of texts (sorted by length,
then key), and a partly cached batch is recomputed whole. So a run interrupted at any point and
resumed produces bit-for-bit the vectors of an uninterrupted run (same inputs, same batch shapes).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import lzma
import time
import zipfile
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from embedfit import atomic
from embedfit.embed.base import Embedder, encoder_id
from embedfit.progress import progress
from embedfit.types import Kind, slug

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

# What np.load raises on truncated or garbled .npz bytes (found by truncating real chunks at every
# length and flipping random bytes): mostly BadZipFile; also EOFError, OSError, ValueError (bad array
# header, bad JSON/UTF-8 in meta), KeyError (a member name garbled), NotImplementedError (compression
# method garbled), RuntimeError (the "encrypted" flag garbled), zlib/lzma errors (method garbled into
# deflate/lzma). Caught only around the read itself, so the same types raised elsewhere surface as bugs.
_UNREADABLE = (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, NotImplementedError, RuntimeError,
               zlib.error, lzma.LZMAError)


class DamagedChunk(ValueError):
    """A chunk file that cannot be trusted: unreadable, or written for another format, model or dimension."""


def cache_key(model_id: str, prepared_text: str) -> str:
    return hashlib.sha256(model_id.encode("utf-8") + b"\0" + prepared_text.encode("utf-8")).hexdigest()[:32]


def _checksum(keys: np.ndarray, vectors: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update("\n".join(keys.tolist()).encode("utf-8"))
    h.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return h.hexdigest()


class EmbeddingCache:
    """All cached vectors of one model, loaded into memory from `root/<model>/*.npz`."""

    def __init__(self, root: str | Path, model_id: str, dim: int):
        self.model_id = model_id
        self.dim = dim
        digest = hashlib.sha1(model_id.encode("utf-8")).hexdigest()[:8]
        self.dir = Path(root) / f"{slug(model_id)[:80]}-{digest}"
        self._vectors: dict[str, np.ndarray] = {}
        self.rejected_files = 0
        self._load()

    def _load(self) -> None:
        if not self.dir.exists():
            return
        for tmp in self.dir.glob(".*.tmp"):
            tmp.unlink(missing_ok=True)  # a write that never reached its rename
        for path in sorted(self.dir.glob("*.npz")):
            try:
                keys, vectors = self._read_chunk(path)
            except DamagedChunk as exc:  # do not trust it: delete, and its batch is embedded again
                log.warning("embedding cache: discarding damaged chunk %s (%s)", path.name, exc)
                path.unlink(missing_ok=True)
                self.rejected_files += 1
                continue
            for k, v in zip(keys.tolist(), vectors):
                self._vectors[k] = v

    def _read_chunk(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """Keys and vectors of one chunk; raises `DamagedChunk` (with the reason) if it cannot be trusted."""
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                keys = z["keys"]
                vectors = z["vectors"]
        except _UNREADABLE as exc:
            raise DamagedChunk(f"unreadable: {type(exc).__name__}: {exc}") from exc
        # shape checks before use, so that a garbled but loadable file is reported, not a TypeError
        if not isinstance(meta, dict):
            raise DamagedChunk(f"meta is a {type(meta).__name__}, not an object")
        if meta.get("format") != FORMAT_VERSION:
            raise DamagedChunk(f"format {meta.get('format')} != {FORMAT_VERSION}")
        if meta.get("model_id") != self.model_id or meta.get("dim") != self.dim:
            raise DamagedChunk(f"chunk is for {meta.get('model_id')} ({meta.get('dim')}-d)")
        if keys.ndim != 1 or keys.dtype.kind != "U":
            raise DamagedChunk(f"bad keys: shape {keys.shape} / dtype {keys.dtype}")
        if vectors.dtype != np.float32 or vectors.shape != (len(keys), self.dim):
            raise DamagedChunk(f"bad shape {vectors.shape} / dtype {vectors.dtype}")
        if meta.get("checksum") != _checksum(keys, vectors):
            raise DamagedChunk("checksum mismatch")
        return keys, vectors

    def __len__(self) -> int:
        return len(self._vectors)

    def __contains__(self, key: str) -> bool:
        return key in self._vectors

    def get(self, keys: Sequence[str]) -> np.ndarray:
        return np.stack([self._vectors[k] for k in keys]) if keys else np.zeros((0, self.dim), np.float32)

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        """Store one batch as one chunk file (atomic); then the vectors are served from memory."""
        keys_arr = np.array(list(keys), dtype=f"<U{max(1, max(len(k) for k in keys))}")
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.shape != (len(keys_arr), self.dim):
            raise ValueError(f"cache.put: shape {vectors.shape} does not match {len(keys_arr)} keys x {self.dim}")
        meta = {"format": FORMAT_VERSION, "model_id": self.model_id, "dim": self.dim,
                "checksum": _checksum(keys_arr, vectors), "created": time.time()}
        buf = io.BytesIO()
        np.savez(buf, keys=keys_arr, vectors=vectors, meta=np.array(json.dumps(meta)))
        name = hashlib.sha256("\n".join(keys_arr.tolist()).encode("utf-8")).hexdigest()[:32] + ".npz"
        atomic.write_bytes(self.dir / name, buf.getvalue())
        for k, v in zip(keys_arr.tolist(), vectors):
            self._vectors[k] = v


def plan_batches(keys_by_text: dict[str, str], batch_size: int) -> list[list[str]]:
    """Deterministic batches over unique texts: sorted by (length, key) so each batch pads little."""
    order = sorted(keys_by_text, key=lambda k: (len(keys_by_text[k]), k))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def embed_cached(
    embedder: Embedder,
    texts: Sequence[str],
    kind: Kind,
    cache: EmbeddingCache | None,
    batch_size: int | None = None,
    desc: str | None = None,
) -> tuple[np.ndarray, dict]:
    """Embed `texts` (in order), computing only batches the cache lacks.

    Returns the (len(texts), dim) matrix and stats: unique texts, texts embedded now, seconds spent in
    the model. Without a cache it still batches the same way (so results are identical either way).
    """
    if cache is not None and (cache.model_id != embedder.model_id or cache.dim != embedder.dim):
        raise ValueError(f"cache for {cache.model_id}/{cache.dim} used with {embedder.model_id}/{embedder.dim}")
    batch_size = min(batch_size or embedder.default_batch_size, embedder.max_batch_size)
    prepared = [embedder.prepare(t, kind) for t in texts]
    cache_id = encoder_id(embedder)
    keys = [cache_key(cache_id, p) for p in prepared]
    by_key: dict[str, str] = {}
    for k, p in zip(keys, prepared):
        by_key.setdefault(k, p)
    batches = plan_batches(by_key, batch_size)
    local: dict[str, np.ndarray] = {}
    todo = [b for b in batches if cache is None or not all(k in cache for k in b)]
    done_before = len(by_key) - sum(len(b) for b in todo)
    model_seconds = 0.0
    # chunk files are written by one background thread while the model computes the next batch: the
    # fsyncs then cost no model time (the bench compares us with the bare model). Each chunk is still
    # atomic; a crash loses at most the chunks not yet renamed into place, which are simply redone.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-writer") as writer, \
            progress(total=len(by_key), initial=done_before, desc=desc or f"embed {kind}s", unit="text") as bar:
        pending = []
        for batch in todo:
            t0 = time.perf_counter()
            vectors = embedder.embed_prepared([by_key[k] for k in batch])
            model_seconds += time.perf_counter() - t0
            local.update(zip(batch, vectors))
            if cache is not None:
                pending.append(writer.submit(cache.put, batch, vectors))
                if len(pending) > 8:  # surface a write error early and keep the queue short
                    pending.pop(0).result()
            bar.update(len(batch))
        for fut in pending:
            fut.result()
    if not keys:
        out = np.zeros((0, embedder.dim), np.float32)
    elif cache is None:
        out = np.stack([local[k] for k in keys])
    else:
        out = cache.get(keys)
    stats = {"unique": len(by_key), "embedded": sum(len(b) for b in todo), "model_seconds": model_seconds}
    return out.astype(np.float32, copy=False), stats
