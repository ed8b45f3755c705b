"""The BM25 lexical index of a store's corpus, by bm25s: built once by ingest, saved in `STORE/lexical/`.

It lives in `retrieval` because ingest builds it and search, eval and the adapters read it; it is a side file
of the store folder (never in Chroma), so it works the same with an embedded store and a Chroma server.
`bm25_search` builds the same index in memory for a corpus that has none saved (a held-out corpus, a test),
so there is one BM25 implementation and a saved index ranks exactly as a fresh one.

Text indexed per passage: `title + " " + text` (as embedded, see `Passage.embedding_text`), lower-cased
and split by bm25s's tokenizer (words of two or more word characters), with bm25s's English stopwords
removed, then stemmed by the Snowball English stemmer (PyStemmer, a dependency, so every machine stems
alike). Scoring is Lucene's BM25 with k1 = 0.9, b = 0.4: Anserini's defaults, the BM25 that BEIR and MTEB
report. Measured on NQ (831 dev questions, paraphrase-MiniLM-L3-v2's adapter fused with it): bm25s's
defaults (no stemming, k1 = 1.5, b = 0.75) reached dev MRR@10 0.817 fused, these 0.828 (test 0.819 -> 0.834);
BM25 alone on SciFact's test claims went from nDCG@10 0.607 to 0.659 (BEIR's published Anserini figure on
the 300 standard claims: 0.665). The grid behind the choice (methods, k1, b, stemming; dev chooses) is in
docs/results.md.

A passage that shares no term with the query scores 0; such passages are left out of the results
rather than returned in arbitrary order, so a query may get fewer than k (even 0) results. Equal scores
are ordered by passage id, so a ranking (and the cut at k) is the same on every run and machine.

On disk (`LEXICAL_DIR`): bm25s's own files (`BM25.save`: the sparse score matrix, vocabulary, params)
and `index.json`, which says what they describe: the passage id of each document row (bm25s knows rows
only by number), the corpus fingerprint, the tokenizer and scoring settings, and a sha256 per file.
Loading checks all of that, so a damaged, stale or differently tokenized index is refused with a
`StoreError` instead of silently ranking the wrong passages; it never re-tokenizes the corpus.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import bm25s
import numpy as np

from embedfit import atomic
from embedfit.errors import DataError, StoreError
from embedfit.types import Corpus, Queries, Results, corpus_fingerprint

log = logging.getLogger(__name__)

LEXICAL_DIR = "lexical"
INDEX_FILE = "index.json"
FORMAT_VERSION = 2  # 2: stemmed, k1 0.9, b 0.4 (1 was unstemmed, k1 1.5, b 0.75: rebuilt on load by ingest)
#: how text becomes terms; saved with the index and compared on load (another rule means another index)
TOKENIZER = {"lower": True, "stopwords": "en", "stemmer": "snowball-english", "token_pattern": r"(?u)\b\w\w+\b"}
#: how terms are scored (bm25s.BM25's arguments); saved with the index and compared on load
SCORING = {"method": "lucene", "k1": 0.9, "b": 0.4}
#: names the rule (tokenizer, scoring, format) a fusion was chosen with: a choice made against another BM25 is
#: made again (`embedfit.retrieval.fusion.load_raw_fusion`)
SIGNATURE = hashlib.sha256(json.dumps([FORMAT_VERSION, TOKENIZER, SCORING], sort_keys=True).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _stem_words() -> Callable[[list[str]], list[str]]:
    import Stemmer  # PyStemmer: a C extension, loaded once

    return Stemmer.Stemmer("english").stemWords


def tokenize(texts: Sequence[str]) -> list[list[str]]:
    """The terms of each text, by the rule in `TOKENIZER` (the one tokenizer for passages and queries): stopwords
    are removed before stemming, as bm25s does."""
    return bm25s.tokenize(list(texts), lower=TOKENIZER["lower"], token_pattern=TOKENIZER["token_pattern"],
                          stopwords=TOKENIZER["stopwords"], stemmer=_stem_words(), return_ids=False,
                          show_progress=False)


def passage_text(title: str, text: str) -> str:
    """What is indexed for a passage: its title and text (the title's words count as the passage's)."""
    return f"{title} {text}"


@dataclass
class LexicalIndex:
    """A bm25s index plus the passage id of each of its document rows."""

    ids: list[str]  #: passage id of each bm25s document row
    fingerprint: str  #: `corpus_fingerprint` of the corpus it was built from
    bm25: bm25s.BM25
    #: each row's position among the sorted ids: breaks score ties by id without comparing strings per query
    _rank: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rank = np.empty(len(self.ids), dtype=np.int64)
        rank[np.argsort(np.asarray(self.ids, dtype=object), kind="stable")] = np.arange(len(self.ids))
        self._rank = rank

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, texts: Sequence[str], k: int) -> list[dict[str, float]]:
        """Per text: passage id -> BM25 score, only scores > 0, at most k, ordered by score desc then id
        (deterministic ties). `k` may exceed the corpus; a text with no indexed term gets {}."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        out: list[dict[str, float]] = []
        for tokens in tokenize(texts) if texts else []:
            term_ids = self.bm25.get_tokens_ids(tokens)  # unknown terms dropped; repeats kept (they count twice)
            if not term_ids:
                out.append({})
                continue
            scores = np.asarray(self.bm25.get_scores_from_ids(term_ids))
            rows = np.flatnonzero(scores > 0)
            if len(rows) > k:  # keep everything tied with the k-th score, then cut after the tie-break
                kth = np.partition(scores[rows], len(rows) - k)[len(rows) - k]
                rows = rows[scores[rows] >= kth]
            order = rows[np.lexsort((self._rank[rows], -scores[rows]))][:k]
            out.append({self.ids[i]: float(scores[i]) for i in order})
        return out

    def search_queries(self, queries: Mapping[str, str], k: int) -> Results:
        """`search` for every query: query id -> passage id -> score (BEIR's results)."""
        qids = list(queries)
        return dict(zip(qids, self.search([queries[q] for q in qids], k)))


