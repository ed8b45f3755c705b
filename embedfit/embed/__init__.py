"""Embedding backends behind one small interface, plus the content-addressed cache.

`load_embedder(name)` turns a model name from the CLI into an `Embedder`; `embed_cached` is what the
stages call: it embeds only the texts the cache does not already hold.
"""
from embedfit.embed.base import Embedder, l2_normalise
from embedfit.embed.cache import EmbeddingCache, embed_cached
from embedfit.embed.registry import KNOWN_MODELS, load_embedder, model_dimension_hint

__all__ = [
    "Embedder",
    "EmbeddingCache",
    "KNOWN_MODELS",
    "embed_cached",
    "l2_normalise",
    "load_embedder",
    "model_dimension_hint",
]
