"""How many labelled queries does customization need? The learning curve.

For each number of labels n (25, 50, 100, ... up to every labelled query of train + dev) and each seed, n
labelled queries are drawn, the customization is *selected and fitted on those alone* (`embedfit.adapters.select`, the
same procedure `embedfit train` runs), and scored on the store's test split against raw. A point is
the mean gain over seeds with a 95% bootstrap interval over test queries (of the seed-averaged per-query
gains), overall and on the seen / unseen test queries (`embedfit.metrics.seen`; "seen" is judged against the n labels
drawn, so the seen share grows with n).

Pure computation on arrays (`curve_points`); `run_learning_curve` reads the store and writes
`learning_curve.json` and `learning_curve.png`.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embedfit import atomic
from embedfit.adapters.config import SELECTABLE, TrainConfig
from embedfit.adapters.data import SplitData, TrainingData, load_training_data
from embedfit.adapters.select import concat_splits, select_adapter, subset_split
from embedfit.errors import InputError, StoreError
from embedfit.evaluation import plots
from embedfit.metrics.retrieval import per_query_metrics
from embedfit.metrics.seen import seen_unseen, trained_passages
from embedfit.metrics.stats import bootstrap_ci
from embedfit.progress import progress
from embedfit.retrieval.exact import exact_search
from embedfit.settings import K_VALUES, TOP_K, default_store
from embedfit.store import query_vectors
from embedfit.store.store import Store

log = logging.getLogger(__name__)

SIZES = (25, 50, 100, 200, 400)


@dataclass
class CurveConfig:
    store: Path = dataclasses.field(default_factory=default_store)
    model: str = "all-MiniLM-L6-v2"
    out: Path = Path(".data/learning-curve")
    sizes: tuple[int, ...] = SIZES  # the full pool is always added as the last point
    seeds: int = 3
    metric: str = "nDCG@10"
    #: the selection's grid: kept small by default (each point runs it once per seed)
    methods: tuple[str, ...] = SELECTABLE
    candidate_sets: tuple[str, ...] = ("corpus",)
    temperatures: tuple[float, ...] = (0.05,)
    folds: int = 3
    bootstrap_resamples: int = 2000

    def validate(self) -> None:
        if not self.sizes or any(n < 5 for n in self.sizes):
            raise InputError("--sizes must be numbers of labelled queries, each at least 5")
        if self.seeds < 1:
            raise InputError("--seeds must be at least 1")
        if self.folds < 2:
            raise InputError("--folds must be at least 2 (a handful of labels has no dev split of its own)")


def _score(Q: np.ndarray, test: SplitData, P: np.ndarray, pids: list[str], metric: str) -> dict[str, float]:
    res = exact_search(Q, test.query_ids, P, pids, k=TOP_K)
    return per_query_metrics(test.qrels, res, K_VALUES)[metric]


def curve_points(pool: TrainingData, test: SplitData, cfg: CurveConfig) -> list[dict]:
    """The curve's points (see the module docstring). `pool.train` + `pool.dev` are the labelled queries."""
    labelled = concat_splits(pool.train, pool.dev)
    n_all = len(labelled.query_ids)
    sizes = sorted({n for n in cfg.sizes if n < n_all} | {n_all})
    raw = _score(test.Q, test, pool.P, pool.passage_ids, cfg.metric)
    qids = list(raw)
    points = []
    for n in progress(sizes, desc="learning curve", unit="size"):
        gains, seen_share, chosen = [], [], []
        per_seed_parts = []
        for s in range(cfg.seeds if n < n_all else 1):  # all labels: one draw is all there is
            rows = np.sort(np.random.default_rng(1000 + s).choice(n_all, size=n, replace=False))
            sub = subset_split(labelled, rows)
            half = max(1, len(rows) // 5)
            data = dataclasses.replace(pool, train=subset_split(sub, np.arange(half, n)), dev=subset_split(sub, np.arange(half)))
            tcfg = TrainConfig(model=pool.model_id, metric=cfg.metric, methods=cfg.methods,
                               candidate_sets=cfg.candidate_sets, temperatures=cfg.temperatures, folds=cfg.folds,
                               tune_fusion=False, seed=13 + s)
            res, _, point = select_adapter(None, tcfg, data)
            ad = res.adapter
            got = _score(ad.project_queries(test.Q), test, ad.project_passages(pool.P, pool.passage_ids),
                         pool.passage_ids, cfg.metric)
            gains.append(np.array([got[q] - raw[q] for q in qids]))
            trained = trained_passages(sub.qrels, sub.query_ids)
            per_seed_parts.append(seen_unseen(test.qrels, qids, trained))
            seen_share.append(len(per_seed_parts[-1]["seen"]) / len(qids))
            chosen.append(point.method)
        mean_gain = np.mean(gains, axis=0)  # per test query, averaged over seeds
        point = {"labels": n, "seeds": len(gains), "chosen": chosen, "seen_share": round(float(np.mean(seen_share)), 3),
                 "gain": _with_ci(mean_gain, cfg)}
        for part in ("seen", "unseen"):  # per seed on its own subset, then averaged
            vals = [g[[qids.index(q) for q in parts[part]]] for g, parts in zip(gains, per_seed_parts)]
            vals = [v for v in vals if len(v)]
            point[part] = _with_ci(np.concatenate(vals), cfg) if vals else None
        log.info("learning curve: %d labels -> %s gain %+.4f (seen share %.2f; chose %s)", n, cfg.metric,
                 point["gain"]["mean"], point["seen_share"], chosen)
        points.append(point)
    return points


def _with_ci(values: np.ndarray, cfg: CurveConfig) -> dict:
    lo, hi = bootstrap_ci(values, n_resamples=cfg.bootstrap_resamples, seed=0) if len(values) > 1 else (np.nan, np.nan)
    return {"mean": round(float(np.mean(values)), 4), "ci95": [round(float(lo), 4), round(float(hi), 4)],
            "n": int(len(values))}


def load_test_split(store: Store, model: str) -> SplitData:
    """The store's test queries as vectors, with their qrels (what the curve is scored on)."""
    splits = store.load_splits()
    qrels = store.load_qrels()
    ids, vecs = query_vectors.load(store.root, model)
    row = {q: i for i, q in enumerate(ids)}
    test_ids = [q for q, s in splits.items() if s == "test" and q in row and qrels.get(q)]
    if not test_ids:
        raise StoreError(f"the store at {store.root} has no test queries with vectors for {model!r}")
    return SplitData(query_ids=test_ids, Q=vecs[[row[q] for q in test_ids]], positives=[], hard=[], weak=[],
                     qrels={q: qrels[q] for q in test_ids})


def open_study(store_root: Path, model: str) -> tuple[Store, TrainingData, SplitData]:
    """The store (read-only), its labelled train/dev data and its test split as vectors: what a study on frozen
    embeddings (this curve, `embedfit.evaluation.dims`) reads."""
    store = Store(store_root, write=False)
    store.require(model)
    return store, load_training_data(store, model), load_test_split(store, model)


def study_identity(store: Store, model: str) -> dict:
    """What a study's JSON says about the data it measured (the store and its data fingerprint), so an eval report
    includes only the studies of the data it reports on (`embedfit.evaluation.evaluate._study_figures`)."""
    return {"store": str(store.root.resolve()), "data_fingerprint": store.model_info(model).get("data_fingerprint")}


def run_learning_curve(cfg: CurveConfig) -> dict:
    cfg.validate()
    store, pool, test = open_study(cfg.store, cfg.model)
    points = curve_points(pool, test, cfg)
    out = {"model": cfg.model, **study_identity(store, cfg.model), "metric": cfg.metric, "test_queries": len(test.query_ids),
           "split": store.split_policy(), "selection": {"methods": list(cfg.methods), "folds": cfg.folds,
                                                        "candidate_sets": list(cfg.candidate_sets),
                                                        "temperatures": list(cfg.temperatures)},
           "points": points}
    cfg.out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(cfg.out / "learning_curve.json", out)  # an interval of one seed is [null, null], not NaN
    (cfg.out / "learning_curve.png").write_bytes(plots.learning_curve_png(out))
    return out
