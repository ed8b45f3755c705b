"""Everything training needs, as arrays: raw passage vectors (from the Chroma collection, i.e. exactly
what is stored), train/dev query vectors (saved by ingest), positives and mined negatives as indices."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from embedfit.errors import StoreError
from embedfit.store import chroma_store, query_vectors
from embedfit.store.store import Store
from embedfit.types import Qrels


@dataclass
class SplitData:
    query_ids: list[str]
    Q: np.ndarray  # (n, d) raw query vectors
    positives: list[np.ndarray]  # per query: passage indices
    hard: list[np.ndarray]  # per query: mined hard (+ same-document) negatives
    weak: list[np.ndarray]  # per query: random negatives
    qrels: Qrels


@dataclass
class TrainingData:
    model_id: str
    dim: int
    data_fingerprint: str
    raw_collection: str
    passage_ids: list[str]
    P: np.ndarray  # (n_passages, d) raw passage vectors
    train: SplitData
    dev: SplitData


def load_training_data(store: Store, model_id: str, dump: chroma_store.CollectionDump | None = None) -> TrainingData:
    """`dump`: the raw collection when the caller has already read it (eval does), else it is read here."""
    info = store.model_info(model_id)
    dump = dump or chroma_store.fetch_all(store.raw_collection(model_id))
    pindex = {pid: i for i, pid in enumerate(dump.ids)}
    qids, qvecs = query_vectors.load(store.root, model_id)
    qrow = {q: i for i, q in enumerate(qids)}
    qrels = store.load_qrels()
    examples = store.load_examples(model_id)

    def idx(ids) -> np.ndarray:
        return np.array([pindex[p] for p in ids if p in pindex], dtype=np.int64)

    def split(name: str) -> SplitData:
        ex = [e for e in examples if e.split == name and e.query_id in qrow]
        return SplitData(
            query_ids=[e.query_id for e in ex],
            Q=qvecs[[qrow[e.query_id] for e in ex]] if ex else np.zeros((0, info["dim"]), np.float32),
            positives=[idx(e.positive_ids) for e in ex],
            hard=[idx(e.hard_ids + e.same_doc_ids) for e in ex],
            weak=[idx(e.weak_ids) for e in ex],
            qrels={e.query_id: qrels[e.query_id] for e in ex},
        )

    data = TrainingData(model_id=model_id, dim=int(info["dim"]), data_fingerprint=info["data_fingerprint"],
                        raw_collection=info["collection"], passage_ids=dump.ids, P=dump.embeddings,
                        train=split("train"), dev=split("dev"))
    if not data.train.query_ids:
        raise StoreError(f"the store at {store.root} has no training queries for {model_id!r}")
    if not data.dev.query_ids:
        raise StoreError(f"the store at {store.root} has no dev queries: the adapter cannot be selected "
                         "(re-ingest with a dev share, e.g. --split 0.8 0.1 0.1)")
    return data
