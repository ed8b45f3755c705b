"""The store: one folder (`--store`, default `.data/store`) that holds everything ingest produced.

    STORE/
      manifest.json          what is in here: data source, fingerprint, models and their collections
      dataset/               the cleaned, filtered data in BEIR layout (corpus.jsonl, queries.jsonl, qrels.tsv,
                             same_doc.json)
      splits.json            query id -> train/dev/test (seeded, no positive shared across splits)
      negatives/MODEL.jsonl  training examples: positives, weak and hard negatives per query
      query_vectors/MODEL.npz  the query embeddings (eval and training read them; no re-embedding)
      lexical/               the BM25 index of dataset/corpus.jsonl (bm25s files + index.json: row ids, data
                             fingerprint); built by ingest, or alone by `embedfit ingest --store STORE --lexical-only`
      ingest_summary.json    what the last ingest did (counts, skips, timings)
      chroma/                Chroma's files (embedded mode; absent when a Chroma server is used)

Every file is written atomically; `manifest.json` is written last, so a store whose manifest lists a
model is complete for that model. `.embedfit-store` is written first: it marks a folder as a store of ours
even before its manifest exists (an interrupted first ingest), so a rerun may write into it while a
non-empty folder of somebody else's is refused (`STORE_OUTPUT`, rules in `embedfit.outputs`).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from embedfit import atomic
from embedfit.embed.base import encoder_id
from embedfit.errors import MismatchError, StoreError
from embedfit.jsonl import read_jsonl
from embedfit.metrics.seen import trained_passages
from embedfit.outputs import OutputKind, read_json_object
from embedfit.retrieval.lexical import LEXICAL_DIR, LexicalIndex, load_index
from embedfit.store.chroma_store import ChromaTarget, get_collection, open_client, resolve_target
from embedfit.types import Corpus, Dataset, Passage, Qrels, Queries, SplitName, TrainingExample, slug

log = logging.getLogger(__name__)

#: the store folder's format; a store of another format is refused with the command that rebuilds it
FORMAT_VERSION = 2
STORE_MARKER = ".embedfit-store"


def is_store_dir(path: Path) -> bool:
    """A store of ours: the marker ingest writes first, a manifest (of any format: an older store is still ours
    to recognise, and is refused when read, see `Store.manifest`), or the lock file every process that opens the
    embedded store creates before anything else (a store opened, never yet written)."""
    path = Path(path)
    manifest = read_json_object(path / "manifest.json")
    return ((path / STORE_MARKER).is_file() or (manifest is not None and "models" in manifest)
            or (path / ".store.lock").is_file())


STORE_OUTPUT = OutputKind("a store folder", is_store_dir, replaces=False)


def raw_collection_name(model_id: str) -> str:
    """`raw-<model>`: one raw collection per embedding model in a store."""
    return "raw-" + slug(model_id)[:100]


def check_collection_encoder(col: Any, model_id: str, dim: int, encoder: str | None = None) -> None:
    """MismatchError when a collection's metadata (written by ingest: `model_id`, `dim`, `encoder`) disagrees with
    the encoder about to use it (`encoder`: its exact build, checked when given). A collection without that
    metadata was not written by this version's ingest (or was edited): refused, naming the command that rebuilds it."""
    meta = col.metadata or {}
    have_model, have_dim = meta.get("model_id"), meta.get("dim")
    if have_model is None or have_dim is None:
        raise MismatchError(f"collection {col.name!r} does not say which model made its vectors (no model_id/dim "
                            f"metadata: not written by this version of embedfit ingest); rebuild it in a new store: "
                            f"embedfit ingest --model {model_id} --store NEW_STORE")
    if have_model != model_id:
        raise MismatchError(f"collection {col.name!r} holds vectors of {have_model!r}, not {model_id!r}: the two "
                            f"encoders' vectors must not be mixed; ingest with --model {model_id} to get its own collection")
    if int(have_dim) != dim:
        raise MismatchError(f"collection {col.name!r} holds {have_dim}-d vectors, but {model_id!r} makes {dim}-d ones")
    have_build = meta.get("encoder")
    if encoder is not None and have_build is not None and have_build != encoder:
        raise MismatchError(f"collection {col.name!r} holds vectors of the encoder build {have_build!r}, not {encoder!r}; "
                            "refusing to mix them (use another --store)")


def check_encoder_build(info: dict, embedder: Any) -> None:
    """MismatchError when a model's manifest entry names another build of its encoder than `embedder` (the int8
    graphs are built on each machine: another recipe or onnxruntime gives other vectors under the same name).
    Entries from before ingest recorded it are let through."""
    want = info.get("encoder")
    have = encoder_id(embedder)
    if want is not None and want != have:
        raise MismatchError(f"the store's {embedder.model_id} vectors were made by the encoder build {want!r}, but this "
                            f"one is {have!r} (another quantization recipe or onnxruntime): its queries would not match "
                            "the stored passages; re-ingest into a new store with this build")


