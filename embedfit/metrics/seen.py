"""Seen and unseen queries: the breakdown that says for whom a customization helps.

A scored query is **seen** when every passage relevant to it was a positive of some training query: the
adapter (or a passage-side transform) has been shown those very documents. It is **unseen** otherwise
(at least one relevant passage is new to training). Customizations on frozen embeddings mostly help seen
queries, the ones users repeat about the same documents; reporting only the overall figure would hide
both a large gain there and a loss on new documents. With ingest's `grouped` split no test query is seen
by construction; with `random` most repeated-document queries are.
"""
from __future__ import annotations

from collections.abc import Iterable

from embedfit.types import Qrels

SUBSETS = ("seen", "unseen")


def trained_passages(qrels: Qrels, train_ids: Iterable[str]) -> set[str]:
    """Every passage that is a positive of some training query."""
    return {p for q in train_ids for p, r in qrels.get(q, {}).items() if r > 0}


def seen_unseen(qrels: Qrels, query_ids: Iterable[str], trained: set[str]) -> dict[str, list[str]]:
    """{"seen": [...], "unseen": [...]} of `query_ids` (order kept); a query without any relevant passage
    is in neither (it is not scored)."""
    out: dict[str, list[str]] = {"seen": [], "unseen": []}
    for q in query_ids:
        rel = {p for p, r in qrels.get(q, {}).items() if r > 0}
        if rel:
            out["seen" if rel <= trained else "unseen"].append(q)
    return out
