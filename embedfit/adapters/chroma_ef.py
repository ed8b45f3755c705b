"""A Chroma embedding function that embeds documents raw and queries through a linear adapter.

Standalone on purpose (numpy, chromadb and sentence-transformers only, nothing of this project): `python -m
adapter export --format chroma` copies this very file into the export folder, so another stack uses it with
`import embedfit_adapter_chroma` and never needs our package. One collection serves both sides: `add(documents=...)`
calls `__call__` (raw, L2-normalised vectors, exactly what our raw collection holds) and `query(query_texts=...)`
calls `embed_query` (the adapted vector: normalise(raw @ matrix + bias)).

Registered under `name()` so that a collection created with it is rebuilt from its stored config in a fresh
process or through a Chroma server, once this module has been imported there.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function

#: ours and versioned: a collection made with this function records it, and a later, changed function gets a new name
NAME = "embedfit.adapter.v2"


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@register_embedding_function
class AdaptedEmbeddingFunction(EmbeddingFunction[Documents]):
    """Documents: the base model's normalised vectors. Queries: those through the adapter's matrix."""

    def __init__(self, model_path: str, adapter_npz: str, device: str = "cpu"):
        from sentence_transformers import SentenceTransformer

        self.model_path, self.adapter_npz, self.device = str(model_path), str(adapter_npz), device
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
        return {"model_path": self.model_path, "adapter_npz": self.adapter_npz, "device": self.device}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> AdaptedEmbeddingFunction:
        return AdaptedEmbeddingFunction(config["model_path"], config["adapter_npz"], config.get("device", "cpu"))

    @staticmethod
    def validate_config(config: dict[str, Any]) -> None:
        for key in ("model_path", "adapter_npz"):
            if not Path(str(config.get(key, ""))).exists():
                raise ValueError(f"{NAME}: {key} {config.get(key)!r} does not exist on this machine")
