"""One rule for ids that repeat inside a source, for every loader.

A file that gives the same id to two different texts contradicts itself: whichever one we kept, a gold
passage (or a question) would silently become another text. So:

- the same id with **different** content is refused with a `DataError` naming the file and both line
  numbers, and nothing is written;
- the same id with **identical** content (after cleaning) is merged: the first is kept and the repeat is
  counted in the dataset's `skipped` counts (`duplicate_passage_identical`, `duplicate_query_identical`),
  which the ingest summary prints.

Ids we derive from the text itself (`stable_id`, when the source has no ids) cannot disagree with their
content by construction: equal normalised text is one passage (or one question), the first title is kept.
In a pairs file a row per (query, positive) is the format, so there a repeated id with the same content is
expected and not counted; only a repeated (query, passage) pair is.
"""
from __future__ import annotations

from pathlib import Path

from embedfit.errors import DataError
from embedfit.types import Dataset, Passage


class IdRule:
    """Applies the rule above while a loader reads; remembers each id's first content and line."""

    def __init__(self, dataset: Dataset, repeats_expected: bool = False):
        self.dataset = dataset
        self.repeats_expected = repeats_expected
        self._first: dict[tuple[str, str], tuple[object, str, int | None]] = {}

    def claim(self, kind: str, key: str, content: object, path: Path | str, line: int | None,
              derived: bool = False) -> bool:
        """True when `key` is new; False for a repeat with the same content (counted unless expected or
        `derived`); DataError naming both lines for a repeat with different content."""
        first = self._first.get((kind, key))
        if first is None:
            self._first[(kind, key)] = (content, str(path), line)
            return True
        if derived:
            return False
        first_content, first_path, first_line = first
        if first_content == content:
            if not self.repeats_expected:
                self.dataset.skip(f"duplicate_{kind}_identical")
            return False
        where = f"line {first_line}" if first_path == str(path) else f"{first_path}:{first_line}"
        raise DataError(f"{kind} id {key!r} was already given to a different {kind} at {where}; an id must name "
                        f"one {kind}: fix the file (nothing was written)", path, line)

    def add_passage(self, pid: str, passage: Passage, path: Path | str, line: int | None, derived: bool = False) -> None:
        """Add passage `pid` unless it repeats; `derived` ids come from the text (a repeat is the same passage)."""
        if self.claim("passage", pid, passage, path, line, derived):
            self.dataset.corpus[pid] = passage

    def add_query(self, qid: str, text: str, path: Path | str, line: int | None, derived: bool = False) -> None:
        """Add query `qid` unless it repeats (same rule)."""
        if self.claim("query", qid, text, path, line, derived):
            self.dataset.queries[qid] = text
