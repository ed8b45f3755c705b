"""Length filters, `--limit`, and keeping corpus, queries and qrels consistent with each other."""
from __future__ import annotations

from embedfit.types import Dataset

DEFAULT_MIN_WORDS = 4
DEFAULT_MAX_WORDS = 2000


def filter_by_length(ds: Dataset, min_words: int, max_words: int) -> Dataset:
    """Drop passages outside [min_words, max_words] words, then queries left without a positive.

    The bounds are wide on purpose: the shared NQ corpus runs from 4 to 7,395 words (p99 513); the
    few giant passages are whole tables, which the models truncate anyway (256 / 128 tokens). 4 words
    keeps every real answer there and drops the 1-3 word table cells of NQ pages.
    """
    keep = {pid for pid, p in ds.corpus.items() if min_words <= len(p.text.split()) <= max_words}
    short = sum(1 for pid, p in ds.corpus.items() if len(p.text.split()) < min_words)
    long_ = len(ds.corpus) - len(keep) - short
    if short:
        ds.skip(f"passage_under_{min_words}_words", short)
    if long_:
        ds.skip(f"passage_over_{max_words}_words", long_)
    ds.corpus = {pid: p for pid, p in ds.corpus.items() if pid in keep}
    return make_consistent(ds)


def make_consistent(ds: Dataset) -> Dataset:
    """Qrels only between kept queries and kept passages; queries without a positive are dropped."""
    qrels = {}
    for qid, rels in ds.qrels.items():
        if qid not in ds.queries:
            continue
        kept = {pid: r for pid, r in rels.items() if pid in ds.corpus and r > 0}
        if kept:
            qrels[qid] = kept
    dropped = [q for q in ds.queries if q not in qrels]
    if dropped:
        ds.skip("query_without_positive", len(dropped))
    ds.qrels = qrels
    ds.queries = {q: t for q, t in ds.queries.items() if q in qrels}
    ds.same_doc = {q: [p for p in pids if p in ds.corpus and p not in qrels[q]]
                   for q, pids in ds.same_doc.items() if q in qrels}
    return ds


def apply_limit(ds: Dataset, limit: int | None) -> Dataset:
    """Keep the first `limit` queries (source order), their positives and their same-document passages."""
    if limit is None or limit >= len(ds.queries):
        return ds
    if limit <= 0:
        raise ValueError("--limit must be positive")
    qids = list(ds.queries)[:limit]
    ds.queries = {q: ds.queries[q] for q in qids}
    ds.qrels = {q: ds.qrels[q] for q in qids if q in ds.qrels}
    ds.same_doc = {q: ds.same_doc[q] for q in qids if q in ds.same_doc}
    needed = {p for rels in ds.qrels.values() for p in rels} | {p for ps in ds.same_doc.values() for p in ps}
    ds.corpus = {pid: p for pid, p in ds.corpus.items() if pid in needed}
    return ds
