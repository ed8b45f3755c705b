"""BM25 over a corpus given in memory: `bm25_search`, for corpora that have no saved index.

The store's own corpus has its index built once by ingest (`Store.lexical_index()`, see `core.lexical`
for the tokenization and scoring and why); search that instead of calling this on the store's corpus.
This builds the same index in memory, for a held-out corpus or a test, so there is one BM25
implementation and a saved index ranks exactly as a fresh one.
"""
from __future__ import annotations

import logging

from core.lexical import build_index
from core.types import Corpus, Queries, Results, corpus_fingerprint

log = logging.getLogger(__name__)


def bm25_search(corpus: Corpus, queries: Queries, k: int = 100) -> Results:
    """Top-k passages per query by BM25 score: query id -> passage id -> score (only scores > 0, best
    first, ties by passage id). Indexes `corpus` on every call; a store's index is `Store.lexical_index()`."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not corpus:
        raise ValueError("the corpus is empty")
    if not queries:
        return {}
    results = build_index(corpus, corpus_fingerprint(corpus)).search_queries(queries, k)
    log.info("BM25: %d queries over %d passages, k=%d", len(queries), len(corpus), k)
    return results
