"""Load Google's NQ *simplified* format (`.jsonl` or `.jsonl.gz`) into a `Dataset`.

Why this source: unlike the shared pairs it has whole Wikipedia pages, so each question gets, besides
its answer, the other paragraphs, tables and lists of the same page ("same-document" negatives):
topically close passages that do not answer it: natural hard negatives, at no mining cost.

Per line (one example, streamed, since real files are gigabytes):
- query `nq_<example_id>` = `clean_text(question_text)`; an empty question is skipped ("empty_query").
- positive = the token span of the first annotation with a long answer (`candidate_index >= 0`),
  cut from `document_text.split(" ")` and made readable by `html_to_text`; examples without one are
  skipped ("no_long_answer", about half of NQ).
- title = the page's `<H1>` text, else the text before the first tag (minus " - wikipedia"), else the
  `title=` of `document_url`.
- same-document negatives = the other *top-level* candidates (paragraphs, tables, lists; nested ones
  are parts of those). A candidate that overlaps the long answer of *any* annotation is left out:
  it contains, or is contained in, an answer, so it is no negative. They go into the corpus and
  `Dataset.same_doc[query_id]`; their ids never include the query's positive.
- passage id = `stable_id("p_", text)`, so equal text from two pages is one passage (the first title
  seen is kept) and ids agree with the shared files' convention.

Length filter, in words (whitespace-separated after cleaning), on positives and negatives alike, with
the defaults every source shares (`embedfit.data.filters`: 4 and 2000 words). 4 keeps every real answer of
the shared corpus (the shortest are cast-list items such as "James Fleet as Tom") while rejecting the
1-3 word table cells and list fragments a page is full of ("American", "Ted Mosby"). Pages also hold
giant flattened tables (one candidate of the sample page is 8,679 tokens); embedders truncate them at
128-256 tokens anyway. A positive outside the range drops its example ("positive_too_short" /
"positive_too_long"); negatives outside it are counted as "same_doc_too_short" / "same_doc_too_long".

Bad input raises `DataError` naming the file and, where there is one, the 1-based line: a missing
file, a `.gz` that is not gzip, corrupt or truncated gzip, invalid UTF-8, a line that is not a JSON
object, fields of the wrong type, token indices out of range, an empty file. A UTF-8 BOM, CRLF line
ends and blank lines are fine.
"""
from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from embedfit.data.clean import clean_text
from embedfit.data.filters import DEFAULT_MAX_WORDS, DEFAULT_MIN_WORDS
from embedfit.data.html_text import html_to_text, tag_name
from embedfit.data.id_rule import IdRule
from embedfit.errors import DataError, InputError
from embedfit.jsonl import read_jsonl
from embedfit.progress import progress
from embedfit.types import Dataset, Passage, stable_id

logger = logging.getLogger(__name__)


_TITLE_SEARCH_TOKENS = 200  # the <H1> is at the top of the page
_MAX_TITLE_TOKENS = 64
_EXAMPLE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_WIKIPEDIA_SUFFIX = re.compile(r"\s+[-–]\s+wikipedia$", re.IGNORECASE)


@dataclass(frozen=True)
class _Span:
    start: int
    end: int
    top_level: bool = True


@dataclass(frozen=True)
class _Example:
    query_id: str
    question: str
    tokens: list[str]
    url: str
    candidates: list[_Span]
    long_answers: list[_Span]  # one per annotation that has a long answer, in annotation order


def word_count(text: str) -> int:
    """Words as the length filter counts them: whitespace-separated chunks of the cleaned text."""
    return len(text.split())


def load_simplified(
    path: str | Path, min_words: int = DEFAULT_MIN_WORDS, max_words: int = DEFAULT_MAX_WORDS
) -> Dataset:
    """Read an NQ simplified `.jsonl`/`.jsonl.gz` file (see the module docstring for every rule)."""
    if isinstance(min_words, bool) or isinstance(max_words, bool) or not (1 <= min_words <= max_words):
        raise InputError(f"need 1 <= min_words <= max_words, got min_words={min_words}, max_words={max_words}")
    path = Path(path)
    dataset = Dataset(corpus={}, queries={}, qrels={}, source=f"nq-simplified:{path}")
    ids = IdRule(dataset)
    n_records = 0
    for line_no, record in progress(read_jsonl(path), desc=f"reading {path.name}", unit=" examples"):
        n_records += 1
        example = _parse(record, path, line_no)
        # the example id is the query id: the same id twice must be the same question (embedfit.data.id_rule)
        if ids.claim("query", example.query_id, clean_text(example.question), path, line_no):
            _add_example(dataset, example, min_words, max_words)
    logger.info(
        "%s: %d examples -> %d queries, %d passages; skipped %s",
        path, n_records, len(dataset.queries), len(dataset.corpus), dataset.skipped or "nothing",
    )
    return dataset