@dataclass
class Store:
    """A store folder plus (lazily) its Chroma client. `write=True` takes the exclusive local lock."""

    root: Path
    chroma_host: str | None = None
    chroma_port: int | None = None
    write: bool = False
    _client: Any = field(default=None, init=False, repr=False)
    _lexical: LexicalIndex | None = field(default=None, init=False, repr=False)
    #: the summary of the ingest run that returned this store (`embedfit.ingest`), else None
    last_ingest: dict | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    # -- paths ------------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "manifest.json"

    @property
    def dataset_dir(self) -> Path:
        return self.root / "dataset"

    @property
    def splits_path(self) -> Path:
        return self.root / "splits.json"

    @property
    def lexical_dir(self) -> Path:
        return self.root / LEXICAL_DIR

    def negatives_path(self, model_id: str) -> Path:
        return self.root / "negatives" / f"{slug(model_id)[:100]}.jsonl"

    @cached_property
    def target(self) -> ChromaTarget:
        return resolve_target(self.root, self.chroma_host, self.chroma_port)

    # -- existence ----------------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.manifest_path.exists()

    def mark(self) -> None:
        """Write the marker that makes this folder recognisably a store (before anything else is written)."""
        if not (self.root / STORE_MARKER).exists():
            atomic.write_text(self.root / STORE_MARKER, "a store written by `embedfit ingest`; see embedfit/store/store.py\n")

    def require(self, model_id: str | None = None) -> dict:
        """The manifest, or a StoreError that says which command builds what is missing."""
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"--store {self.root} is a file, not a store folder; pass the folder ingest built")
        if not self.exists():
            raise StoreError(
                f"no store at {self.root} (no manifest.json). Build one with:\n"
                f"  embedfit ingest --data $EMBEDFIT_DATA --store {self.root}"
            )
        manifest = self.manifest()
        if model_id is not None and model_id not in manifest.get("models", {}):
            have = ", ".join(manifest.get("models", {})) or "none"
            raise StoreError(
                f"the store at {self.root} has no embeddings for model {model_id!r} (it has: {have}). Build them with:\n"
                f"  embedfit ingest --data {manifest.get('data_source', '$EMBEDFIT_DATA')} --store {self.root} --model {model_id}"
            )
        return manifest

    def manifest(self) -> dict:
        try:
            manifest = json.loads(self.manifest_path.read_text("utf-8"))
        except FileNotFoundError:
            return {"format_version": FORMAT_VERSION, "models": {}}
        except json.JSONDecodeError as exc:
            raise StoreError(f"{self.manifest_path} is not valid JSON ({exc}); re-run ingest") from None
        have = manifest.get("format_version") if isinstance(manifest, dict) else None
        if have != FORMAT_VERSION:
            source = manifest.get("data_source", "DATA") if isinstance(manifest, dict) else "DATA"
            raise StoreError(f"the store at {self.root} has format {have}, made by an earlier version; this version "
                             f"reads format {FORMAT_VERSION}. Rebuild it in a new folder: embedfit ingest --data "
                             f"{source} --store NEW_FOLDER")
        return manifest

    def dataset_name(self) -> str:
        """A short name for the data this store holds, for pages and reports: the last part of its source
        (`../shared/data/scifact` -> "scifact", `sentence-transformers/natural-questions` -> "natural-questions")."""
        source = str(self.manifest().get("data_source") or "").rstrip("/\\")
        name = source.replace("\\", "/").rsplit("/", 1)[-1]
        for ext in (".gz", ".jsonl", ".json"):
            name = name.removesuffix(ext)
        return name or "dataset"

    def trained_passages(self, fit_splits=("train",)) -> set[str]:
        """Every passage that is a positive of some query of `fit_splits`: the documents a customization fitted
        on those splits has seen (`embedfit.metrics.seen`)."""
        splits = self.load_splits()
        return trained_passages(self.load_qrels(), [q for q, s in splits.items() if s in set(fit_splits)])

    def write_manifest(self, manifest: dict) -> None:
        atomic.write_json(self.manifest_path, manifest)

    def model_info(self, model_id: str) -> dict:
        return self.require(model_id)["models"][model_id]

    # -- chroma -------------------------------------------------------------------------------------
    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = open_client(self.target, write=self.write)
        return self._client

    def collection(self, name: str) -> Any:
        col = get_collection(self.client, name)
        if col is None:
            raise StoreError(f"collection {name!r} not found in {self.target.describe()}; re-run `embedfit ingest` (or `embedfit project`)")
        return col

    def raw_collection(self, model_id: str) -> Any:
        """The model's raw collection, refused (`MismatchError`) when its own metadata names another encoder or
        dimension than the manifest entry it was reached through: vectors of one model are never searched with
        another's queries (an int8 model and its fp32 original are different encoders)."""
        info = self.model_info(model_id)
        col = self.collection(info["collection"])
        check_collection_encoder(col, model_id, int(info["dim"]))
        return col

    # -- dataset --------------------------------------------------------------------------------------
    def save_dataset(self, ds: Dataset) -> None:
        """Write corpus/queries/qrels in BEIR layout (so the store's dataset is itself a valid `--data`)."""
        d = self.dataset_dir
        atomic.write_text(d / "corpus.jsonl", "".join(
            json.dumps({"_id": pid, "title": p.title, "text": p.text}, ensure_ascii=False) + "\n"
            for pid, p in sorted(ds.corpus.items())))
        atomic.write_text(d / "queries.jsonl", "".join(
            json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n" for qid, text in sorted(ds.queries.items())))
        rows = ["query-id\tcorpus-id\tscore\n"] + [
            f"{qid}\t{pid}\t{rel}\n" for qid in sorted(ds.qrels) for pid, rel in sorted(ds.qrels[qid].items())]
        atomic.write_text(d / "qrels.tsv", "".join(rows))
        atomic.write_json(d / "same_doc.json", ds.same_doc)

    def load_corpus(self) -> Corpus:
        out: Corpus = {}
        for obj in _read_jsonl(self.dataset_dir / "corpus.jsonl"):
            out[obj["_id"]] = Passage(title=obj.get("title", ""), text=obj["text"])
        return out

    def load_queries(self) -> Queries:
        return {obj["_id"]: obj["text"] for obj in _read_jsonl(self.dataset_dir / "queries.jsonl")}

    def load_qrels(self) -> Qrels:
        path = self.dataset_dir / "qrels.tsv"
        qrels: Qrels = {}
        try:
            lines = path.read_text("utf-8").splitlines()[1:]
        except FileNotFoundError:
            raise StoreError(f"{path} missing; re-run ingest") from None
        for line in lines:
            qid, pid, rel = line.split("\t")
            qrels.setdefault(qid, {})[pid] = int(rel)
        return qrels

    def load_same_doc(self) -> dict[str, list[str]]:
        path = self.dataset_dir / "same_doc.json"
        return json.loads(path.read_text("utf-8")) if path.exists() else {}

    # -- lexical index ----------------------------------------------------------------------------------
    def lexical_index(self) -> LexicalIndex:
        """The store's BM25 index, checked against the manifest's data fingerprint; loaded once per Store
        (it is read-only). A missing, damaged or stale index is a StoreError naming the command that builds it."""
        if self._lexical is None:
            fingerprint = self.require().get("data_fingerprint")
            try:
                self._lexical = load_index(self.lexical_dir, fingerprint)
            except StoreError as exc:
                raise StoreError(f"{exc}. Build it with:\n  embedfit ingest --store {self.root} --lexical-only") from None
        return self._lexical

    # -- splits -------------------------------------------------------------------------------------
    def save_splits(self, splits: dict[str, SplitName], meta: dict) -> None:
        atomic.write_json(self.splits_path, {**meta, "splits": splits})

    def split_policy(self) -> dict:
        """How the splits were made (`by`, `seed`, `fractions`, as ingest wrote them), recorded by each adapter
        trained on them."""
        meta = read_json_object(self.splits_path) or {}
        return {"by": meta.get("by"), "seed": meta.get("seed"), "fractions": meta.get("fractions")}

    def load_splits(self) -> dict[str, SplitName]:
        try:
            return json.loads(self.splits_path.read_text("utf-8"))["splits"]
        except FileNotFoundError:
            raise StoreError(f"{self.splits_path} missing; re-run ingest") from None

    def split_query_ids(self, split: SplitName) -> list[str]:
        return sorted(q for q, s in self.load_splits().items() if s == split)

    # -- training examples ------------------------------------------------------------------------------
    def save_examples(self, model_id: str, examples: list[TrainingExample]) -> None:
        atomic.write_text(self.negatives_path(model_id),
                          "".join(json.dumps(e.to_json(), ensure_ascii=False) + "\n" for e in examples))

    def load_examples(self, model_id: str) -> list[TrainingExample]:
        path = self.negatives_path(model_id)
        if not path.exists():
            raise StoreError(f"no training examples for {model_id!r} at {path}; re-run ingest with --model {model_id}")
        return [TrainingExample.from_json(o) for o in _read_jsonl(path)]


def _read_jsonl(path: Path) -> list[dict]:
    """The objects of a store file; a missing file names the fix, a damaged one its line (`embedfit.jsonl`)."""
    if not path.is_file():
        raise StoreError(f"{path} missing; re-run ingest")
    return [obj for _, obj in read_jsonl(path)]