def require_indexable(corpus: Corpus) -> None:
    """DataError unless some passage has a term BM25 can index (a word of two or more letters or digits): a corpus
    of emoji or symbols alone has none, and bm25s cannot build an index without a vocabulary."""
    if any(tokens for tokens in tokenize([passage_text(p.title, p.text) for p in corpus.values()])):
        return
    raise DataError(f"none of the {len(corpus)} passages has a word BM25 can index (words of two or more letters or "
                    "digits; emoji and symbols are not indexed), so no lexical index can be built")


def build_index(corpus: Corpus, fingerprint: str) -> LexicalIndex:
    """Tokenize and index every passage (rows in sorted id order); `fingerprint` is the corpus's."""
    if not corpus:
        raise ValueError("the corpus is empty")
    ids = sorted(corpus)
    bm25 = bm25s.BM25(**SCORING)
    bm25.index(tokenize([passage_text(corpus[p].title, corpus[p].text) for p in ids]), show_progress=False)
    log.info("BM25 index built over %d passages", len(ids))
    return LexicalIndex(ids=ids, fingerprint=fingerprint, bm25=bm25)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _params(bm25: bm25s.BM25) -> dict:
    return {"tokenizer": TOKENIZER, "method": bm25.method, "k1": bm25.k1, "b": bm25.b, "delta": bm25.delta,
            "idf_method": bm25.idf_method}


def save_index(index: LexicalIndex, folder: Path) -> None:
    """Write the index to `folder` atomically: into a temporary folder beside it, then swapped in, so a
    reader (or a rerun after `kill -9`) sees the old index or the whole new one. Only a writer of the
    store calls this (it clears temporary folders of earlier killed writes)."""
    folder = Path(folder)
    atomic.recover_dir(folder)
    atomic.remove_stale_temps(folder)
    tmp = atomic.make_temp_dir(folder)
    try:
        index.bm25.save(tmp, show_progress=False)  # bm25s writes plain files: fsync them before the swap
        files = {}
        for path in sorted(tmp.iterdir()):
            _fsync(path)
            files[path.name] = atomic.sha256_file(path)
        atomic.write_json(tmp / INDEX_FILE, {
            "format_version": FORMAT_VERSION,
            "fingerprint": index.fingerprint,
            "n": len(index.ids),
            "params": _params(index.bm25),
            "bm25s_version": bm25s.__version__,
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": files,
            "ids": index.ids,
        })
        atomic.replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("BM25 index saved to %s (%d passages)", folder, len(index.ids))


