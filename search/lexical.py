"""BM25 lexical baseline over a corpus, by bm25s.

The baseline an adapter on dense embeddings should at least be compared to. Text indexed per passage:
`title + " " + text` (as embedded, see `Passage.embedding_text`), lower-cased and split by bm25s's
tokenizer (words of two or more word characters), with bm25s's English stopwords removed and no
stemming: PyStemmer is not among our dependencies, and switching the stemmer on whenever it happens
to be installed would make the numbers depend on the machine. Scoring is bm25s's defaults
(Lucene variant, k1 = 1.5, b = 0.75).

A passage that shares no term with the query scores 0; such passages are left out of the results
rather than returned in arbitrary order, so a query may get fewer than k (even 0) results.
"""
from __future__ import annotations

import logging

import bm25s

from core.types import Corpus, Queries, Results

log = logging.getLogger(__name__)


def _tokens(texts: list[str]) -> list[list[str]]:
    return bm25s.tokenize(texts, lower=True, stopwords="en", stemmer=None, return_ids=False, show_progress=False)


def bm25_search(corpus: Corpus, queries: Queries, k: int = 100) -> Results:
    """Top-k passages per query by BM25 score: query id -> passage id -> score (only scores > 0)."""
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k}")
    if not corpus:
        raise ValueError("the corpus is empty")
    if not queries:
        return {}
    pids = list(corpus)
    retriever = bm25s.BM25()
    retriever.index(_tokens([f"{corpus[p].title} {corpus[p].text}" for p in pids]), show_progress=False)
    qids = list(queries)
    k_eff = min(k, len(pids))  # bm25s refuses k larger than the corpus
    idx, scores = retriever.retrieve(_tokens([queries[q] for q in qids]), k=k_eff, show_progress=False)
    results: Results = {}
    for qid, row_idx, row_scores in zip(qids, idx, scores):
        results[qid] = {pids[int(i)]: float(s) for i, s in zip(row_idx, row_scores) if s > 0}
    log.info("BM25: %d queries over %d passages, k=%d", len(qids), len(pids), k_eff)
    return results
