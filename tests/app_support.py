"""Test helpers for the search service and the app: hand-made adapters and a store with a projected collection.

Until `python -m adapter train/project` exists, tests build adapters by hand: a linear adapter whose
matrix is identity plus a small seeded random perturbation, so that rankings change (rank movements
appear) while staying close to raw.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from adapter.adapter import Adapter, AdapterConfig
from adapter.io import save_adapter
from adapter.modules import LinearAdapter
from core import chroma_store
from core.store import Store
from scripts.load_test import free_port


def make_adapter(out_dir: Path, store_root: Path, model: str = "all-MiniLM-L6-v2", sides: str = "query",
                 scale: float = 0.02, seed: int = 0, name: str | None = None, base_model: str | None = None,
                 dim: int = 384) -> Adapter:
    """Save (and return) a linear adapter W = I + scale * N(0, 1) for the store's `model` collection."""
    info = Store(store_root).model_info(model)
    module = LinearAdapter(dim, dim)
    if scale:
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            module.delta.copy_(scale * torch.randn(dim, dim, generator=g))
    config = AdapterConfig(name=name or f"test-{sides}-{seed}", kind="linear", sides=sides, dim_in=dim, dim_out=dim,
                           base_model=base_model or model, data_fingerprint=info["data_fingerprint"],
                           raw_collection=info["collection"])
    adapter = Adapter(config, module)
    save_adapter(adapter, out_dir)
    return adapter


def copy_store_with_projection(src_root: Path, dst_root: Path, adapter: Adapter, model: str = "all-MiniLM-L6-v2",
                               adapter_sha: str = "test-sha") -> Path:
    """A new store at `dst_root` holding `src_root`'s data and raw vectors, plus `adapter`'s projected collection
    written by the real `adapter.project.project_collection`. The source store is only read (it may be a shared,
    read-only fixture)."""
    from adapter.project import project_collection

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


# -- a running app shared by the API and browser tests ----------------------------------------------------

def make_report(folder: Path, model: str = "all-MiniLM-L6-v2") -> Path:
    """A small eval report in eval's layout: metrics.json, report.md and one histogram PNG."""
    import json

    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    metrics = {
        "n_queries": 30, "model": model, "adapter": "test-query-1",
        "retrieval": {
            "raw": {"Recall@10": 0.9, "MRR@10": 0.7, "nDCG@10": 0.75},
            "adapted": {"Recall@10": 0.88, "MRR@10": 0.72, "nDCG@10": 0.74},
            "bm25": {"Recall@10": 0.6, "MRR@10": 0.4, "nDCG@10": 0.45},
            "mse_baseline": {"Recall@10": 0.4, "MRR@10": 0.2, "nDCG@10": 0.25},
        },
        "ci95": {"adapted": {"Recall@10": [0.8, 0.95]}},
        "p_value_adapted_vs_raw": 0.41,
        "threshold_accuracy": {"raw": 0.81, "adapted": 0.8},
    }
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    (folder / "report.md").write_text("# Eval report\n\nThe adapter does not beat raw here.\n\n"
                                      "![similarity histogram](similarity_histogram.png)\n", encoding="utf-8")
    im = Image.new("RGB", (320, 200), "white")
    draw = ImageDraw.Draw(im)
    for i, h in enumerate([20, 60, 120, 90, 40]):
        draw.rectangle([20 + i * 55, 190 - h, 60 + i * 55, 190], fill=(60, 110, 200))
    im.save(folder / "similarity_histogram.png")
    return folder


class RunningApp:
    def __init__(self, url: str, state, demo, cfg):
        self.url, self.state, self.demo, self.cfg = url, state, demo, cfg


_running: dict[str, RunningApp] = {}


def running_app(store_root: Path, work_dir: Path) -> RunningApp:
    """Start (once per test process) the real app on a free local port over `store_root`, with a query-only
    adapter that differs from identity and a small eval report. It stops when the test process exits."""
    import atexit

    key = str(store_root)
    if key in _running:
        return _running[key]
    from app.config import AppConfig
    from app.serve import serve
    from app.startup import open_app
    from app.ui import build_demo

    adapter_dir = work_dir / "adapters" / "all-MiniLM-L6-v2"
    make_adapter(adapter_dir, store_root, sides="query", scale=0.02, seed=1, name="test-query-1")
    cfg = AppConfig(store=store_root, adapter=adapter_dir, report=make_report(work_dir / "report"),
                    host="127.0.0.1", port=free_port())
    state = open_app(cfg)
    demo = build_demo(state)
    url = serve(demo, cfg, block=False)
    atexit.register(demo.close)
    _running[key] = RunningApp(url, state, demo, cfg)
    return _running[key]
