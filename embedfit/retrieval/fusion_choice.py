"""Choosing how the raw embeddings of a model are fused with BM25 (the `raw+bm25` system), on dev only.

Ingest has everything the choice needs the moment it has embedded the data: the dev split, the raw
vectors and the lexical index. So it chooses here and saves the choice beside the store
(`STORE/fusion/MODEL.json`, `embedfit.retrieval.fusion.save_raw_fusion`); eval and the app only read it, and the test
and held-out queries never choose anything. An adapter's own fusion is chosen when it is trained
(`embedfit.adapters.train.choose_adapter_fusion`), by the same `embedfit.retrieval.fusion.choose_fusion`.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from embedfit.retrieval.exact import exact_search
from embedfit.retrieval.fusion import DEFAULT_N, FusionChoice, choose_fusion
from embedfit.retrieval.lexical import LexicalIndex
from embedfit.types import Qrels, Queries, Results, SplitName

log = logging.getLogger(__name__)


def choose_dev_fusion(query_ids: Sequence[str], query_vecs: np.ndarray, passage_ids: Sequence[str],
                      passage_vecs: np.ndarray, queries: Queries, qrels: Qrels,
                      splits: Mapping[str, SplitName], index: LexicalIndex,
                      n: int = DEFAULT_N) -> FusionChoice | None:
    """The fusion of a dense space (the raw vectors, or an adapter's projections of them) and BM25 with the
    best dev MRR@10; None when there is no judged dev query (a tiny `--limit` run), which the log says."""
    rows = [i for i, q in enumerate(query_ids) if splits.get(q) == "dev" and qrels.get(q)]
    if not rows:
        log.warning("no judged dev query: raw+BM25 fusion not chosen (eval and the app will say so)")
        return None
    dev = [query_ids[i] for i in rows]
    return fuse_on_dev(exact_search(query_vecs[rows], dev, passage_vecs, passage_ids, k=n), queries, qrels, index, n=n)


def fuse_on_dev(dense: Results, queries: Queries, qrels: Qrels, index: LexicalIndex, *, metric: str = "MRR@10",
                n: int = DEFAULT_N) -> FusionChoice:
    """The fusion choice for a dense ranking of the dev queries (`dense`: query id -> its top n): the same
    queries' BM25 top n from `index`, then `embedfit.retrieval.fusion.choose_fusion`. Shared by ingest (raw vectors) and
    adapter training (the adapter's projections)."""
    lexical = index.search_queries({q: queries[q] for q in dense}, n)
    choice = choose_fusion(dense, lexical, {q: qrels[q] for q in dense if q in qrels}, metric=metric, n=n)
    log.info("BM25 fusion chosen on %d dev queries: %s (dev %s %.4f; dense alone %.4f)", choice.n_queries,
             choice.spec.describe(), metric, choice.score, choice.dense_only)
    return choice
