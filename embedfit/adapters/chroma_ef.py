"""A Chroma embedding function that embeds documents raw and queries through a linear adapter.

Standalone on purpose (numpy, chromadb and sentence-transformers only, nothing of this project): `embedfit
export --format chroma` copies this very file into the export folder, so another stack uses it with
`import embedfit_adapter_chroma` and never needs our package. One collection serves both sides: `add(documents=...)`
calls `__call__` (the base model's L2-normalised vectors; adapted too for a both-sides adapter) and
`query(query_texts=...)` calls `embed_query` (the adapted vector: normalise(raw @ matrix + bias)).

Add each passage as `document_text(title, text)` (the title, a space, the text): that is how embedfit embedded the
passages the adapter was fitted on; the text alone ranks measurably worse.

Registered under `name()` so that a collection created with it is rebuilt from its stored config in a fresh
process or through a Chroma server, once this module has been imported there (Chroma cannot import it by itself:
`import embedfit_adapter_chroma` first, with its folder on `sys.path`). The stored config holds absolute paths and
the SHA-256 of `adapter.npz`: a moved or replaced adapter file is refused on load, never used in silence.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function

#: ours and versioned: a collection made with this function records it, and a later, changed function gets a new name
NAME = "embedfit.adapter.v2"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def document_text(title: str | None, text: str) -> str:
    """The string to add as a passage's document: its title, a space, its text (the text alone without a title),
    as embedfit embedded the passages the adapter was fitted on."""
    return f"{title} {text}" if title else text


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@register_embedding_function
class AdaptedEmbeddingFunction(EmbeddingFunction[Documents]):
    """Documents: the base model's normalised vectors. Queries: those through the adapter's matrix."""

    def __init__(self, model_path: str, adapter_npz: str, device: str = "cpu", adapter_sha256: str | None = None):
        from sentence_transformers import SentenceTransformer

        # absolute: the config Chroma stores must mean the same files from any working directory
        # (a hub id, which is no local path, stays as it is)
        self.model_path = str(Path(model_path).resolve()) if Path(model_path).exists() else str(model_path)
        self.adapter_npz = str(Path(adapter_npz).resolve())
        self.device = device
        self.adapter_sha256 = file_sha256(self.adapter_npz)
        if adapter_sha256 is not None and adapter_sha256 != self.adapter_sha256:
            raise ValueError(f"{NAME}: {self.adapter_npz} is not the adapter this collection was made with (its "
                             f"SHA-256 is {self.adapter_sha256[:12]}..., the collection expects {adapter_sha256[:12]}...); "
                             "restore that file, or re-create the collection with this adapter")
        self._model = SentenceTransformer(self.model_path, device=device)
        with np.load(self.adapter_npz) as z:
            self._matrix = z["matrix"].astype(np.float32)
            self._bias = z["bias"].astype(np.float32)
            self._both = str(z["sides"]) == "both"

    def _raw(self, texts: Documents) -> np.ndarray:
        return self._model.encode(list(texts), convert_to_numpy=True, normalize_embeddings=True,
                                  show_progress_bar=False).astype(np.float32)

    def _adapt(self, x: np.ndarray) -> np.ndarray:
        return _unit(x @ self._matrix + self._bias).astype(np.float32)

    def __call__(self, input: Documents) -> Embeddings:
        x = self._raw(input)
        return list(self._adapt(x) if self._both else x)

    def embed_query(self, input: Documents) -> Embeddings:
        return list(self._adapt(self._raw(input)))

    @staticmethod
    def name() -> str:
        return NAME

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine", "ip", "l2"]

    def get_config(self) -> dict[str, Any]:
        return {"model_path": self.model_path, "adapter_npz": self.adapter_npz, "device": self.device,
                "adapter_sha256": self.adapter_sha256}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> AdaptedEmbeddingFunction:
        return AdaptedEmbeddingFunction(config["model_path"], config["adapter_npz"], config.get("device", "cpu"),
                                        config.get("adapter_sha256"))

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        npz = Path(str(config.get("adapter_npz", "")))
        if not npz.is_absolute() or not npz.exists():
            raise ValueError(f"{NAME}: adapter_npz {str(npz)!r} must be an absolute path that exists on this machine")
        model = Path(str(config.get("model_path", "")))
        if model.is_absolute() and not model.exists():
            raise ValueError(f"{NAME}: model_path {str(model)!r} does not exist on this machine")


#: the collection metadata key that records which adapter's query memory was applied to its stored passages
MEMORY_APPLIED = "embedfit_memory_applied"


def apply_memory(collection: Any, adapter_npz: str | Path) -> dict[str, Any]:
    """Move the passages the adapter's query memory names, in an existing collection, by id (`collection.update`):
    each becomes normalise(vector + alpha * memory vector), as embedfit's projected collection holds it.

    Run it once, after the passages were added with this module's embedding function. It refuses (ValueError):
    an npz without a memory; a collection that lacks some of the memory's passage ids (the memory was fitted on
    other passages: applying part of it would be silently wrong); a collection it was already applied to (moving
    twice doubles the move). Passages added or re-upserted *later* are not moved: run it again on a fresh
    collection, or apply it to those rows yourself. Returns {"moved": n, "collection": name}.
    """
    npz = str(Path(adapter_npz).resolve())
    sha = file_sha256(npz)
    with np.load(npz) as z:
        if "alpha" not in z:
            raise ValueError(f"{npz} holds no query memory (a query-side-only export, or an adapter without one)")
        ids = [str(i) for i in z["memory_ids"]]
        vectors, alpha = z["memory_vectors"].astype(np.float64), float(z["alpha"])
    done = (collection.metadata or {}).get(MEMORY_APPLIED)
    if done is not None:
        raise ValueError(f"the query memory of adapter {done[:12]}... was already applied to collection "
                         f"{collection.name!r}; applying a memory twice moves the passages twice")
    got = collection.get(ids=ids, include=["embeddings"])
    have = {pid: np.asarray(vec, dtype=np.float64) for pid, vec in zip(got["ids"], got["embeddings"])}
    missing = [pid for pid in ids if pid not in have]
    if missing:
        raise ValueError(f"collection {collection.name!r} lacks {len(missing)} of the memory's {len(ids)} passage ids "
                         f"(e.g. {missing[:3]}): add the passages under the ids embedfit used, then apply the memory")
    moved = np.stack([have[pid] for pid in ids]) + alpha * vectors
    moved /= np.maximum(np.linalg.norm(moved, axis=1, keepdims=True), 1e-12)
    for start in range(0, len(ids), 1000):
        collection.update(ids=ids[start:start + 1000], embeddings=moved[start:start + 1000].astype(np.float32))
    collection.modify(metadata={**(collection.metadata or {}), MEMORY_APPLIED: sha})
    return {"moved": len(ids), "collection": collection.name}
