"""A JSON-lines file of (query, passage) pairs, and the same shape from a `datasets` table.

Fields: `query` (or `question`), `passage` (or `answer`, `positive`, `text`), optional `title`, optional
ids (`id`/`query_id`, `passage_id`). Missing ids are made stable from content (`stable_id`), so
re-ingesting the same file gives the same ids; rows repeating a query add positives to it. An id given to
two different texts is refused, naming both lines (`embedfit.data.id_rule`); a repeated pair is counted.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from embedfit.data.clean import clean_text
from embedfit.data.id_rule import IdRule
from embedfit.jsonl import get_id, get_str, read_jsonl
from embedfit.progress import progress
from embedfit.types import Dataset, Passage, stable_id

QUERY_KEYS = ("query", "question", "question_text", "anchor")
PASSAGE_KEYS = ("passage", "answer", "positive", "text", "context")
TITLE_KEYS = ("title", "passage_title")
QUERY_ID_KEYS = ("query_id", "id", "qid")
PASSAGE_ID_KEYS = ("passage_id", "pid", "corpus_id")


def looks_like_pairs(obj: dict) -> bool:
    return any(k in obj for k in QUERY_KEYS) and any(k in obj for k in PASSAGE_KEYS)


def add_pair(ids: IdRule, query: str, passage: str, title: str = "", qid: str | None = None, pid: str | None = None,
             path: Path | str = "", line: int | None = None) -> None:
    """Clean one pair and add it; empty query or passage is skipped and counted."""
    ds = ids.dataset
    query, passage, title = clean_text(query), clean_text(passage), clean_text(title)
    if not query:
        ds.skip("empty_query")
        return
    if not passage:
        ds.skip("empty_passage")
        return
    derived_q, derived_p = qid is None, pid is None
    qid, pid = qid or stable_id("q_", query), pid or stable_id("p_", passage)
    ids.add_query(qid, query, path, line, derived=derived_q)
    ids.add_passage(pid, Passage(title=title, text=passage), path, line, derived=derived_p)
    if pid in ds.qrels.get(qid, {}):
        ds.skip("duplicate_pair")
    ds.qrels.setdefault(qid, {})[pid] = 1


def load_pairs(path: str | Path) -> Dataset:
    path = Path(path)
    ds = Dataset(corpus={}, queries={}, qrels={}, source=f"pairs:{path}")
    ids = IdRule(ds, repeats_expected=True)
    for line, obj in progress(read_jsonl(path), desc="read pairs", unit="pair"):
        add_pair(
            ids,
            query=get_str(obj, QUERY_KEYS, path, line),
            passage=get_str(obj, PASSAGE_KEYS, path, line),
            title=get_str(obj, TITLE_KEYS, path, line, required=False) or "",
            qid=get_id(obj, QUERY_ID_KEYS, path, line, required=False),
            pid=get_id(obj, PASSAGE_ID_KEYS, path, line, required=False),
            path=path, line=line,
        )
    return ds


def pairs_from_rows(rows: Iterable[dict], source: str, columns: dict[str, str]) -> Dataset:
    """Pairs from an iterable of dict rows (a `datasets` split) using the given column mapping."""
    ds = Dataset(corpus={}, queries={}, qrels={}, source=source)
    ids = IdRule(ds, repeats_expected=True)
    for n, row in enumerate(progress(rows, desc="read rows", unit="row"), start=1):
        add_pair(ids, query=str(row[columns["query"]] or ""), passage=str(row[columns["passage"]] or ""),
                 title=str(row[columns["title"]] or "") if "title" in columns else "", path=source, line=n)
    return ds
