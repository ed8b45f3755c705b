"""Open everything the page needs once, before the server starts (`open_app`).

The store must exist (otherwise there is nothing to show: a StoreError names the ingest command).
The adapter is optional: when it is missing, or refused because it does not fit the store, the page
still serves the raw column and says why the other one is empty and what to run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from embedfit.adapters.adapter import Adapter
from embedfit.adapters.io import adapter_sha, load_adapter
from embedfit.app.config import AppConfig
from embedfit.embed import load_embedder
from embedfit.embed.base import Embedder
from embedfit.embed.registry import DEFAULT_MODEL
from embedfit.errors import EmbedfitError
from embedfit.search.retriever import Retriever, check_adapter
from embedfit.store.store import Store

log = logging.getLogger(__name__)


@dataclass
class AppState:
    cfg: AppConfig
    retriever: Retriever
    examples: list[str]
    summary: str  # one line about the store, model and adapter, for the page header


def open_app(cfg: AppConfig, embedder: Embedder | None = None) -> AppState:
    store = Store(cfg.store, cfg.chroma_host, cfg.chroma_port, write=False)
    info = store.model_info(cfg.model)  # StoreError naming the ingest command when the store is missing
    embedder = embedder or load_embedder(cfg.model, cfg.device)
    adapter, sha, note = load_adapter_or_note(store, cfg, info["dim"])
    retriever = Retriever(store, cfg.model, adapter, embedder=embedder, adapter_note=note, adapter_sha=sha,
                          adapter_dir=str(cfg.adapter_dir()),
                          max_chars=cfg.max_chars, max_k=cfg.max_k)
    manifest = store.manifest()
    summary = (f"Store `{cfg.store}`: {manifest.get('n_passages', '?')} passages, {manifest.get('n_queries', '?')} "
               f"questions of `{retriever.dataset}` · model `{cfg.model}` · adapter: "
               + (f"`{adapter.describe()}`" if adapter is not None else "none")
               + "".join(f" · {w} Then restart the app." for w in retriever.warnings))
    return AppState(cfg=cfg, retriever=retriever, examples=example_questions(store, retriever, cfg.n_examples),
                    summary=summary)


def load_adapter_or_note(store: Store, cfg: AppConfig, dim: int) -> tuple[Adapter | None, str | None, str | None]:
    """(adapter, its `adapter_sha`, note): the adapter when usable, else None and what to do about it.

    Notes also flag adapters that load but deserve a word (identity, trained on other data).
    """
    folder: Path = cfg.adapter_dir()
    if not (folder / "config.json").exists():
        log.warning("no adapter at %s: serving the raw column only", folder)
        model = "" if cfg.model == DEFAULT_MODEL else f" --model {cfg.model}"
        return None, None, (f"No adapter at `{folder}`, so there is nothing to compare yet. Train one with "
                      f"`embedfit train --store {cfg.store}{model} --out {folder}` and restart the app.")
    try:
        adapter = load_adapter(folder)
        sha = adapter_sha(folder)
        check_adapter(store, cfg.model, dim, adapter, sha, str(folder))
    except EmbedfitError as exc:
        log.warning("adapter at %s refused: %s", folder, exc)
        return None, None, f"Adapter at `{folder}` refused: {exc}"
    notes = []
    if adapter.is_identity:
        notes.append("This adapter is the identity: training found nothing that beat the raw embeddings on dev, "
                     "so both columns agree.")
    fingerprint = store.model_info(cfg.model).get("data_fingerprint")
    if fingerprint and adapter.config.data_fingerprint != fingerprint:
        notes.append(f"The adapter was trained on other data ({adapter.config.data_fingerprint}) than this store holds "
                     f"({fingerprint}); some questions here may have been in its training set.")
    return adapter, sha, " ".join(notes) or None


def example_questions(store: Store, retriever: Retriever, n: int) -> list[str]:
    """`n` test-split questions with a known gold passage, spread evenly over the sorted ids (same every run)."""
    try:
        qids = [q for q in store.split_query_ids("test") if q in retriever.queries and _has_gold(retriever, retriever.queries[q])]
    except EmbedfitError:
        qids = []
    if not qids:
        qids = sorted(retriever.queries)
    if not qids or n <= 0:
        return []
    step = max(1, len(qids) // n)
    return [retriever.queries[q] for q in qids[::step][:n]]


def _has_gold(retriever: Retriever, question: str) -> bool:
    match = retriever.match(question)
    return bool(match and match.gold_ids)
