"""Test helpers for the search service and the app: hand-made adapters, a store with a projected collection, and
the oracles (numpy cosine, bm25s, the fusion rule written out) the columns are checked against.

Until `embedfit train/project` exists, tests build adapters by hand: a linear adapter whose
matrix is identity plus a small seeded random perturbation, so that rankings change (rank movements
appear) while staying close to raw.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from embedfit.adapters.adapter import Adapter, AdapterConfig
from embedfit.adapters.io import save_adapter
from embedfit.adapters.modules import LinearAdapter
from embedfit.procs import free_port
from embedfit.store import chroma_store
from embedfit.store.store import Store


def make_adapter(out_dir: Path, store_root: Path, model: str = "all-MiniLM-L6-v2", sides: str = "query",
                 scale: float = 0.02, seed: int = 0, name: str | None = None, base_model: str | None = None,
                 dim: int = 384, fusion: dict | None = None) -> Adapter:
    """Save (and return) a linear adapter W = I + scale * N(0, 1) for the store's `model` collection; `fusion`:
    its BM25 fusion (as `AdapterConfig.fusion`: method, weight, n, ...), None for an adapter without one."""
    info = Store(store_root).model_info(model)
    module = LinearAdapter(dim, dim)
    if scale:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            module.delta.copy_(scale * torch.randn(dim, dim, generator=g))
    config = AdapterConfig(name=name or f"test-{sides}-{seed}", kind="linear", sides=sides, dim_in=dim, dim_out=dim,
                           base_model=base_model or model, data_fingerprint=info["data_fingerprint"],
                           raw_collection=info["collection"], fusion=fusion)
    adapter = Adapter(config, module)
    save_adapter(adapter, out_dir)
    return adapter


def copy_store_with_projection(src_root: Path, dst_root: Path, adapter: Adapter, model: str = "all-MiniLM-L6-v2",
                               adapter_sha: str = "test-sha") -> Path:
    """A new store at `dst_root` holding `src_root`'s data and raw vectors, plus `adapter`'s projected collection
    written by the real `embedfit.adapters.project.project_collection`. The source store is only read (it may be a shared,
    read-only fixture)."""
    from embedfit.adapters.project import project_collection

    src_root, dst_root = Path(src_root), Path(dst_root)
    dst_root.mkdir(parents=True)
    for name in ("manifest.json", "splits.json"):
        shutil.copy2(src_root / name, dst_root / name)
    for folder in ("dataset", "query_vectors", "negatives"):
        if (src_root / folder).exists():
            shutil.copytree(src_root / folder, dst_root / folder)
    src = Store(src_root)
    info = src.model_info(model)
    dump = chroma_store.fetch_all(src.raw_collection(model), with_documents=True, with_metadatas=True)
    dst = Store(dst_root, write=True)
    raw = chroma_store.ensure_collection(dst.client, info["collection"],
                                         {"kind": "raw", "model_id": model, "dim": info["dim"],
                                          "data_fingerprint": info["data_fingerprint"]}, ("kind", "model_id", "dim"))
    chroma_store.upsert_batched(raw, dst.client, dump.ids, dump.embeddings, dump.documents, dump.metadatas)
    project_collection(dst, adapter, adapter_sha)
    return dst_root


def exact_top(query: np.ndarray, ids: list[str], passages: np.ndarray, k: int) -> list[str]:
    """Brute-force cosine top-k (the oracle for Chroma's approximate search)."""
    q = query / np.linalg.norm(query)
    p = passages / np.linalg.norm(passages, axis=1, keepdims=True)
    scores = p @ q.ravel()
    order = sorted(range(len(ids)), key=lambda i: (-scores[i], ids[i]))
    return [ids[i] for i in order[:k]]


def choice_json(method: str, weight: float, n: int = 100) -> dict:
    """A saved fusion choice (`embedfit.retrieval.fusion.FusionChoice.to_json`) of the given spec, as training writes it."""
    from embedfit.retrieval.fusion import FusionChoice, FusionSpec

    return FusionChoice(spec=FusionSpec(method=method, weight=weight, n=n), split="dev", metric="MRR@10", score=0.5,
                        dense_only=0.4, n_queries=10).to_json()


class BM25Oracle:
    """BM25 straight from bm25s over `title + " " + text` (lower-cased, bm25s's English stopwords, words of two or
    more word characters, Snowball English stems by PyStemmer, Lucene k1=0.9 b=0.4): the scores the store's index must
    give."""

    def __init__(self, corpus):
        import bm25s

        self.ids = sorted(corpus)
        self.bm25 = bm25s.BM25(k1=0.9, b=0.4, method="lucene")
        self.bm25.index(self._tokens([f"{corpus[p].title} {corpus[p].text}" for p in self.ids]), show_progress=False)

    @staticmethod
    def _tokens(texts: list[str]) -> list[list[str]]:
        import bm25s
        import Stemmer

        return bm25s.tokenize(texts, lower=True, stopwords="en", stemmer=Stemmer.Stemmer("english"), return_ids=False,
                              show_progress=False)

    def top(self, question: str, n: int) -> list[tuple[str, float]]:
        """(id, score) of the `n` best passages with a score > 0, by score then id."""
        tokens = [t for t in self._tokens([question])[0] if t in self.bm25.vocab_dict]
        if not tokens:
            return []
        scores = np.asarray(self.bm25.get_scores(tokens), dtype=np.float64)
        order = sorted((i for i in range(len(self.ids)) if scores[i] > 0), key=lambda i: (-scores[i], self.ids[i]))
        return [(self.ids[i], float(scores[i])) for i in order[:n]]


def fuse_oracle(dense: list[tuple[str, float]], lexical: list[tuple[str, float]], method: str, weight: float,
                n: int, rrf_k: int = 60) -> list[tuple[str, float]]:
    """The fusion rule of `embedfit.retrieval.fusion`'s docstring, written out: each side's top `n` (score desc, id asc),
    normalised within the query (zscore: (s - mean) / std; minmax: (s - min) / (max - min); rrf: 1 / (rrf_k + rank);
    all-equal scores: 0), a passage missing from a side gets that side's lowest value, fused = (1 - w) * dense +
    w * lexical; best first, ties by id."""
    def norm(side: list[tuple[str, float]]) -> dict[str, float]:
        side = sorted(side, key=lambda x: (-x[1], x[0]))[:n]
        if method == "rrf":
            return {pid: 1.0 / (rrf_k + r) for r, (pid, _) in enumerate(side, start=1)}
        s = np.array([x[1] for x in side], dtype=np.float64)
        if not len(s):
            return {}
        if method == "zscore":
            z = (s - s.mean()) / s.std() if s.std() > 0 else np.zeros_like(s)
        else:
            z = (s - s.min()) / (s.max() - s.min()) if s.max() > s.min() else np.zeros_like(s)
        return {pid: float(v) for (pid, _), v in zip(side, z)}

    d, lx = norm(dense), norm(lexical)
    fd, fl = min(d.values(), default=0.0), min(lx.values(), default=0.0)
    fused = {pid: (1 - weight) * d.get(pid, fd) + weight * lx.get(pid, fl) for pid in {*d, *lx}}
    return sorted(fused.items(), key=lambda x: (-x[1], x[0]))


def assert_same_ranking(got_ids: list[str], want: list[tuple[str, float]], tol: float = 1e-4) -> None:
    """`got_ids` is the top of `want` (id, score best first): equal ids, or at worst two passages whose scores
    differ by less than `tol` swapped (HNSW's float32 cosines against numpy's)."""
    score = dict(want)
    assert len(got_ids) <= len(want) and all(pid in score for pid in got_ids), [p for p in got_ids if p not in score]
    for i, pid in enumerate(got_ids):
        assert abs(score[pid] - want[i][1]) < tol, (i, pid, want[i])


class ExactOracle:
    """Brute-force cosine rankings over a store's raw vectors, read once: the oracle for what the app shows.

    The adapted ranking of a query-side linear adapter is the same search with the query multiplied by the
    adapter's matrix (`base + delta`, read from its `model.safetensors` with numpy, not through the adapter code).
    """

    def __init__(self, store_root: Path, model: str = "all-MiniLM-L6-v2", adapter_dir: Path | None = None):
        from safetensors.numpy import load_file

        store = Store(store_root)
        self.collection = store.raw_collection(model)
        dump = chroma_store.fetch_all(self.collection)
        self.ids, self.vectors = list(dump.ids), np.asarray(dump.embeddings, dtype=np.float64)
        self.corpus = store.load_corpus()
        self._bm25: BM25Oracle | None = None
        self.matrix = None
        if adapter_dir is not None:
            state = load_file(str(Path(adapter_dir) / "model.safetensors"))
            self.matrix = (state["base"] + state["delta"]).astype(np.float64)

    def ranking(self, query: np.ndarray, k: int, adapted: bool = False) -> list[tuple[str, float]]:
        """(id, cosine) of the top `k`, best first (ties by id)."""
        q = np.asarray(query, dtype=np.float64).ravel()
        if adapted:
            q = q @ self.matrix
        q = q / np.linalg.norm(q)
        p = self.vectors / np.linalg.norm(self.vectors, axis=1, keepdims=True)
        scores = p @ q
        order = sorted(range(len(self.ids)), key=lambda i: (-scores[i], self.ids[i]))[:k]
        return [(self.ids[i], float(scores[i])) for i in order]

    @property
    def bm25(self) -> BM25Oracle:
        if self._bm25 is None:
            self._bm25 = BM25Oracle(self.corpus)
        return self._bm25

    def hnsw(self, query: np.ndarray, n: int, adapted: bool = False) -> list[tuple[str, float]]:
        """(id, cosine) of the raw collection's own HNSW top `n`, asked of Chroma directly (not through the service).

        The hybrid oracle fuses these, not the exact top n: the two can differ by a tail passage, which moves the
        per-query normalisation (mean, std, min, max) of every fused score. HNSW's quality against exact search has
        its own tests (`eval`'s HNSW recall); here the thing under test is the fusion rule."""
        q = np.asarray(query, dtype=np.float64).ravel()
        if adapted:
            q = q @ self.matrix
        got = self.collection.query(query_embeddings=[q.astype(np.float32)], n_results=min(n, len(self.ids)),
                                    include=["distances"])
        return [(pid, 1.0 - float(d)) for pid, d in zip(got["ids"][0], got["distances"][0])]

    def hybrid(self, query: np.ndarray, question: str, fusion: dict, adapted: bool = False) -> list[tuple[str, float]]:
        """The fused ranking (id, fused score) of Chroma's dense top-n and bm25s's top-n (`fuse_oracle`)."""
        n = fusion["n"]
        return fuse_oracle(self.hnsw(query, n, adapted), self.bm25.top(question, n), fusion["method"],
                           fusion["weight"], n, fusion.get("rrf_k", 60))


#: the fusion the app tests' adapter carries (a z-score fusion that gives BM25 real weight, so the columns differ)
APP_FUSION = {"method": "zscore", "weight": 0.4, "n": 100}


# -- a running app shared by the API and browser tests ----------------------------------------------------

_reports: dict[tuple[str, str], Path] = {}


def make_report(folder: Path, store_root: Path, adapter_dir: Path) -> Path:
    """What `embedfit eval` really writes for this store and adapter (figures included), in `folder`.

    Run once per (store, adapter) in a test process and copied after that: the app's report tab must be
    tested against eval's own output, never a hand-made layout."""
    from embedfit.evaluation.config import EvalConfig
    from embedfit.evaluation.evaluate import run_eval

    key = (str(store_root), str(adapter_dir))
    if key not in _reports:
        out = folder.parent / f"{folder.name}-eval"
        run_eval(EvalConfig(store=store_root, out=out, adapters=[adapter_dir], mse_baseline=False,
                            bootstrap_resamples=200, plot_queries=60, plot_passages=200, cache_dir=None))
        _reports[key] = out
    if Path(folder).resolve() != _reports[key].resolve():
        shutil.copytree(_reports[key], folder, dirs_exist_ok=True)
    return Path(folder)


class RunningApp:
    def __init__(self, url: str, state, demo, cfg):
        self.url, self.state, self.demo, self.cfg = url, state, demo, cfg


_running: dict[str, RunningApp] = {}


def running_app(store_root: Path, work_dir: Path) -> RunningApp:
    """Start (once per test process) the real app on a free local port over `store_root`, with a query-only
    adapter that differs from identity and carries a BM25 fusion (`APP_FUSION`), and a small eval report. It stops when the test process exits."""
    import atexit

    key = str(store_root)
    if key in _running:
        return _running[key]
    from embedfit.app.config import AppConfig
    from embedfit.app.serve import serve
    from embedfit.app.startup import open_app
    from embedfit.app.ui import build_demo

    adapter_dir = work_dir / "adapters" / "all-MiniLM-L6-v2"
    make_adapter(adapter_dir, store_root, sides="query", scale=0.02, seed=1, name="test-query-1",
                 fusion=choice_json(**APP_FUSION))
    cfg = AppConfig(store=store_root, adapter=adapter_dir, report=make_report(work_dir / "report", store_root, adapter_dir),
                    host="127.0.0.1", port=free_port())
    state = open_app(cfg)
    demo = build_demo(state)
    url = serve(demo, cfg, block=False)
    atexit.register(demo.close)
    _running[key] = RunningApp(url, state, demo, cfg)
    return _running[key]