def _read_meta(folder: Path) -> dict:
    path = folder / INDEX_FILE
    if not path.is_file():
        why = "an interrupted write left it unfinished" if atomic.interrupted_aside(folder) else "it was never built"
        raise StoreError(f"no BM25 index at {folder} ({why})")
    try:
        meta = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise StoreError(f"the BM25 index at {folder} is damaged: {path.name} is unreadable ({exc})") from None
    ok = (isinstance(meta, dict) and isinstance(meta.get("ids"), list) and isinstance(meta.get("fingerprint"), str)
          and isinstance(meta.get("files"), dict) and meta.get("n") == len(meta["ids"])
          and all(isinstance(i, str) for i in meta["ids"]) and len(set(meta["ids"])) == len(meta["ids"]))
    if not ok:
        raise StoreError(f"the BM25 index at {folder} is damaged: {path.name} lacks consistent ids, n, fingerprint, files")
    return meta


def load_index(folder: Path, fingerprint: str | None = None) -> LexicalIndex:
    """The saved index, checked: every file as saved (sha256), the tokenizer as in this code, and (when
    `fingerprint` is given) built from that corpus. StoreError when missing, damaged or stale."""
    folder = Path(folder)
    meta = _read_meta(folder)
    if fingerprint is not None and meta["fingerprint"] != fingerprint:
        raise StoreError(f"the BM25 index at {folder} is stale: built for data {meta['fingerprint']}, "
                         f"the store now holds data {fingerprint}")
    params = meta.get("params", {})
    if meta.get("format_version") != FORMAT_VERSION or params.get("tokenizer") != TOKENIZER or any(
            params.get(key) != value for key, value in SCORING.items()):
        raise StoreError(f"the BM25 index at {folder} was built by another version of embedfit (another tokenizer "
                         "or scoring); rebuild it")
    for name, sha in meta["files"].items():
        path = folder / name
        if "/" in name or not path.is_file():
            raise StoreError(f"the BM25 index at {folder} is damaged: {name} is missing")
        if atomic.sha256_file(path) != sha:
            raise StoreError(f"the BM25 index at {folder} is damaged: {name} does not match its checksum")
    try:
        bm25 = bm25s.BM25.load(folder, load_corpus=False, show_progress=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"the BM25 index at {folder} is damaged: bm25s cannot load it ({exc})") from None
    n = len(meta["ids"])
    scores = bm25.scores
    n_terms = len(scores["indptr"]) - 1  # bm25s adds "" to the vocabulary after the matrix: it has no column
    term_ids = [i for t, i in bm25.vocab_dict.items() if t != ""]
    if scores.get("num_docs") != n or len(term_ids) != n_terms or (term_ids and max(term_ids) >= n_terms) or (
            len(scores["indices"]) and int(np.max(scores["indices"])) >= n):
        raise StoreError(f"the BM25 index at {folder} is damaged: its matrix does not fit its {n} ids")
    return LexicalIndex(ids=meta["ids"], fingerprint=meta["fingerprint"], bm25=bm25)


def bm25_search(corpus: Corpus, queries: Queries, k: int = 100) -> Results:
    """Top-k passages per query by BM25 score: query id -> passage id -> score (only scores > 0, best
    first, ties by passage id). Indexes `corpus` on every call; a store's index is `Store.lexical_index()`."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not corpus:
        raise ValueError("the corpus is empty")
    if not queries:
        return {}
    results = build_index(corpus, corpus_fingerprint(corpus)).search_queries(queries, k)
    log.info("BM25: %d queries over %d passages, k=%d", len(queries), len(corpus), k)
    return results
