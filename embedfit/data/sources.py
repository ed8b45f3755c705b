"""Which kind of source `--data` names, and loading it.

1. a folder with `corpus.jsonl` -> BEIR layout;
2. a `.jsonl`/`.jsonl.gz` file whose first object has `document_text` -> NQ simplified format;
3. a `.jsonl`/`.jsonl.gz` file whose first object has a query and a passage field -> pairs;
4. something that is not a path but looks like `org/name` -> a dataset id through `datasets`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

from embedfit.data.load_beir import is_beir_dir, load_beir
from embedfit.data.load_hub import OFFLINE_HINT, load_hub, looks_like_dataset_id
from embedfit.data.load_pairs import load_pairs, looks_like_pairs
from embedfit.data.load_simplified import load_simplified
from embedfit.errors import DataError
from embedfit.jsonl import read_jsonl
from embedfit.types import Dataset

log = logging.getLogger(__name__)

SourceKind = Literal["beir", "pairs", "simplified", "hub"]


def detect_source(data: str) -> SourceKind:
    path = Path(data).expanduser()
    if path.is_dir():
        if is_beir_dir(path):
            return "beir"
        raise DataError("folder without corpus.jsonl: expected a BEIR folder (corpus.jsonl, queries.jsonl, qrels.tsv)", path)
    if path.is_file():
        for _, first in read_jsonl(path):
            if "document_text" in first:
                return "simplified"
            if looks_like_pairs(first):
                return "pairs"
            raise DataError(
                f"cannot tell the format from the first object's fields {sorted(first)[:10]}: expected "
                "'document_text' (NQ simplified) or 'query' and 'passage' (pairs)", path, None)
    if looks_like_dataset_id(data):
        return "hub"
    raise DataError(f"no such file or folder; {OFFLINE_HINT}", path)


def load_source(data: str, min_words: int, max_words: int, limit: int | None = None,
                kind: SourceKind | None = None) -> Dataset:
    """Load and clean `data` of whatever kind it is (see module docstring); pass `kind` when already detected."""
    kind = kind or detect_source(data)
    log.info("data %s detected as %s", data, kind)
    if kind == "beir":
        return load_beir(data)
    if kind == "pairs":
        return load_pairs(data)
    if kind == "simplified":
        return load_simplified(data, min_words=min_words, max_words=max_words)
    return load_hub(data, limit=limit)