def _parse(record: dict, path: Path, line_no: int) -> _Example:
    """Check the fields this loader uses and turn them into an `_Example`."""

    def fail(message: str) -> DataError:
        return DataError(message, path, line_no)

    def field(obj: dict, key: str, kinds: type | tuple[type, ...], where: str = "") -> object:
        if key not in obj:
            raise fail(f"missing field {where}{key!r}")
        value = obj[key]
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in _as_tuple(kinds)):
            names = " or ".join(k.__name__ for k in _as_tuple(kinds))
            raise fail(f"field {where}{key!r} must be {names}, got {type(value).__name__}")
        return value

    document = field(record, "document_text", str)
    tokens = document.split(" ")
    question = field(record, "question_text", str)
    example_id = field(record, "example_id", (int, str))
    if isinstance(example_id, str) and not _EXAMPLE_ID.fullmatch(example_id):
        raise fail(f"field 'example_id' must be a number or a short [A-Za-z0-9_.-] string, got {example_id[:80]!r}")
    url = record.get("document_url") or ""
    if not isinstance(url, str):
        raise fail(f"field 'document_url' must be str, got {type(url).__name__}")

    def span(obj: dict, where: str) -> _Span:
        start = field(obj, "start_token", int, where)
        end = field(obj, "end_token", int, where)
        if not 0 <= start <= end <= len(tokens):
            raise fail(f"{where}token span [{start}, {end}) is outside the document's {len(tokens)} tokens")
        top_level = obj.get("top_level", True)
        if not isinstance(top_level, bool):
            raise fail(f"field {where}'top_level' must be bool, got {type(top_level).__name__}")
        return _Span(start, end, top_level)

    candidates = []
    for i, cand in enumerate(field(record, "long_answer_candidates", list)):
        where = f"long_answer_candidates[{i}]."
        if not isinstance(cand, dict):
            raise fail(f"{where[:-1]} must be an object, got {type(cand).__name__}")
        candidates.append(span(cand, where))
    long_answers = []
    for i, annotation in enumerate(field(record, "annotations", list)):
        if not isinstance(annotation, dict):
            raise fail(f"annotations[{i}] must be an object, got {type(annotation).__name__}")
        where = f"annotations[{i}].long_answer."
        answer = field(annotation, "long_answer", dict, f"annotations[{i}].")
        index = field(answer, "candidate_index", int, where)
        if index < 0:
            continue
        if index >= len(candidates):
            raise fail(f"{where}candidate_index {index} but there are {len(candidates)} candidates")
        long_answers.append(span(answer, where))
    return _Example(f"nq_{example_id}", question, tokens, url, candidates, long_answers)


def _as_tuple(kinds: type | tuple[type, ...]) -> tuple[type, ...]:
    return kinds if isinstance(kinds, tuple) else (kinds,)


def _add_example(dataset: Dataset, example: _Example, min_words: int, max_words: int) -> None:
    """Add one example's query, positive and same-document negatives, or count why it was skipped."""
    if not example.long_answers:
        dataset.skip("no_long_answer")
        return
    question = clean_text(example.question)
    if not question:
        dataset.skip("empty_query")
        return
    answer = example.long_answers[0]
    text = html_to_text(example.tokens[answer.start:answer.end])
    reason = _length_problem(text, min_words, max_words)
    if reason:
        dataset.skip(f"positive_{reason}")
        return
    title = _title(example.tokens, example.url)
    positive_id = stable_id("p_", text)
    dataset.corpus.setdefault(positive_id, Passage(title=title, text=text))
    dataset.queries[example.query_id] = question
    dataset.qrels[example.query_id] = {positive_id: 1}

    negatives: list[str] = []
    for cand in example.candidates:
        if not cand.top_level or any(_overlaps(cand, a) for a in example.long_answers):
            continue
        neg_text = html_to_text(example.tokens[cand.start:cand.end])
        reason = _length_problem(neg_text, min_words, max_words)
        if reason:
            dataset.skip(f"same_doc_{reason}")
            continue
        neg_id = stable_id("p_", neg_text)
        if neg_id == positive_id or neg_id in negatives:
            continue
        dataset.corpus.setdefault(neg_id, Passage(title=title, text=neg_text))
        negatives.append(neg_id)
    dataset.same_doc[example.query_id] = negatives


def _length_problem(text: str, min_words: int, max_words: int) -> str | None:
    n = word_count(text)
    if n < min_words:
        return "too_short"
    if n > max_words:
        return "too_long"
    return None


def _overlaps(a: _Span, b: _Span) -> bool:
    return a.start < b.end and b.start < a.end


def _title(tokens: list[str], url: str) -> str:
    """The page title: its <H1>, else the text before the first tag, else the URL's `title=`."""
    head = tokens[:_TITLE_SEARCH_TOKENS]
    names = [tag_name(t) for t in head]
    if "h1" in names:
        start = names.index("h1") + 1
        title = clean_text(_words_before_a_tag(head[start:], names[start:]))
        if title:
            return title
    title = _WIKIPEDIA_SUFFIX.sub("", clean_text(_words_before_a_tag(head, names)))
    return title or _title_from_url(url)


def _words_before_a_tag(tokens: list[str], names: list[str | None]) -> str:
    words = []
    for token, name in zip(tokens, names, strict=True):
        if name is not None or len(words) >= _MAX_TITLE_TOKENS:
            break
        words.append(token)
    return " ".join(words)


def _title_from_url(url: str) -> str:
    """`...index.php?title=The_Mother_(How_I_Met_Your_Mother)&amp;oldid=1` or `.../wiki/X` -> the title."""
    try:
        parsed = urlparse(html.unescape(url))
    except ValueError:
        return ""
    name = parse_qs(parsed.query).get("title", [""])[0]
    if not name and "/wiki/" in parsed.path:
        name = unquote(parsed.path.rsplit("/wiki/", 1)[1])
    return clean_text(name.replace("_", " "))
