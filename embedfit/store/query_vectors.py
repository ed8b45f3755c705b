"""Query embeddings saved with the store (`STORE/query_vectors/MODEL.npz`).

Ingest embeds every query once; training and evaluation read them from here instead of loading the
model again, so a store is self-contained for everything except new, unseen questions.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from embedfit import atomic
from embedfit.errors import StoreError
from embedfit.types import slug


def path_for(store_root: Path, model_id: str) -> Path:
    return Path(store_root) / "query_vectors" / f"{slug(model_id)[:100]}.npz"


def save(store_root: Path, model_id: str, ids: list[str], vectors: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, ids=np.array(ids), vectors=np.ascontiguousarray(vectors, dtype=np.float32),
             meta=np.array(json.dumps({"model_id": model_id, "dim": int(vectors.shape[1])})))
    atomic.write_bytes(path_for(store_root, model_id), buf.getvalue())


def load(store_root: Path, model_id: str) -> tuple[list[str], np.ndarray]:
    path = path_for(store_root, model_id)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            ids, vectors = z["ids"].tolist(), z["vectors"]
    except FileNotFoundError:
        raise StoreError(f"no query embeddings for {model_id!r} at {path}; re-run ingest with --model {model_id}") from None
    if meta.get("model_id") != model_id or vectors.shape != (len(ids), meta.get("dim")):
        raise StoreError(f"{path} does not hold {model_id!r} query embeddings; re-run ingest")
    return ids, vectors
