"""The plain data that flows between stages (BEIR's vocabulary).

- `corpus: dict[str, Passage]` (passage id -> title, text)
- `queries: dict[str, str]` (query id -> question)
- `qrels: dict[str, dict[str, int]]` (query id -> passage id -> relevance)
- `results: dict[str, dict[str, float]]` (query id -> passage id -> score)

Ids are stable: the source's id where it has one, else a hash of the normalised text (`stable_id`).
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["query", "passage"]
SplitName = Literal["train", "dev", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "dev", "test")

Corpus = dict[str, "Passage"]
Queries = dict[str, str]
Qrels = dict[str, dict[str, int]]
Results = dict[str, dict[str, float]]


@dataclass(frozen=True)
class Passage:
    """One retrievable unit: a Wikipedia paragraph (or table/list) with its article title."""

    title: str
    text: str

    def embedding_text(self) -> str:
        """The string we embed: title and text joined by a space, as BEIR's sentence-BERT wrapper does."""
        return f"{self.title} {self.text}".strip() if self.title else self.text


@dataclass
class Dataset:
    """A loaded source, after cleaning and filtering.

    `same_doc` maps a query id to passages from the same Wikipedia page that are not its answer
    (only the NQ simplified format has them); `skipped` counts what was dropped and why.
    """

    corpus: Corpus
    queries: Queries
    qrels: Qrels
    source: str
    same_doc: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, n: int = 1) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + n


@dataclass(frozen=True)
class TrainingExample:
    """One query with its positives and mined negatives (ids into the corpus)."""

    query_id: str
    split: SplitName
    positive_ids: tuple[str, ...]
    weak_ids: tuple[str, ...]
    hard_ids: tuple[str, ...]
    same_doc_ids: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {
            "query_id": self.query_id,
            "split": self.split,
            "positive_ids": list(self.positive_ids),
            "weak_ids": list(self.weak_ids),
            "hard_ids": list(self.hard_ids),
            "same_doc_ids": list(self.same_doc_ids),
        }

    @classmethod
    def from_json(cls, obj: dict) -> TrainingExample:
        return cls(
            query_id=obj["query_id"],
            split=obj["split"],
            positive_ids=tuple(obj["positive_ids"]),
            weak_ids=tuple(obj["weak_ids"]),
            hard_ids=tuple(obj["hard_ids"]),
            same_doc_ids=tuple(obj.get("same_doc_ids", ())),
        )


def normalise_for_id(text: str) -> str:
    """Case- and punctuation-insensitive key: NFKC, lower case, Unicode alphanumerics only.

    The rule that deduplicated the shared NQ files (and made their `p_` ids), so token-spaced and
    natural text agree and our content ids match theirs.
    """
    return "".join(ch for ch in unicodedata.normalize("NFKC", text).lower() if ch.isalnum())


def stable_id(prefix: str, text: str) -> str:
    """`prefix` + the first 16 hex digits of sha1(normalised text): same text, same id, every run."""
    return prefix + hashlib.sha1(normalise_for_id(text).encode("utf-8")).hexdigest()[:16]


def text_sha(text: str) -> str:
    """sha256 of the exact text (content addressing; unlike `stable_id` it is not normalised)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def corpus_fingerprint(corpus: Corpus) -> str:
    """A short hash of every (id, title, text): two stores with the same fingerprint hold the same passages."""
    h = hashlib.sha256()
    for pid in sorted(corpus):
        p = corpus[pid]
        h.update(pid.encode("utf-8") + b"\0" + p.title.encode("utf-8") + b"\0" + p.text.encode("utf-8") + b"\n")
    return h.hexdigest()[:16]


def slug(name: str) -> str:
    """A filesystem- and Chroma-safe name: `openai:text-embedding-3-small` -> `openai-text-embedding-3-small`."""
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-._").lower()
    return s or "unnamed"
