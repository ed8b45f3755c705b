"""The search service: one question in, the raw, the adapted and the hybrid top-k out, side by side (`Retriever`).

Shared by the app, the benchmark (`scripts/bench.py`) and the load script, so that all three measure and show the
same thing. What it does for one `search(question, k)`:

1. Cleans the question (`embedfit.data.query_text.clean_query`); an empty question returns `EMPTY_QUESTION` as
   its message and searches nothing.
2. Embeds it once with the store's model (loaded once per `Retriever`).
3. Raw side: queries the model's raw collection with that vector.
4. Adapted side: projects the *same* vector with `adapter.project_queries` and queries the adapter's
   projected collection (`sides="both"`) or the raw collection (`sides="query"`).
5. When the question is one of the store's queries (compared after `normalise_for_id`), marks the
   gold passages from the store's qrels and says which split the question belongs to: a train
   question was seen by the adapter during training, so its result flatters the adapter.
6. Says how each passage's rank moved from the raw to the adapted ranking (↑3, ↓1, =, new, out),
   looking `depth` results deep so that a move from rank 14 to rank 2 reads "↑12", not "new".
7. Hybrid side: the dense ranking of the right-hand column (the adapter's when an adapter is loaded, else
   the raw one) fused with BM25 by `embedfit.retrieval.fusion.fuse`: the dense side's top `spec.n` (the same Chroma
   query serves the dense column and the fusion, so it asks for max(depth, n) results), the store's BM25
   index's top `spec.n` for the cleaned question, fused as chosen on dev: `adapter.fusion` for an
   adapter, the store's saved raw+BM25 choice (`embedfit.retrieval.fusion.load_raw_fusion`) without one. This is the
   rule eval ranks its `*_bm25` systems with, so the page's hybrid top-k is eval's (up to HNSW vs exact
   search). Rank moves are raw -> hybrid. Without a BM25 index or a saved fusion there is no hybrid side,
   and `warnings` says what is missing and which command makes it.

Chroma returns ids and distances only; titles and texts come from the store's corpus (read once), which is
also where a passage found only by BM25 gets its text.

Timings are explicit: `embed` (shared by every side), `raw` (one Chroma query), `adapted`
(projection + one Chroma query), `lexical` (the BM25 query), `fuse` (the fusion), `total` (the whole call,
cleaning and bookkeeping included).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedfit.adapters.adapter import Adapter
from embedfit.adapters.io import adapter_sha as sha_of
from embedfit.adapters.io import check_compatible, load_adapter
from embedfit.adapters.project import projection_problem
from embedfit.data.query_text import clean_query
from embedfit.embed import load_embedder
from embedfit.embed.base import Embedder
from embedfit.embed.registry import DEFAULT_MODEL
from embedfit.errors import MismatchError, StoreError
from embedfit.metrics.seen import trained_passages
from embedfit.retrieval.fusion import FusionSpec, dev_signature, fuse, is_current, load_raw_fusion
from embedfit.retrieval.lexical import LexicalIndex
from embedfit.store.store import Store, check_encoder_build
from embedfit.types import Passage, normalise_for_id

log = logging.getLogger(__name__)

DEFAULT_MAX_CHARS = 2000
DEFAULT_MAX_K = 20
DEFAULT_DEPTH = 50
#: `SearchResult.message` for an empty question (nothing is searched); the page words it its own way (`embedfit.app`)
EMPTY_QUESTION = "Empty question: nothing was searched."


@dataclass(frozen=True)
class Hit:
    """One ranked passage. In the raw and adapted columns `movement` is raw -> adapted, so a passage shows the
    same arrow in both; in the hybrid column it is raw -> hybrid.

    `raw_rank`/`adapted_rank`/`hybrid_rank` are its ranks on each side within the searched depth (None: not
    that deep, or no such side). `movement`: "↑n" (ranked n places higher than by the raw embeddings), "↓n",
    "=", "new" (not in the raw top-`depth`), "out" (not in the other top-`depth`), "" in the dense columns
    when there is no adapted side. `score`: cosine in the dense columns, the fused score in the hybrid one.
    """

    rank: int
    id: str
    title: str
    text: str
    score: float
    gold: bool
    raw_rank: int | None
    adapted_rank: int | None
    movement: str
    hybrid_rank: int | None = None


@dataclass
class Side:
    """One column: its label, where it searched, its hits, and how long it took (hybrid: the BM25 query and
    the fusion; its dense results come from the dense column's query)."""

    label: str
    collection: str
    hits: list[Hit]
    ms: float
    gold_rank: int | None = None  # best rank of a gold passage within `depth`, None if none that deep
    fusion: dict[str, Any] | None = None  # hybrid side: the fusion used (`FusionSpec.to_json`); None otherwise


@dataclass(frozen=True)
class QueryMatch:
    """The store query the question matched: its id, split and gold passage ids, and whether every gold passage
    is a document the customization was fitted on (a positive of its training queries: `embedfit.metrics.seen`)."""

    query_id: str
    split: str | None
    gold_ids: tuple[str, ...]
    seen: bool = False


@dataclass
class SearchResult:
    question: str
    k: int
    model: str
    adapter: str | None
    adapter_note: str | None
    notices: list[str] = field(default_factory=list)
    message: str | None = None
    match: QueryMatch | None = None  # the store query the question matched (its gold passages, split, seen)
    dataset: str = ""  # the store's dataset name (`Store.dataset_name`)
    raw: Side | None = None
    adapted: Side | None = None
    hybrid: Side | None = None
    depth: int = DEFAULT_DEPTH
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (the `/search` API's answer)."""
        out = asdict(self)
        if self.match is not None:
            out["match"]["gold_ids"] = list(self.match.gold_ids)
        return out


def movement(raw_rank: int | None, adapted_rank: int | None) -> str:
    """How a passage moved from the raw ranking to the adapted one (ranks start at 1)."""
    if adapted_rank is None:
        return "out"
    if raw_rank is None:
        return "new"
    if raw_rank == adapted_rank:
        return "="
    return f"↑{raw_rank - adapted_rank}" if adapted_rank < raw_rank else f"↓{adapted_rank - raw_rank}"


def check_adapter(store: Store, model_id: str, dim: int, adapter: Adapter, adapter_sha: str | None = None,
                  adapter_dir: str | None = None) -> None:
    """Refuse an adapter that cannot be used with this store and model (MismatchError/StoreError with the reason).

    For a both-sides adapter the projected collection must also be current (`embedfit.adapters.project.projection_problem`,
    with `adapter_sha` = `embedfit.adapters.io.adapter_sha` of the adapter's folder `adapter_dir` when known).
    """
    info = store.model_info(model_id)
    check_compatible(adapter, model_id, dim, info.get("data_fingerprint"))
    c = adapter.config
    if c.sides == "query" and c.dim_out != dim:
        raise MismatchError(f"adapter {c.name!r} projects queries to {c.dim_out}-d but leaves passages at {dim}-d; "
                            "a query-only adapter must keep the dimension")
    if c.raw_collection and c.raw_collection != info["collection"]:
        raise MismatchError(f"adapter {c.name!r} was trained on collection {c.raw_collection!r}, "
                            f"but this store's {model_id!r} collection is {info['collection']!r}")
    problem = projection_problem(store, adapter, adapter_sha, adapter_dir)
    if problem is not None:
        raise problem


class Retriever:
    """Search one store with one model: raw, (optionally) through an adapter, and fused with BM25.

    Thread-safe: the embedding call is serialised (Hugging Face fast tokenizers refuse concurrent use);
    Chroma clients are thread-safe, and the BM25 index is only read. Opening reads the store's corpus,
    queries, qrels and BM25 index once.
    """

    def __init__(self, store: Store | str | Path, model_id: str | None = None, adapter: Adapter | str | Path | None = None,
                 *, embedder: Embedder | None = None, adapter_note: str | None = None, adapter_sha: str | None = None,
                 adapter_dir: str | None = None,
                 max_chars: int = DEFAULT_MAX_CHARS, max_k: int = DEFAULT_MAX_K, depth: int = DEFAULT_DEPTH):
        """Open `store` for `model_id` (default: the adapter's base model, else all-MiniLM-L6-v2).

        Args:
            store: the store folder (or a `Store`).
            model_id: the model whose raw collection is searched; questions are embedded with it.
            adapter: an `Adapter` or an adapter folder (a folder is checked against the projection it wrote); an
                adapter that moves passages needs its projected collection (`FitResult.save` writes it).
            embedder: an `Embedder` to use instead of loading `model_id`.

        Raises:
            StoreError: no store, no collection, or no projected collection. MismatchError: another model's adapter.

        Example:
            >>> hits = ef.Retriever(".data/scifact", adapter="adapters/l6").search("a question", k=10)   # doctest: +SKIP
            >>> [h.title for h in hits.adapted.hits]                                                      # doctest: +SKIP
        """
        if isinstance(adapter, (str, Path)):
            adapter_dir = str(adapter)
            adapter_sha = adapter_sha or sha_of(adapter)
            adapter = load_adapter(adapter)
        store = store if isinstance(store, Store) else Store(Path(store))
        model_id = model_id or (adapter.config.base_model if adapter is not None else DEFAULT_MODEL)
        self.store = store
        self.model_id = model_id
        info = store.model_info(model_id)  # StoreError with the ingest command when missing
        self.raw_collection_name = info["collection"]
        self._raw = store.raw_collection(model_id)  # MismatchError when the collection is another encoder's
        self.embedder = embedder or load_embedder(model_id)
        check_encoder_build(info, self.embedder)  # the same name, another int8 build: refused
        if self.embedder.model_id != model_id or self.embedder.dim != info["dim"]:
            raise MismatchError(f"the store holds {model_id!r} {info['dim']}-d vectors, but the embedder is "
                                f"{self.embedder.model_id!r} {self.embedder.dim}-d")
        self.adapter = adapter
        self.adapter_note = adapter_note
        self.adapted_collection_name: str | None = None
        if adapter is not None:
            check_adapter(store, model_id, self.embedder.dim, adapter, adapter_sha, adapter_dir)
            self._adapted = store.collection(adapter.collection_name) if adapter.collection_name else self._raw
            self.adapted_collection_name = adapter.collection_name or self.raw_collection_name
        self.max_chars, self.max_k, self.depth = max_chars, max_k, max(depth, max_k)
        self._n_vectors = self._raw.count()
        self._opened_data = self._data_stamp()
        self._embed_lock = threading.Lock()
        self._corpus: dict[str, Passage] = store.load_corpus()
        self.dataset = store.dataset_name()
        self._load_matches()
        self.lexical: LexicalIndex | None = None
        self.fusion: FusionSpec | None = None
        #: why there is no hybrid side (and what to run), None when there is one
        self.hybrid_note: str | None = None
        self._load_hybrid(info, adapter_dir)

    def _load_matches(self) -> None:
        queries = self.store.load_queries()
        self._qrels = self.store.load_qrels()
        #: what a user of this store should know (each names the command that fixes it; the page shows them)
        self.warnings: list[str] = []
        try:
            self._splits = self.store.load_splits()
        except StoreError as exc:
            # Without splits no question can be flagged as one the adapter trained on: say so, not go quiet.
            log.warning("%s: a training question cannot be flagged as such", exc)
            self.warnings.append("This store has no `splits.json`, so a question the adapter was trained on is not "
                                 "flagged as one; re-run ingest to restore it.")
            self._splits = {}
        fit = set(self.adapter.fit_splits if self.adapter is not None else ["train"])
        self._trained = trained_passages(self._qrels, [q for q, s in self._splits.items() if s in fit])
        self._by_text: dict[str, list[str]] = {}
        for qid, text in sorted(queries.items()):
            self._by_text.setdefault(normalise_for_id(text), []).append(qid)
        self.queries = queries

    def _load_hybrid(self, info: dict, adapter_dir: str | None) -> None:
        """The BM25 index and the fusion spec of the hybrid side; when either is missing, `hybrid_note` and one
        line of `warnings` say which, and the command that makes it."""
        root = self.store.root
        lexical_fix = f"`embedfit ingest --store {root} --lexical-only`"
        try:
            index = self.store.lexical_index()
        except StoreError as exc:
            why = str(exc).split(". Build it with", 1)[0].splitlines()[0]
            self.hybrid_note = f"No hybrid (BM25) side: {why}. Build the index with {lexical_fix}."
        else:
            if self.adapter is not None:
                spec = self.adapter.fusion
                model = "" if self.model_id == DEFAULT_MODEL else f" --model {self.model_id}"
                train = f"`embedfit train --store {root}{model} --out {adapter_dir or 'DIR'}`"
                if spec is None:
                    self.hybrid_note = (
                        f"No hybrid (BM25) side: the adapter {self.adapter.name!r} has no BM25 fusion (it was fitted "
                        f"with tune_fusion off, or on vectors without texts). Fit it on the store with {train}.")
                elif not is_current(self.adapter.config.fusion):  # still served: the old weight beats no hybrid
                    self.warnings.append(
                        f"The adapter {self.adapter.name!r} chose its BM25 fusion weight against an older BM25 (another "
                        "tokenizer or scoring), so the hybrid side may not be at its best. Retrain it to choose again: "
                        f"{train}.")
                    log.warning("%s", self.warnings[-1])
            else:
                choice = load_raw_fusion(root, self.model_id, info.get("data_fingerprint"),
                                         dev_signature(self._splits) if self._splits else None)
                spec = choice.spec if choice is not None else None
                if spec is None:
                    self.hybrid_note = (f"No hybrid (BM25) side: the store has no raw+BM25 fusion chosen on dev for "
                                        f"{self.model_id!r} (or it was chosen on other data). Choose it with "
                                        f"{lexical_fix}.")
            if spec is not None:
                self.lexical, self.fusion = index, spec
        if self.hybrid_note is not None:
            log.warning("%s", self.hybrid_note)
            self.warnings.append(self.hybrid_note)
        prior = (self.adapter.config.training or {}).get("lexical_prior") if self.adapter is not None else None
        if prior and not self.adapter.config.identity:  # it learnt what BM25 misses, and leans on BM25 for the rest
            self.warnings.append(
                f"The adapter {self.adapter.name!r} was trained through the BM25-fused score (`--select-by fused`): "
                "serve it with BM25 (the hybrid side). Alone it ranks worse than an adapter trained on the dense "
                "score, most of all for questions about documents it was not trained on.")

    # -- labels -----------------------------------------------------------------------------------
    @property
    def raw_label(self) -> str:
        return f"Raw embeddings ({self.model_id})"

    @property
    def adapted_label(self) -> str:
        return f"With adapter ({self.adapter.name})" if self.adapter is not None else "With adapter (none)"

    @property
    def hybrid_label(self) -> str:
        return "Adapter + BM25" if self.adapter is not None else "Raw + BM25"

    @property
    def hybrid_collection(self) -> str:
        """Where the hybrid side's dense results come from, plus the BM25 index."""
        dense = self.adapted_collection_name if self.adapter is not None else self.raw_collection_name
        return f"{dense} + BM25"

    # -- search -----------------------------------------------------------------------------------
    def match(self, question: str) -> QueryMatch | None:
        """The store query with the same normalised text, with its gold passages (None if no match)."""
        key = normalise_for_id(question)
        qids = self._by_text.get(key) if key else None
        if not qids:
            return None
        gold = sorted({pid for q in qids for pid, rel in self._qrels.get(q, {}).items() if rel > 0})
        return QueryMatch(query_id=qids[0], split=self._splits.get(qids[0]), gold_ids=tuple(gold),
                       seen=bool(gold) and set(gold) <= self._trained)

    def embed(self, question: str) -> np.ndarray:
        with self._embed_lock:
            return self.embedder.embed([question], "query")

    def search(self, question: str | None, k: int = 10) -> SearchResult:
        """Every ranking for `question`. Bad text is not an error: an empty question comes back with `message`
        set and nothing searched; cut length, removed characters and a clamped `k` come back as `notices`.
        (Only a non-string question raises InputError.)"""
        t_start = time.perf_counter()
        text, notices = clean_query(question, self.max_chars)
        k, k_notice = self._clamp_k(k)
        if k_notice:
            notices.append(k_notice)
        if (changed := self.data_changed()) is not None:
            notices.append(changed)
        result = SearchResult(question=text, k=k, model=self.model_id,
                              adapter=self.adapter.name if self.adapter is not None else None,
                              adapter_note=self.adapter_note, notices=notices, depth=self.depth,
                              dataset=self.dataset)
        if not text:
            result.message = EMPTY_QUESTION
            result.timings_ms = {"total": _ms(t_start)}
            return result
        result.match = self.match(text)
        gold = set(result.match.gold_ids) if result.match else set()
        spec = self.fusion
        # the dense side the hybrid fuses is queried once, deep enough for its column and for the fusion
        fusion_n = spec.n if spec is not None else 0

        t0 = time.perf_counter()
        qvec = self.embed(text)
        embed_ms = _ms(t0)

        t0 = time.perf_counter()
        raw = self._query(self._raw, qvec, fusion_n if self.adapter is None else 0)
        raw_ms = _ms(t0)
        adapted, adapted_ms = None, None
        if self.adapter is not None:
            t0 = time.perf_counter()
            adapted = self._query(self._adapted, self.adapter.project_queries(qvec), fusion_n)
            adapted_ms = _ms(t0)

        fused, lexical_ms, fuse_ms = None, None, None
        if spec is not None:
            t0 = time.perf_counter()
            lexical = self.lexical.search([text], spec.n)[0]
            lexical_ms = _ms(t0)
            t0 = time.perf_counter()
            fused = list(fuse(dict(adapted if adapted is not None else raw), lexical, spec).items())
            fuse_ms = _ms(t0)

        ranks = {"raw": _ranks(raw, self.depth), "adapted": _ranks(adapted, self.depth),
                 "hybrid": _ranks(fused, self.depth)}
        result.raw = self._side(self.raw_label, self.raw_collection_name, raw, k, gold, ranks, "adapted", raw_ms)
        if adapted is not None:
            result.adapted = self._side(self.adapted_label, self.adapted_collection_name, adapted, k, gold, ranks,
                                        "adapted", adapted_ms)
        if fused is not None:
            result.hybrid = self._side(self.hybrid_label, self.hybrid_collection, fused, k, gold, ranks, "hybrid",
                                       round(lexical_ms + fuse_ms, 2), fusion=spec.to_json())
        result.timings_ms = {"embed": embed_ms, "raw": raw_ms, **({"adapted": adapted_ms} if adapted_ms is not None else {}),
                             **({"lexical": lexical_ms, "fuse": fuse_ms} if fused is not None else {}),
                             "total": _ms(t_start)}
        return result

    def _data_stamp(self) -> tuple[int | None, str | None]:
        """(the manifest's mtime, the data fingerprint it names): what the store held when this Retriever read it."""
        try:
            mtime = self.store.manifest_path.stat().st_mtime_ns
        except OSError:
            return None, None
        try:
            return mtime, self.store.manifest().get("data_fingerprint")
        except StoreError:
            return mtime, None

    def data_changed(self) -> str | None:
        """A notice when the store was re-ingested with other data after this Retriever opened it (its corpus,
        queries and qrels in memory would be stale: new passages without text, gold marks from old labels), or
        when its manifest is gone; None otherwise. Costs one stat per search (the manifest is read only when it
        changed)."""
        try:
            mtime = self.store.manifest_path.stat().st_mtime_ns
        except OSError:
            return f"The store's manifest ({self.store.manifest_path}) is gone: results may be stale or fail."
        if mtime == self._opened_data[0]:
            return None
        stamp = self._data_stamp()
        if stamp[1] == self._opened_data[1]:  # rewritten with the same data (another model added): still current
            self._opened_data = stamp
            return None
        return ("The store was re-ingested with other data after this page opened: titles, texts and gold marks "
                "shown are from the old data. Restart the app to load the new data.")

    def _clamp_k(self, k: Any) -> tuple[int, str | None]:
        try:
            k_int = round(float(k))
        except (TypeError, ValueError, OverflowError):  # None, "abc", nan, inf
            return 10, "Top-k is not a number; showing 10."  # the value itself is not echoed into the page
        clamped = min(max(k_int, 1), self.max_k)
        return clamped, (f"Top-k must be between 1 and {self.max_k}; showing {clamped}." if clamped != k_int else None)

    def _query(self, col: Any, qvec: np.ndarray, at_least: int = 0) -> list[tuple[str, float]]:
        """(id, cosine score) of the top max(`depth`, `at_least`) passages, best first."""
        n = min(max(self.depth, at_least), self._n_vectors)
        if n == 0:
            return []
        try:
            got = col.query(query_embeddings=np.ascontiguousarray(qvec, dtype=np.float32), n_results=n,
                            include=["distances"])
        except Exception as exc:  # chromadb/httpx raise many types when the server is gone; one message for all
            where = self.store.target.describe()
            raise StoreError(f"searching {col.name!r} failed ({type(exc).__name__}): is the {where} still there? "
                             f"Restart it, then the app") from exc
        return [(pid, 1.0 - float(d)) for pid, d in zip(got["ids"][0], got["distances"][0])]

    def _side(self, label: str, collection: str, rows: list[tuple[str, float]], k: int, gold: set[str],
              ranks: dict[str, dict[str, int] | None], moved_to: str, ms: float,
              fusion: dict[str, Any] | None = None) -> Side:
        """A column from its ranking; `moved_to` is the ranking `movement` compares the raw one with."""
        raw_ranks, target = ranks["raw"], ranks[moved_to]
        hits = []
        for i, (pid, score) in enumerate(rows[:k]):
            passage = self._corpus.get(pid)
            r_raw = raw_ranks.get(pid)
            hits.append(Hit(rank=i + 1, id=pid, title=passage.title if passage else "",
                            text=passage.text if passage else "", score=round(score, 4), gold=pid in gold,
                            raw_rank=r_raw, adapted_rank=_rank_in(ranks["adapted"], pid),
                            movement=movement(r_raw, target.get(pid)) if target is not None else "",
                            hybrid_rank=_rank_in(ranks["hybrid"], pid)))
        gold_rank = next((i + 1 for i, row in enumerate(rows[:self.depth]) if row[0] in gold), None)
        return Side(label=label, collection=collection, hits=hits, ms=ms, gold_rank=gold_rank, fusion=fusion)


def _ranks(rows: list[tuple[str, float]] | None, depth: int) -> dict[str, int] | None:
    """Passage id -> rank (from 1) within the top `depth` of a ranking; None for a side that was not searched."""
    return None if rows is None else {pid: i + 1 for i, (pid, _) in enumerate(rows[:depth])}


def _rank_in(ranks: dict[str, int] | None, pid: str) -> int | None:
    return ranks.get(pid) if ranks is not None else None


def _ms(t0: float) -> float:
    return round((time.perf_counter() - t0) * 1000, 2)
