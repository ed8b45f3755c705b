"""The one interface every embedding backend implements.

Texts in, an L2-normalised float32 matrix out. `kind` says whether the texts are queries or passages
(some models prefix them differently; ours do not, but the cache keys on the exact text sent, so a
backend that prefixes stays correct). `model_id` and `dim` travel with every stored embedding so that
vectors of different models are never mixed.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from embedfit.types import Kind


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, as float32; all-zero rows stay zero instead of becoming NaN."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


def encoder_id(embedder) -> str:
    """The exact encoder build of `embedder` (`Embedder.cache_id`), also for wrappers that only duck-type `Embedder`
    (tests, the Ray engine's stand-ins) and so lack the property: then the model id."""
    return getattr(embedder, "cache_id", None) or embedder.model_id


class Embedder(ABC):
    """A text embedding model. Subclasses implement `_embed_batch`; callers use `embed`."""

    #: identifier stored with every vector (e.g. "all-MiniLM-L6-v2", "openai:text-embedding-3-small")
    model_id: str
    #: output dimension
    dim: int
    #: the largest batch the backend accepts in one call
    max_batch_size: int = 256
    #: batch size that measured fastest on a 2-core CPU for this backend
    default_batch_size: int = 32

    @property
    def cache_id(self) -> str:
        """What the embedding cache keys this model's vectors by: the model id, or for a graph we build
        ourselves (the int8 models) the id plus a digest of the exact graph, so that after a rebuild with
        another recipe or onnxruntime the cache never serves the earlier graph's vectors."""
        return getattr(self, "_cache_id", None) or self.model_id

    def prepare(self, text: str, kind: Kind) -> str:
        """The exact string sent to the model for `text` (prefixes, if a model needs them)."""
        return text

    @abstractmethod
    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        """Embed prepared texts (at most `max_batch_size`); returns (len(texts), dim) floats."""

    def embed(self, texts: Sequence[str], kind: Kind) -> np.ndarray:
        """Embed `texts` in order; returns (len(texts), dim) float32 rows of unit length."""
        return self.embed_prepared([self.prepare(t, kind) for t in texts])

    def embed_prepared(self, prepared: list[str]) -> np.ndarray:
        """Embed strings already passed through `prepare` (the cache stores exactly these)."""
        if not prepared:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, len(prepared), self.max_batch_size):
            out.append(np.asarray(self._embed_batch(prepared[start : start + self.max_batch_size]), dtype=np.float32))
        vectors = l2_normalise(np.concatenate(out, axis=0))
        if vectors.shape != (len(prepared), self.dim):
            raise ValueError(f"{self.model_id}: expected shape {(len(prepared), self.dim)}, got {vectors.shape}")
        return vectors

    def describe(self) -> dict:
        return {"model_id": self.model_id, "dim": self.dim, "backend": type(self).__name__}
