"""A dataset id loaded with `datasets.load_dataset` (default `sentence-transformers/natural-questions`).

Needs the internet (or the local Hugging Face cache with HF_DATASETS_OFFLINE=1). Offline it fails
within seconds with a message that says how to use local data instead, rather than hanging on retries.
"""
from __future__ import annotations

import logging
import os

from embedfit.data.load_pairs import PASSAGE_KEYS, QUERY_KEYS, TITLE_KEYS, pairs_from_rows
from embedfit.embed.registry import hub_reachable
from embedfit.errors import DataError, OfflineError
from embedfit.types import Dataset

log = logging.getLogger(__name__)

OFFLINE_HINT = (
    "set EMBEDFIT_DATA (or --data) to a local folder or file instead, e.g. EMBEDFIT_DATA=../shared/data/nq "
    "(a BEIR folder), a pairs .jsonl file, or an NQ simplified .jsonl(.gz) file"
)


def looks_like_dataset_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and " " not in name


def load_hub(dataset_id: str, split: str = "train", limit: int | None = None) -> Dataset:
    offline_mode = os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1"
    if not offline_mode and not hub_reachable():
        raise OfflineError(f"cannot reach huggingface.co to download the dataset {dataset_id!r}: {OFFLINE_HINT}")
    import datasets  # lazy: a heavy import (seconds), needed only for hub ids, not for local data

    try:
        table = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:  # datasets raises many types for "not cached" / "no connection"
        # one clear line for the CLI; the cause stays chained for tracebacks and debuggers
        if offline_mode:
            raise OfflineError(
                f"dataset {dataset_id!r} is not in the local Hugging Face cache and offline mode is on "
                f"(HF_DATASETS_OFFLINE/HF_HUB_OFFLINE): {OFFLINE_HINT}") from exc
        raise DataError(f"could not load dataset {dataset_id!r}: {type(exc).__name__}: {exc}") from exc
    names = list(table.column_names)
    columns = {}
    for role, keys in (("query", QUERY_KEYS), ("passage", PASSAGE_KEYS), ("title", TITLE_KEYS)):
        found = next((k for k in keys if k in names), None)
        if found:
            columns[role] = found
    if "query" not in columns or "passage" not in columns:
        raise DataError(f"dataset {dataset_id!r} has columns {names}; expected a query column ({QUERY_KEYS}) "
                        f"and a passage column ({PASSAGE_KEYS})")
    if limit is not None:
        table = table.select(range(min(limit * 2, len(table))))
    return pairs_from_rows(iter(table), f"hub:{dataset_id}", columns)
