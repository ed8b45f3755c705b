"""Smaller vectors: how much quality a smaller embedding keeps, and what it saves.

For each output size d (256, 128, 64 by default) three ways to get d-dimensional vectors from the frozen ones,
each applied to both queries and passages:

- `truncate`: keep the first d coordinates, re-normalise (what "Matryoshka" truncation does to a model not
  trained for it);
- `pca`: project onto the corpus's top d principal directions (uncentred, as cosine is about directions from 0);
  no labels needed;
- `adapter`: a linear d-dim adapter (both sides) trained with InfoNCE on the train split, starting at the PCA
  basis and selected on dev (`embedfit.adapters.train`; it cannot fall back to raw, which has another size).

Scored on the store's test split with the same exact search as eval; also bytes per vector (float32) and the
exact-search time per query over the whole corpus (numpy scores + top 10, float32; the fastest of 20 runs after
a warm-up). Writes
`dims.json` and `dims.png`.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from embedfit import atomic
from embedfit.adapters.config import TrainConfig
from embedfit.adapters.modules import pca_basis
from embedfit.adapters.train import train_adapter
from embedfit.embed.base import l2_normalise
from embedfit.errors import InputError
from embedfit.evaluation import plots
from embedfit.evaluation.learning_curve import open_study, study_identity
from embedfit.metrics.retrieval import per_query_metrics
from embedfit.metrics.stats import bootstrap_ci
from embedfit.retrieval.exact import exact_search
from embedfit.settings import K_VALUES, TOP_K, default_store

log = logging.getLogger(__name__)
#: timed runs of each search (the fastest is reported: the least disturbed by other work on the machine)
REPEATS = 20


@dataclass
class DimsConfig:
    store: Path = dataclasses.field(default_factory=default_store)
    model: str = "all-MiniLM-L6-v2"
    out: Path = Path(".data/dims")
    sizes: tuple[int, ...] = (256, 128, 64)
    epochs: int = 15
    bootstrap_resamples: int = 2000

    def validate(self) -> None:
        if not self.sizes or any(d < 1 for d in self.sizes):
            raise InputError("--sizes must be positive dimensions")


def _scores(Q, qids, P, pids, qrels) -> tuple[dict[str, float], float, dict[str, dict[str, float]]]:
    """Mean metrics, the exact-search seconds per query, and the per-query metrics."""
    res = exact_search(Q, qids, P, pids, k=TOP_K)
    # the search itself, timed apart from building result dicts: scores and the top 10, float32 as stored
    q32, p32 = np.ascontiguousarray(Q, dtype=np.float32), np.ascontiguousarray(P, dtype=np.float32)
    times = []
    for _ in range(REPEATS + 1):  # the first run is a warm-up
        t0 = time.perf_counter()
        np.argpartition(-(q32 @ p32.T), 10, axis=1)
        times.append(time.perf_counter() - t0)
    per_q = float(min(times[1:])) / max(1, len(qids))
    pq = per_query_metrics(qrels, res, K_VALUES)
    return {m: float(np.mean(list(v.values()))) for m, v in pq.items()}, per_q, pq


def run_dims(cfg: DimsConfig) -> dict:
    cfg.validate()
    store, data, test = open_study(cfg.store, cfg.model)
    dim = data.dim
    if any(d >= dim for d in cfg.sizes):
        raise InputError(f"--sizes must be below the model's dimension ({dim})")
    n = len(data.passage_ids)
    if too_big := [d for d in cfg.sizes if d >= n]:
        raise InputError(f"--sizes {' '.join(map(str, too_big))}: the store holds {n} passages, and PCA (the start of "
                         f"the trained adapter too) finds at most that many directions; pass sizes below {n}, e.g. "
                         f"--sizes {max(1, n // 2)} {max(1, n // 4)}")
    P, pids = data.P, data.passage_ids
    rows = []
    raw, raw_t, raw_pq = _scores(test.Q, test.query_ids, P, pids, test.qrels)
    rows.append({"method": "raw", "dim": dim, "bytes": dim * 4, "ms_per_query": round(raw_t * 1000, 3), **_round(raw)})
    basis = {d: pca_basis(torch.from_numpy(P), d).numpy() for d in cfg.sizes}
    for d in cfg.sizes:
        ways = {
            "truncate": (lambda x, d=d: l2_normalise(x[:, :d])),
            "pca": (lambda x, d=d: l2_normalise(x @ basis[d])),
        }
        tcfg = TrainConfig(model=cfg.model, kind="linear", sides="both", dim_out=d, epochs=cfg.epochs, tune_fusion=False)
        ad = train_adapter(store, tcfg, data).adapter
        ways["adapter"] = ad.project_queries  # both sides: the same projection for passages
        for name, f in ways.items():
            m, t, pq = _scores(f(test.Q), test.query_ids, f(P), pids, test.qrels)
            diff = np.array([pq["nDCG@10"][q] - raw_pq["nDCG@10"][q] for q in raw_pq["nDCG@10"]])
            lo, hi = bootstrap_ci(diff, n_resamples=cfg.bootstrap_resamples, seed=0)
            rows.append({"method": name, "dim": d, "bytes": d * 4, "ms_per_query": round(t * 1000, 3), **_round(m),
                         "nDCG@10_vs_raw": round(float(diff.mean()), 4), "nDCG@10_vs_raw_ci95": [round(lo, 4), round(hi, 4)],
                         "kept": round(m["nDCG@10"] / raw["nDCG@10"], 3) if raw["nDCG@10"] else None})
            log.info("dims: %s d=%d nDCG@10 %.4f (raw %.4f)", name, d, m["nDCG@10"], raw["nDCG@10"])
    out = {"model": cfg.model, **study_identity(store, cfg.model), "test_queries": len(test.query_ids),
           "passages": len(pids), "rows": rows}
    cfg.out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(cfg.out / "dims.json", out)
    (cfg.out / "dims.png").write_bytes(plots.dims_png(out))
    return out


def _round(m: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in m.items() if k in ("MRR@10", "nDCG@10", "Recall@10", "Recall@100")}


def dims_table(out: dict) -> str:
    lines = [f"{out['model']}: {out['test_queries']} test queries, {out['passages']} passages",
             "| method | dim | bytes/vector | nDCG@10 | vs raw (95% CI) | kept | MRR@10 | Recall@100 | ms/query (exact) |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in out["rows"]:
        vs = (f"{r['nDCG@10_vs_raw']:+.3f} [{r['nDCG@10_vs_raw_ci95'][0]:+.3f}, {r['nDCG@10_vs_raw_ci95'][1]:+.3f}]"
              if "nDCG@10_vs_raw" in r else "")
        lines.append(f"| {r['method']} | {r['dim']} | {r['bytes']} | {r['nDCG@10']:.3f} | {vs} | {r.get('kept') or 1.0:.3f} | "
                     f"{r['MRR@10']:.3f} | {r['Recall@100']:.3f} | {r['ms_per_query']:.3f} |")
    return "\n".join(lines)
