"""Held-out queries from files (`--queries` BEIR queries.jsonl, `--qrels` qrels.tsv), checked against a store.

This is how a user scores questions the system never saw. The rules, so that "n_queries" means
exactly what was given:

- a query is scored when it is in the queries file *and* has at least one qrels row with score > 0
  whose passage is in the store's corpus; everything else is counted, logged and reported, never
  silently dropped or silently scored 0;
- query texts are cleaned as ingest cleans them, so a question typed the same way embeds the same way;
- a query whose id *or* normalised text matches a query of the store's train (or dev) split is
  flagged: the adapter was fitted (or selected) on it, so its score is not a held-out score.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import DataError
from core.types import Corpus, Qrels, Queries, normalise_for_id
from ingest.clean import clean_text
from ingest.jsonl import get_str, read_jsonl
from ingest.load_beir import read_qrels

log = logging.getLogger(__name__)


@dataclass
class HeldOut:
    """The queries that will be scored, their qrels, and what was left out and why."""

    queries: Queries
    qrels: Qrels
    source: str
    skipped: dict[str, int] = field(default_factory=dict)
    #: split name -> scored query ids that the store also has in that split (train/dev = not held out)
    overlap: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n


def read_queries_file(path: Path) -> Queries:
    """id -> cleaned text from a BEIR queries.jsonl (`_id` or `id`, `text`); a duplicate id is an error."""
    out: Queries = {}
    for line, obj in read_jsonl(path):
        qid = get_str(obj, ("_id", "id"), path, line)
        if qid in out:
            raise DataError(f"query id {qid!r} appears twice", path, line)
        out[qid] = clean_text(get_str(obj, ("text",), path, line))
    return out


def load_heldout(queries_path: Path, qrels_path: Path, corpus: Corpus,
                 store_queries: Queries, store_splits: dict[str, str]) -> HeldOut:
    """Read both files and keep the queries that can be scored against `corpus` (rules: module docstring)."""
    queries_path, qrels_path = Path(queries_path), Path(qrels_path)
    given = read_queries_file(queries_path)
    held = HeldOut(queries={}, qrels={}, source=f"{queries_path} + {qrels_path}")
    for qid, pid, score in read_qrels(qrels_path):
        if score <= 0:
            held.skip("qrels_row_not_relevant")
        elif qid not in given:
            held.skip("qrels_row_for_unknown_query")
        elif pid not in corpus:
            held.skip("qrels_row_for_passage_not_in_store")
        else:
            held.qrels.setdefault(qid, {})[pid] = score
    for qid, text in given.items():
        if not text:
            held.skip("empty_query")
            held.qrels.pop(qid, None)
        elif qid not in held.qrels:
            held.skip("query_without_usable_qrels")
        else:
            held.queries[qid] = text
    if not held.queries:
        raise DataError(f"no query in {queries_path} has a qrels row (score > 0) in {qrels_path} for a passage of "
                        f"the store's corpus; nothing to score (skipped: {held.skipped})", queries_path)
    by_text: dict[str, str] = {normalise_for_id(t): q for q, t in store_queries.items()}
    for qid, text in held.queries.items():
        store_qid = qid if qid in store_splits else by_text.get(normalise_for_id(text))
        split = store_splits.get(store_qid) if store_qid else None
        if split in ("train", "dev"):
            held.overlap.setdefault(split, []).append(qid)
    for split, ids in held.overlap.items():
        log.warning("%d of the %d given queries are in the store's %s split (by id or text): the adapter %s them",
                    len(ids), len(held.queries), split, "was trained on" if split == "train" else "was selected on")
    if held.skipped:
        log.info("held-out queries: scoring %d; skipped %s", len(held.queries), held.skipped)
    return held
