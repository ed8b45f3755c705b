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

from embedfit.data.clean import clean_text
from embedfit.data.id_rule import IdRule
from embedfit.data.load_beir import read_qrels
from embedfit.errors import DataError
from embedfit.jsonl import get_str, read_jsonl
from embedfit.types import Corpus, Dataset, Qrels, Queries, normalise_for_id

log = logging.getLogger(__name__)


@dataclass
class HeldOut:
    """The queries that will be scored, their qrels, and what was left out and why."""

    queries: Queries
    qrels: Qrels
    source: str
    skipped: dict[str, int] = field(default_factory=dict)
    #: queries in the queries file
    n_given: int = 0
    #: split name -> scored query ids that the store also has in that split (train/dev = not held out)
    overlap: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n


def read_queries_file(path: Path, counts: dict[str, int] | None = None) -> Queries:
    """id -> cleaned text from a BEIR queries.jsonl (`_id` or `id`, `text`); repeated ids follow ingest's
    rule (`embedfit.data.id_rule`: different text refused, identical merged and counted into `counts`)."""
    ds = Dataset(corpus={}, queries={}, qrels={}, source=str(path))
    ids = IdRule(ds)
    for line, obj in read_jsonl(path):
        ids.add_query(get_str(obj, ("_id", "id"), path, line), clean_text(get_str(obj, ("text",), path, line)), path, line)
    if counts is not None:
        for reason, n in ds.skipped.items():
            counts[reason] = counts.get(reason, 0) + n
    return ds.queries


def load_heldout(queries_path: Path, qrels_path: Path, corpus: Corpus,
                 store_queries: Queries, store_splits: dict[str, str]) -> HeldOut:
    """Read both files and keep the queries that can be scored against `corpus` (rules: module docstring)."""
    queries_path, qrels_path = Path(queries_path), Path(qrels_path)
    held = HeldOut(queries={}, qrels={}, source=f"{queries_path} + {qrels_path}")
    given = read_queries_file(queries_path, held.skipped)
    held.n_given = len(given)
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


def require_enough(held: HeldOut, min_queries: int, min_usable: float) -> None:
    """Refuse to report on a handful of queries: a figure on 1 of 51 queries is not the file's figure.

    Too few is fewer than `min_queries`, or fewer than `min_usable` of the queries the file gives; the
    message lists why the others were skipped, so the user can fix the files (or lower the bounds).
    """
    n, given = len(held.queries), held.n_given
    if n >= min_queries and n >= min_usable * given:
        return
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(held.skipped.items())) or "none"
    raise DataError(
        f"only {n} of the {given} queries can be scored (need at least {min_queries} and at least "
        f"{min_usable:.0%} of the file); skipped: {reasons}. Check that the qrels name passages of this store's "
        f"corpus, or lower --min-queries / --min-usable to report anyway")
