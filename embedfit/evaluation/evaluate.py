"""The eval run: every system on the same queries, with intervals, significance, HNSW check and plots.

For each model (every model in the store unless `--model` narrows it):

1. the queries: the store's `--split` (default test), or the held-out `--queries/--qrels` files (`embedfit.evaluation.heldout`);
2. the systems, all ranked by *exact* search over the stored vectors (`embedfit.retrieval.exact`):
   `raw` (the model's embeddings), each given adapter (`adapted`, then `adapted:<name>`), the OpenAI
   cookbook MSE matrix trained here on the store's train split (`mse_baseline`), and BM25 (`bm25`);
3. per-query metrics by pytrec_eval (`embedfit.metrics.retrieval`), BCa bootstrap intervals and paired permutation
   p-values against raw (`embedfit.metrics.stats`);
4. what Chroma's HNSW index returns for raw and each adapter, and its recall@10 against exact search;
5. threshold accuracy on (query, positive) vs (query, weak / hard negative) pairs: threshold chosen
   on the dev split, accuracy on the test split (`embedfit.evaluation.threshold`);
6. the figures (`embedfit.evaluation.plots`), then `metrics.json`, `details.json`, `report.md` and `report.html`
   (`embedfit.evaluation.report`, drawn by `embedfit.report.render`).

Nothing here computes a metric itself: it only wires the tested pure functions together.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from embedfit.adapters.adapter import Adapter
from embedfit.adapters.config import TrainConfig
from embedfit.adapters.curves import curves_png
from embedfit.adapters.data import load_training_data
from embedfit.adapters.io import adapter_sha, check_compatible, load_adapter
from embedfit.adapters.nudge import NUDGE_SYSTEMS, applied_gamma, nudge_embeddings
from embedfit.adapters.project import projection_problem
from embedfit.adapters.train import train_adapter
from embedfit.embed import EmbeddingCache, embed_cached, load_embedder
from embedfit.embed.base import l2_normalise
from embedfit.errors import EmbedfitError, InputError, MismatchError, StoreError
from embedfit.evaluation import names, plots, report
from embedfit.evaluation.config import CI_METRICS, PRIMARY_METRIC, REPORT_OUTPUT, EvalConfig
from embedfit.evaluation.dims import DimsConfig
from embedfit.evaluation.finetune import finetune, training_pairs
from embedfit.evaluation.heldout import HeldOut, load_heldout, require_enough
from embedfit.evaluation.learning_curve import CurveConfig
from embedfit.evaluation.results import EvalOutcome, ModelEvaluation, SystemRun, is_adapter_key
from embedfit.evaluation.threshold import best_threshold, threshold_accuracy
from embedfit.metrics.retrieval import per_query_metrics, recall_at_k_curve
from embedfit.metrics.seen import seen_unseen
from embedfit.metrics.stats import bootstrap_ci, paired_p_value
from embedfit.outputs import check_output, read_json_object
from embedfit.pipeline.negatives import MiningConfig, MiningInput, mine_negatives
from embedfit.report.decision import PLAIN
from embedfit.retrieval.exact import exact_search
from embedfit.retrieval.fusion import (
    DEFAULT_N,
    RRF_DEFAULT,
    FusionSpec,
    dev_signature,
    fuse_results,
    is_current,
    load_raw_fusion,
)
from embedfit.retrieval.fusion_choice import choose_dev_fusion
from embedfit.retrieval.lexical import LexicalIndex
from embedfit.search.chroma_ann import chroma_search, recall_against_exact
from embedfit.settings import K_VALUES, METRICS, TOP_K, with_options
from embedfit.store import chroma_store, query_vectors
from embedfit.store.store import Store
from embedfit.types import Corpus, Qrels, Queries, Results, TrainingExample, slug

log = logging.getLogger(__name__)

#: metrics whose change against raw gets a paired interval and p-value in the report
DELTA_METRICS = ("MRR@10", "nDCG@10", "Recall@10", "Recall@100")
RECALL_CURVE_KS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100)
PAIR_KINDS = ("weak", "hard")


# -- inputs ------------------------------------------------------------------------------------------

def _models_to_run(store: Store, cfg: EvalConfig, adapters: list[tuple[Path | None, Adapter]]) -> list[str]:
    manifest = store.require()
    if cfg.models:
        for m in cfg.models:
            store.require(m)
        models = list(cfg.models)
    else:
        models = sorted(manifest.get("models", {}))
        if not models:
            raise StoreError(f"the store at {store.root} holds no model yet; run embedfit ingest first")
    for path, ad in adapters:
        if ad.config.base_model not in models:
            hint = (f"add --model {ad.config.base_model}" if ad.config.base_model in manifest.get("models", {})
                    else f"the store has no {ad.config.base_model!r} embeddings")
            raise MismatchError(f"adapter {path or ad.name} was trained on {ad.config.base_model!r}, which is not among the "
                                f"models evaluated ({', '.join(models)}); {hint}")
    return models


def _adapter_key(index: int, adapter: Adapter, taken: set[str]) -> str:
    if index == 0:
        return "adapted"
    key = f"adapted:{adapter.name}"
    n = 2
    while key in taken:
        key, n = f"adapted:{adapter.name}-{n}", n + 1
    return key


def _query_vectors_for(store: Store, model: str, dim: int, queries: Queries, cfg: EvalConfig,
                       store_queries: Queries) -> tuple[np.ndarray, int]:
    """Vectors of `queries` (in order): stored ones where id and text match the store, the rest embedded now."""
    ids, vecs = query_vectors.load(store.root, model)
    row = {q: i for i, q in enumerate(ids)}
    out = np.zeros((len(queries), dim), np.float32)
    todo: list[int] = []
    for i, (qid, text) in enumerate(queries.items()):
        if qid in row and store_queries.get(qid) == text:
            out[i] = vecs[row[qid]]
        else:
            todo.append(i)
    if todo:
        embedder = load_embedder(model, cfg.device)
        if embedder.dim != dim:
            raise MismatchError(f"{model} now embeds {embedder.dim}-d vectors but the store holds {dim}-d ones; re-ingest")
        cache = EmbeddingCache(cfg.cache_dir, embedder.model_id, embedder.dim) if cfg.cache_dir else None
        texts = list(queries.values())
        vectors, _ = embed_cached(embedder, [texts[i] for i in todo], "query", cache, cfg.batch_size,
                                  desc="embed held-out queries")
        out[todo] = vectors
    return out, len(todo)


# -- systems -----------------------------------------------------------------------------------------

def _dense_system(key: str, label: str, q: np.ndarray, qids: list[str], p_raw: np.ndarray, pids: list[str],
                  project_q: Callable[[np.ndarray], np.ndarray], project_p: Callable[..., np.ndarray],
                  dot: bool = False, **extra) -> SystemRun:
    """`project_p(vectors, ids)`: the passages as this system searches them (a query memory moves them by id);
    `dot`: search them by dot product, not cosine (`embedfit.retrieval.exact.exact_search`)."""
    t0 = time.perf_counter()
    passages = project_p(p_raw, pids)
    results = exact_search(project_q(q), qids, passages, pids, k=TOP_K, dot=dot)
    log.info("%s: exact search of %d queries over %d passages in %.1fs", key, len(qids), len(pids), time.perf_counter() - t0)
    return SystemRun(key=key, label=label, results=results, project_queries=project_q, passages=passages, **extra)


def _mse_baseline(store: Store, model: str, cfg: EvalConfig, q: np.ndarray, qids: list[str], p_raw: np.ndarray,
                  pids: list[str], notes: list[str]) -> SystemRun | None:
    """The OpenAI-cookbook objective (cosine MSE against ±1, one matrix on both sides), trained here."""
    tcfg = TrainConfig(store=store.root, model=model, kind="linear", sides="both", loss="mse",
                       epochs=cfg.mse_epochs, keep_identity_candidate=False, selection="last", tune_fusion=False,
                       name=f"{slug(model)}-mse-cookbook",
                       chroma_host=cfg.chroma_host, chroma_port=cfg.chroma_port)
    try:
        res = train_adapter(store, tcfg)
    except EmbedfitError as exc:
        notes.append(f"MSE cookbook baseline skipped: {exc}")
        log.warning("MSE baseline skipped: %s", exc)
        return None
    ad = res.adapter
    log.info("MSE baseline trained in %.1fs (epoch %d kept)", res.seconds, res.best_epoch)
    notes.append(f"MSE cookbook baseline: one linear matrix on both sides, cosine-MSE against ±1 labels (query with "
                 f"positive / random passage), trained here on the store's train split for {res.best_epoch} epochs in "
                 f"{res.seconds:.1f} s and kept as trained (no dev selection, as the cookbook does); its per-epoch dev "
                 f"scores are in the training-curves figure.")
    return _dense_system("mse_baseline", "MSE cookbook baseline", q, qids, p_raw, pids,
                         ad.project_queries, ad.project_passages, adapter=ad, curves=res.curves,
                         seconds=round(res.seconds, 2))


def _nudge_systems(store: Store, model: str, q: np.ndarray, qids: list[str], dump: chroma_store.CollectionDump,
                   p_raw: np.ndarray, notes: list[str]) -> dict[str, SystemRun]:
    """NUDGE-N and NUDGE-M (`embedfit.adapters.nudge`), fitted on the store's train split with gamma chosen by the
    package on its dev split, exactly as the package's README does; queries unchanged."""
    try:
        data = load_training_data(store, model, dump)  # the vectors eval already read: the same rows, in order
    except EmbedfitError as exc:
        notes.append(f"NUDGE baselines skipped: {exc}")
        return {}
    pids = data.passage_ids
    out, gammas = {}, {}
    for key, (label, _, dot) in NUDGE_SYSTEMS.items():
        t0 = time.perf_counter()
        moved = nudge_embeddings(data.P, data.train, data.dev, key)
        gammas[key] = applied_gamma(data.P, moved, key)
        out[key] = _dense_system(key, label, q, qids, p_raw, pids, l2_normalise, lambda _x, _ids, m=moved: m,
                                 dot=dot, seconds=round(time.perf_counter() - t0, 2))
    notes.append(f"NUDGE-N and NUDGE-M (Zeighami et al., ICLR 2025; the nudge-ft package, used unchanged): passage "
                 f"vectors moved toward the {len(data.train.query_ids)} train-split queries that answer them, the size "
                 f"of the move (gamma) chosen by the package on the {len(data.dev.query_ids)} dev-split queries; "
                 "queries unchanged; NUDGE-M searched by dot product, as its authors do. Gamma the package chose "
                 "(read back from the largest move): "
                 + "; ".join(f"{NUDGE_SYSTEMS[k][0].split()[0]} {g:g}"
                             + (" (no passage moved: it equals raw)" if g == 0 else "") for k, g in gammas.items())
                 + ".")
    return out


def _finetune_system(store: Store, model: str, corpus: Corpus, store_queries: Queries, scope: Scope, qids: list[str],
                     pids: list[str], cfg: EvalConfig, notes: list[str]) -> dict[str, SystemRun]:
    """The full fine-tune baseline (`embedfit.evaluation.finetune`), fitted on the store's train split with the epoch
    chosen on dev, scored on the same queries as every other system."""
    qrels = store.load_qrels()
    train = training_pairs(store_queries, qrels, store.split_query_ids("train"), corpus)
    dev_ids = store.split_query_ids("dev")
    try:
        res = finetune(model, train, {q: store_queries[q] for q in dev_ids if q in store_queries},
                       {q: qrels[q] for q in dev_ids if q in qrels}, corpus, pids, [scope.queries[q] for q in qids],
                       epochs=cfg.finetune_epochs, seed=cfg.seed)
    except InputError as exc:
        notes.append(f"fine-tune baseline skipped: {exc}.")
        return {}
    curve = ", ".join(f"epoch {c['epoch']} {c['dev MRR@10']:.4f}" for c in res.curve)
    notes.append(f"Full fine-tune baseline: {model} fine-tuned with sentence-transformers' MultipleNegativesRankingLoss "
                 f"on {res.n_pairs} (query, positive) pairs of the train split; dev MRR@10 by epoch: {curve}; epoch "
                 f"{res.best_epoch} kept" + (" (the untuned model: fine-tuning never beat it on dev)" if res.best_epoch == 0
                                             else "") + f"; the corpus re-embedded with it; {res.seconds:.0f} s in all.")
    results = exact_search(res.query_vectors, qids, res.passage_vectors, pids, k=TOP_K)
    cost = {"fit_seconds": round(res.seconds, 2), "query_ms": 0.0, "storage_bytes": res.weight_bytes,
            "storage": "a fine-tuned copy of the model (the corpus re-embedded in place of its raw vectors)"}
    label = f"full fine-tune (MNRL, epoch {res.best_epoch})"
    return {"finetune": SystemRun(key="finetune", label=label, results=results, seconds=round(res.seconds, 2),
                                  cost=cost)}


# -- statistics ------------------------------------------------------------------------------------

def _score(results: Results, qrels: Qrels, cfg: EvalConfig, raw: dict | None = None) -> dict:
    """SystemRun's score fields for one ranking: per-query metrics, means, intervals and (given raw's
    scores) the paired comparison with raw."""
    per_query = per_query_metrics(qrels, results, K_VALUES)
    means = {m: float(np.mean(list(per_query[m].values()))) for m in METRICS}
    ci95 = {m: bootstrap_ci(list(per_query[m].values()), n_resamples=cfg.bootstrap_resamples, seed=cfg.seed)
            for m in CI_METRICS}
    scores = {"per_query": per_query, "means": means, "ci95": ci95}
    return {**scores, "vs_raw": _compare(scores, raw, cfg, DELTA_METRICS) if raw is not None else {}}


SUBSET_METRICS = (PRIMARY_METRIC, "nDCG@10")


def _restrict(scores: dict, keep: set[str]) -> dict:
    """A system's per-query scores and means on the queries in `keep` only (the subset metrics)."""
    per_query = {m: {q: v for q, v in scores["per_query"][m].items() if q in keep} for m in SUBSET_METRICS}
    return {"per_query": per_query, "means": {m: float(np.mean(list(per_query[m].values()))) for m in SUBSET_METRICS}}


def _on_subset(sub: dict, raw_sub: dict | None, n: int, cfg: EvalConfig) -> dict:
    """One system on one subset (`_restrict`ed): n, means, intervals and, given raw restricted the same way,
    the paired comparison with raw on the same queries."""
    out = {"n": n, "means": sub["means"],
           "ci95": {m: bootstrap_ci(list(sub["per_query"][m].values()), n_resamples=cfg.bootstrap_resamples,
                                    seed=cfg.seed) for m in SUBSET_METRICS}}
    if raw_sub is not None:
        out["vs_raw"] = _compare(sub, raw_sub, cfg, SUBSET_METRICS)
    return out


def _subsets(store: Store, scope: Scope, systems: dict[str, SystemRun], scores: dict[str, dict],
             cfg: EvalConfig) -> tuple[dict[str, int], dict[str, dict]]:
    """The seen/unseen sizes and, per system, its scores on each non-empty subset (`embedfit.metrics.seen`)."""
    fitted = {"train"}  # an adapter selected by cross-validation is fitted on train + dev (`embedfit.adapters.select`)
    for s in systems.values():
        if s.adapter is not None and s.key != "mse_baseline":
            fitted |= set(s.adapter.fit_splits)
    fitted.discard(scope.split)
    trained = store.trained_passages(fitted)
    parts = seen_unseen(scope.qrels, list(scope.queries), trained)
    sizes = {k: len(v) for k, v in parts.items()}
    by_system: dict[str, dict] = {k: {} for k in systems}
    for name, ids in parts.items():
        if not ids:
            continue
        keep = set(ids)
        raw_sub = _restrict(scores["raw"], keep)
        for k in systems:
            sub = raw_sub if k == "raw" else _restrict(scores[k], keep)
            by_system[k][name] = _on_subset(sub, None if k == "raw" else raw_sub, len(ids), cfg)
    return sizes, by_system


def _compare(a: dict, b: dict, cfg: EvalConfig, metrics) -> dict:
    """Paired comparison of two systems' scores (`_score` output) over the same queries: per metric the
    difference of means, the BCa interval of the per-query difference, the permutation p-value."""
    out = {}
    for m in metrics:
        x, y = a["per_query"][m], b["per_query"][m]
        out[m] = {
            "delta": a["means"][m] - b["means"][m],
            "ci95": bootstrap_ci([x[q] - y[q] for q in y], n_resamples=cfg.bootstrap_resamples, seed=cfg.seed),
            "p": paired_p_value(x, y, n_resamples=cfg.bootstrap_resamples, seed=cfg.seed),
        }
    return out


def _hnsw(store: Store, system: SystemRun, model: str, q: np.ndarray, qids: list[str], qrels: Qrels) -> dict:
    """Query the collection the app would query for this system (see embedfit.search.chroma_ann)."""
    ad = system.adapter
    if ad is not None and ad.moves_passages:
        sha = adapter_sha(system.adapter_dir) if system.adapter_dir else None
        problem = projection_problem(store, ad, sha, str(system.adapter_dir) if system.adapter_dir else None)
        if problem is not None:
            return {"skipped": str(problem)}
        col = chroma_store.get_collection(store.client, ad.collection_name)
    else:
        col = store.raw_collection(model)
    approx = chroma_search(col, system.project_queries(q), qids, k=TOP_K)
    metrics = per_query_metrics(qrels, approx, K_VALUES)
    return {
        "collection": col.name,
        "metrics": {m: float(np.mean(list(metrics[m].values()))) for m in METRICS},
        "recall@10_vs_exact": recall_against_exact(approx, system.results, k=10),
    }


# -- costs and the seen / unseen reason ----------------------------------------------------------------

#: single queries timed for each system's added latency (median): enough for a stable median, a second at most
LATENCY_QUERIES = 30


def _median_ms(fn: Callable[[int], object], rows: list[int]) -> float:
    times = []
    for i in rows:
        t = time.perf_counter()
        fn(i)
        times.append((time.perf_counter() - t) * 1000)
    return round(float(np.median(times)), 3) if times else 0.0


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) if Path(path).is_dir() else 0


def _adapter_bytes(ad: Adapter) -> int:
    """The adapter's own tensors as saved (its weights' state dict; none for the identity) and its query memory."""
    n = 0 if ad.config.identity else sum(int(t.numel()) * t.element_size() for t in ad.module.state_dict().values())
    return n + (int(ad.memory.vectors.nbytes) if ad.memory is not None else 0)


def _costs(systems: dict[str, SystemRun], q: np.ndarray, qids: list[str], queries: Queries, n_passages: int,
           index: LexicalIndex | None, lexical_dir: Path) -> dict[str, dict]:
    """What each system costs over raw, measured here: the time to fit it, the milliseconds it adds to one query
    (the adapter's projection, BM25's search and the fusion; median over single queries), and the bytes it adds
    to storage (its weights and memory; a projected collection's float32 vectors; the BM25 index on disk).
    Raw costs nothing by definition; Chroma's HNSW index over a projected collection comes on top of its vectors."""
    rows = list(range(min(LATENCY_QUERIES, len(qids))))
    out: dict[str, dict] = {"raw": {"fit_seconds": 0.0, "query_ms": 0.0, "storage_bytes": 0, "storage": "nothing"}}
    for k, s in systems.items():
        if s.cost:  # measured where it was fitted (the fine-tune baseline)
            out[k] = s.cost
        if k == "raw" or not s.dense:
            continue
        ad = s.adapter
        projects = ad is not None and not ad.config.identity
        ms = _median_ms(lambda i, f=s.project_queries: f(q[i:i + 1]), rows) if projects else 0.0
        moved = ad.moves_passages if ad is not None else k in NUDGE_SYSTEMS
        size = (_adapter_bytes(ad) if ad is not None else 0) + (4 * n_passages * int(s.passages.shape[1]) if moved else 0)
        what = ", ".join(w for w, on in (("the adapter's weights", projects), ("its query memory", ad is not None and ad.memory is not None),
                                          ("a projected collection's vectors", moved)) if on) or "nothing"
        fit = ad.config.training.get("fit_seconds") if ad is not None else None  # None: trained before it was recorded
        out[k] = {"fit_seconds": s.seconds if s.seconds is not None else fit, "query_ms": ms,
                  "storage_bytes": size, "storage": what}
    hybrids = [k for k, s in systems.items() if s.fusion is not None]
    if index is not None and ("bm25" in systems or hybrids):
        texts = [queries[qid] for qid in qids]
        bm25_ms = _median_ms(lambda i: index.search([texts[i]], DEFAULT_N), rows)
        bm25 = {"fit_seconds": 0.0, "query_ms": bm25_ms, "storage_bytes": _folder_bytes(lexical_dir),
                "storage": "the BM25 index"}
        if "bm25" in systems:
            out["bm25"] = bm25
        for k in hybrids:
            s = systems[k]
            dense_key = k[: -len("_bm25")] if k.endswith("_bm25") else k[: -len("_rrf")]
            spec = FusionSpec.from_json(s.fusion)
            dense = systems[dense_key].results

            def hybrid(i: int, dense=dense, spec=spec) -> None:  # BM25's search and the fusion, for one query
                fuse_results({qids[i]: dense[qids[i]]}, {qids[i]: index.search([texts[i]], spec.n)[0]}, spec)

            fused_ms = _median_ms(hybrid, rows)
            d = out.get(dense_key, out["raw"])
            out[k] = {"fit_seconds": d["fit_seconds"], "query_ms": round(d["query_ms"] + fused_ms, 3),
                      "storage_bytes": d["storage_bytes"] + bm25["storage_bytes"],
                      "storage": " and ".join(w for w in (d["storage"], bm25["storage"]) if w != "nothing")}
    return out


def _why_seen(sizes: dict[str, int], split: str | None, policy: dict) -> str:
    """The true reason the scored queries split into seen / unseen as they did (one sentence)."""
    if not sizes:
        return ""
    seen, unseen = sizes.get("seen", 0), sizes.get("unseen", 0)
    if split is None:
        return (f"{seen} of these held-out queries ask only about passages that training queries had as answers; "
                f"the other {unseen} ask about at least one passage no training query had as an answer"
                + (" (so none is seen)" if not seen else "") + ".")
    by = policy.get("by")
    if by == "grouped":
        return (f"This store's splits are grouped (ingest --split-by grouped): no relevant passage is shared between "
                f"splits, so none of the {split} split's queries can be seen; all {unseen} are about new documents.")
    if by == "random":
        if not seen:
            return (f"This store was split at random, and still none of these {unseen} queries asks only about "
                    f"passages a training query had as an answer: on this data few passages are asked about twice.")
        return (f"This store was split at random, so {seen} of these queries ask about passages that training queries "
                f"also had as answers (repeat questions about the same documents: seen); {unseen} ask about at least "
                f"one new one (unseen).")
    return (f"{seen} of these queries ask only about passages that training queries had as answers (seen); {unseen} "
            f"ask about at least one passage training never saw as an answer (unseen); the store does not record how "
            f"its splits were made.")


# -- hybrids: dense + BM25 ----------------------------------------------------------------------------

def _fusion_for(system: SystemRun, store: Store, model: str, info: dict, index: LexicalIndex,
                q_all: tuple[list[str], np.ndarray], pids: list[str], notes: list[str]) -> tuple[FusionSpec, dict]:
    """The fusion chosen on dev for this dense system: saved with the adapter, or beside the store for raw.
    Missing (an adapter fitted with tune_fusion off, a store whose fusion was chosen on other splits): chosen here
    on the dev split, the same way, and said in a note."""
    saved = None
    stale = False
    if system.adapter is not None:
        saved = system.adapter.config.fusion
        where = "the adapter's config (chosen on dev when it was trained)"
        if saved and not is_current(saved):  # chosen against an older BM25 (another tokenizer or scoring)
            saved, stale = None, True
    else:
        choice = load_raw_fusion(store.root, model, info.get("data_fingerprint"), dev_signature(store.load_splits()))
        saved = choice.to_json() if choice is not None else None
        where = "the store (chosen on dev by ingest)"
    if saved:
        spec = FusionSpec.from_json(saved)
        return spec, {**spec.to_json(), "chosen_on": saved.get("chosen_on", "dev"), "source": where}
    ids, q = q_all
    choice = choose_dev_fusion(ids, system.project_queries(q), pids, system.passages, store.load_queries(),
                               store.load_qrels(), store.load_splits(), index)
    if choice is None:
        return RRF_DEFAULT, {**RRF_DEFAULT.to_json(), "chosen_on": None, "source": "no judged dev query: RRF"}
    fix = ("retrain the adapter" if system.adapter is not None
           else f"run embedfit ingest --store {store.root} --lexical-only")
    why = ("its saved BM25 fusion was chosen against an older BM25 (another tokenizer or scoring)" if stale
           else "no saved BM25 fusion")
    notes.append(f"{system.label}: {why}, so eval chose it on the dev split "
                 f"({choice.spec.describe()}); to save it, {fix}.")
    return choice.spec, {**choice.spec.to_json(), "chosen_on": choice.split, "source": "eval, on dev"}


def _hybrid_systems(dense: list[SystemRun], lexical: Results, store: Store, model: str, info: dict,
                    index: LexicalIndex, q: np.ndarray, qids: list[str], pids: list[str],
                    notes: list[str]) -> dict[str, SystemRun]:
    """For each dense system (raw, each adapter): `<key>_bm25`, fused as chosen on dev, and `<key>_rrf`."""
    q_all = query_vectors.load(store.root, model)
    out: dict[str, SystemRun] = {}
    for s in dense:
        tuned, meta = _fusion_for(s, store, model, info, index, q_all, pids, notes)
        for suffix, spec, fusion in (("_bm25", tuned, meta), ("_rrf", RRF_DEFAULT, {**RRF_DEFAULT.to_json(),
                                                                                      "chosen_on": None, "source": "fixed"})):
            results = s.results if spec.n <= TOP_K else exact_search(s.project_queries(q), qids, s.passages, pids, k=spec.n)
            out[s.key + suffix] = SystemRun(key=s.key + suffix, label=f"{s.label} + {names.fusion_name(fusion)}",
                                            results=fuse_results(results, lexical, spec, k=TOP_K),
                                            adapter=s.adapter, adapter_dir=s.adapter_dir, fusion=fusion)
    return out


def _best_plain_comparison(systems: dict[str, SystemRun], scores: dict[str, dict], cfg: EvalConfig) -> dict[str, dict]:
    """Each adapter system against the best system that needs no adapter (raw, BM25, raw+BM25, raw RRF; by
    the primary metric on these queries): is the adapter worth it once BM25 is fused?"""
    plain = [k for k in systems if k in PLAIN]  # not the MSE baseline nor NUDGE: they are fitted on the labels too
    best = max(plain, key=lambda k: (scores[k]["means"][PRIMARY_METRIC], k == "raw"))
    return {k: {"system": best, **_compare(scores[k], scores[best], cfg, (PRIMARY_METRIC, "nDCG@10"))}
            for k in systems if is_adapter_key(k)}


# -- threshold accuracy ----------------------------------------------------------------------------

@dataclass
class PairSet:
    """Row indices of (query, passage) pairs of one split: positives and one kind of negatives."""

    pos_q: np.ndarray
    pos_p: np.ndarray
    neg_q: np.ndarray
    neg_p: np.ndarray


def _pairs(examples, qrow: dict[str, int], prow: dict[str, int], split: str, kind: str, balanced: bool) -> PairSet:
    """Pairs from the mined examples; `balanced`: per query as many negatives as positives (chance = 50%)."""
    pq, pp, nq, np_ = [], [], [], []
    for e in examples:
        if e.split != split or e.query_id not in qrow:
            continue
        pos = [prow[p] for p in e.positive_ids if p in prow]
        neg = [prow[p] for p in (e.weak_ids if kind == "weak" else e.hard_ids) if p in prow]
        if not pos or not neg:
            continue
        if balanced:
            n = min(len(pos), len(neg))
            pos, neg = pos[:n], neg[:n]
        r = qrow[e.query_id]
        pq += [r] * len(pos)
        pp += pos
        nq += [r] * len(neg)
        np_ += neg
    return PairSet(*(np.asarray(x, dtype=np.int64) for x in (pq, pp, nq, np_)))


def _pair_scores(Q: np.ndarray, P: np.ndarray, qi: np.ndarray, pi: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", Q[qi], P[pi]).astype(np.float64)


@dataclass
class ThresholdRun:
    """Threshold accuracy of every dense system: per system and pair kind its figures (`SystemRun.threshold`),
    the test-split pair scores for the histograms, the pair counts and what could not be measured."""

    by_system: dict[str, dict[str, dict]]
    hist: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]
    pair_counts: dict[str, dict[str, int]]
    notes: list[str]


@dataclass(frozen=True)
class PairSource:
    """Where one side of threshold accuracy takes its pairs: mined examples (`TrainingExample`), the split of them
    to use, and the raw vectors of their queries (`query_ids` in row order)."""

    examples: list[TrainingExample]
    split: str
    query_ids: list[str]
    vectors: np.ndarray


def store_pairs(store: Store, model: str, split: str) -> PairSource:
    """The store's own pairs of `split`: ingest's mined examples and its saved query vectors."""
    ids, raw_q = query_vectors.load(store.root, model)
    return PairSource(store.load_examples(model), split, list(ids), raw_q)


def heldout_pairs(query_ids: list[str], q: np.ndarray, pids: list[str], p_raw: np.ndarray, texts: dict[str, str],
                  qrels: Qrels, mining: MiningConfig) -> PairSource:
    """Held-out queries' own pairs: positives from their qrels; weak (random) and hard (nearest non-answer under
    the raw embeddings) negatives mined now by ingest's rule and settings (`embedfit.pipeline.negatives`), so the
    held-out score is measured exactly as the store's test split is."""
    data = MiningInput(query_ids, l2_normalise(q), pids, p_raw, texts, qrels, dict.fromkeys(query_ids, "test"))
    examples, _ = mine_negatives(data, mining)
    return PairSource(examples, "test", list(query_ids), q)


def threshold_accuracies(systems: list[SystemRun], pids: list[str], dev: PairSource, test: PairSource) -> ThresholdRun:
    """Per dense system and pair kind: the threshold chosen on `dev`'s pairs, the accuracy on `test`'s (one
    negative per positive per query, so chance is 50%), and all of `test`'s pair scores for the histograms."""
    dev_row = {q: i for i, q in enumerate(dev.query_ids)}
    test_row = {q: i for i, q in enumerate(test.query_ids)}
    prow = {p: i for i, p in enumerate(pids)}
    run = ThresholdRun(by_system={s.key: {} for s in systems}, hist={}, pair_counts={}, notes=[])
    for kind in PAIR_KINDS:
        dp = _pairs(dev.examples, dev_row, prow, dev.split, kind, balanced=True)
        tp = _pairs(test.examples, test_row, prow, test.split, kind, balanced=True)
        every = _pairs(test.examples, test_row, prow, test.split, kind, balanced=False)
        run.pair_counts[kind] = {"dev_pos": len(dp.pos_q), "dev_neg": len(dp.neg_q),
                                 "test_pos": len(tp.pos_q), "test_neg": len(tp.neg_q)}
        if min(len(dp.pos_q), len(dp.neg_q), len(tp.pos_q), len(tp.neg_q)) == 0:
            run.notes.append(f"threshold accuracy ({kind}): not enough dev/test pairs ({run.pair_counts[kind]}).")
            continue
        for s in systems:
            Qd = s.project_queries(dev.vectors)
            Qt = Qd if test.vectors is dev.vectors else s.project_queries(test.vectors)
            P = s.passages
            dev_pos, dev_neg = _pair_scores(Qd, P, dp.pos_q, dp.pos_p), _pair_scores(Qd, P, dp.neg_q, dp.neg_p)
            t = best_threshold(dev_pos, dev_neg)  # chosen on dev ...
            dev_acc, _ = threshold_accuracy(dev_pos, dev_neg, t)
            acc, se = threshold_accuracy(_pair_scores(Qt, P, tp.pos_q, tp.pos_p),  # ... reported on test
                                         _pair_scores(Qt, P, tp.neg_q, tp.neg_p), t)
            run.by_system[s.key][kind] = {"threshold": t, "accuracy": acc, "se": se, "dev_accuracy": dev_acc,
                                          "n_pos": len(tp.pos_q), "n_neg": len(tp.neg_q)}
            run.hist.setdefault(s.key, {})[kind] = (_pair_scores(Qt, P, every.pos_q, every.pos_p),
                                                    _pair_scores(Qt, P, every.neg_q, every.neg_p))
    return run


# -- figures -----------------------------------------------------------------------------------------

def _figures(ev: ModelEvaluation, cfg: EvalConfig, q: np.ndarray, qrels: Qrels, queries: Queries,
             corpus: Corpus, pids: list[str], hist: dict) -> tuple[dict[str, str], dict[str, bytes | str]]:
    """Draw the model's figures, in memory: (name -> path inside the report, that path -> the file's content).
    Nothing is written here; `embedfit.evaluation.report.write_reports` writes the files."""
    rel = Path("figures") / slug(ev.model)
    qids = ev.query_ids
    figures: dict[str, str] = {}
    files: dict[str, bytes | str] = {}

    def add(key: str, name: str, content: bytes | str) -> None:
        figures[key] = str(rel / name)
        files[str(rel / name)] = content

    dense = [s for s in ev.systems.values() if s.dense]
    rows = [(s.label, {k: (*hist[s.key][k], s.threshold.get(k, {}).get("threshold"), s.threshold.get(k, {}).get("accuracy"))
                       for k in PAIR_KINDS if k in hist.get(s.key, {})}) for s in dense if s.key in hist]
    if rows:
        add("similarity_hist", "similarity_hist.png",
            plots.similarity_histograms(rows, title=f"{ev.model}: cosine of test pairs"))

    curves = {s.label: recall_at_k_curve(qrels, s.results, RECALL_CURVE_KS) for s in ev.systems.values()}
    add("recall_at_k", "recall_at_k.png", plots.recall_curves(curves, title=f"{ev.model}: Recall@k, {ev.scope}"))

    if cfg.plot_queries > 0:
        rng = np.random.default_rng(cfg.seed)
        n = min(cfg.plot_queries, len(qids))
        sample = sorted(rng.choice(len(qids), size=n, replace=False).tolist())
        prow = {p: i for i, p in enumerate(pids)}
        pos_rows = sorted({prow[p] for i in sample for p, r in qrels[qids[i]].items() if r > 0 and p in prow})
        others = np.setdiff1d(np.arange(len(pids)), pos_rows)
        extra = rng.choice(others, size=min(cfg.plot_passages, len(others)), replace=False).tolist() if len(others) else []
        p_rows = pos_rows + sorted(extra)
        where = {r: j for j, r in enumerate(p_rows)}
        lines = [(k, where[prow[p]]) for k, i in enumerate(sample[: cfg.plot_lines])
                 for p, r in qrels[qids[i]].items() if r > 0 and p in prow]
        spaces = [(s.label, s.project_queries(q[sample]), s.passages[p_rows])
                  for s in dense if s.key == "raw" or s.key in ev.adapter_keys][:4]
        png, html = plots.latent_space(
            spaces, lines, n_positive=len(pos_rows),
            query_text=[queries[qids[i]] for i in sample],
            passage_text=[f"{corpus[pids[r]].title}: {corpus[pids[r]].text[:120]}" for r in p_rows],
            title=f"{ev.model}: {n} queries, their positives and {len(extra)} random passages (PCA 2-D)")
        add("latent_space", "latent_space.png", png)
        add("latent_space_html", "latent_space.html", html)

    for s in ev.systems.values():
        if s.curves:
            metric = (s.adapter.config.dev_metrics or {}).get("metric", "MRR@10") if s.adapter is not None else "MRR@10"
            add(f"training:{s.key}", f"training_{slug(s.key)}.png",
                curves_png(s.curves, metric, f"{ev.model}: training curves of {s.label}"))
    for key in ev.adapter_keys:
        s = ev.systems[key]
        png = plots.selection_png(s.adapter.config.selection, f"{ev.model}, {s.label}") if s.adapter.config.selection else None
        if png is not None:
            add(f"selection:{key}", f"selection_{slug(key)}.png", png)
    return figures, files


#: the studies' JSON files and how each is drawn (the same figure the study itself saves)
STUDIES = {"learning_curve": ("learning_curve.json", plots.learning_curve_png), "dims": ("dims.json", plots.dims_png)}
#: where the studies write by default (`embedfit eval learning-curve`, `eval dims`): looked in when --study is not given
DEFAULT_STUDY_FOLDERS = (CurveConfig.out, DimsConfig.out)


def _study_figures(model: str, fingerprint: str | None, cfg: EvalConfig, notes: list[str]) -> dict[str, bytes]:
    """The learning-curve and smaller-vectors figures of the studies that measured this model on this data
    (their JSON's model and data fingerprint), drawn from their JSON. A study of other data is left out: said in a
    note when its folder was given with --study, silently for the default folders."""
    out: dict[str, bytes] = {}
    for folder in cfg.studies or DEFAULT_STUDY_FOLDERS:
        for key, (name, draw) in STUDIES.items():
            obj = read_json_object(Path(folder) / name)
            if obj is None or obj.get("model") != model or key in out:
                continue
            if not fingerprint or obj.get("data_fingerprint") != fingerprint:
                if cfg.studies:
                    notes.append(f"{Path(folder) / name} was left out: it measured other data than this store holds "
                                 f"(or predates data fingerprints in studies); run the study again.")
                continue
            try:
                out[key] = draw(obj)
            except (KeyError, TypeError, ValueError, StopIteration) as exc:
                notes.append(f"{Path(folder) / name} could not be drawn ({exc!r}); run the study again.")
    return out


def forest_panel(ev: ModelEvaluation, metric: str = PRIMARY_METRIC) -> dict:
    """One model's rows of the forest plot (`embedfit.evaluation.plots.forest_figure`): every system but raw, its
    paired change against raw overall and on the seen / unseen queries."""
    rows = []
    for k, s in ev.systems.items():
        if k == "raw":
            continue
        row = {"system": k, "label": s.label, "overall": s.vs_raw.get(metric)}
        for part in ("seen", "unseen"):
            row[part] = (s.by_subset.get(part) or {}).get("vs_raw", {}).get(metric)
        rows.append(row)
    return {"model": ev.model, "n": {"overall": ev.n_queries, **ev.subset_sizes}, "rows": rows}


FOREST_FIGURE = "figures/forest.png"


# -- the run -----------------------------------------------------------------------------------------

@dataclass
class Scope:
    """The queries one model is scored on: a split of the store, or the held-out files."""

    queries: Queries
    qrels: Qrels
    label: str  # "<split> split" (test or dev) or "held-out queries from FILE"
    notes: list[str]
    split: str | None = None  # the store split scored (None: held-out files)


def _scope(store: Store, cfg: EvalConfig, store_queries: Queries, heldout: HeldOut | None, adapters: bool) -> Scope:
    if heldout is not None:
        notes = [f"{len(ids)} of the given queries are also in the store's {split} split (by id or text): the adapter "
                 f"was {'trained' if split == 'train' else 'selected'} on them, so they are not held out."
                 for split, ids in heldout.overlap.items()]
        if heldout.skipped:
            notes.append("left out of the given files: "
                         + ", ".join(f"{k} {v}" for k, v in sorted(heldout.skipped.items())) + ".")
        return Scope(heldout.queries, heldout.qrels, f"held-out queries from {cfg.queries}", notes)
    all_qrels = store.load_qrels()
    qids = [q for q in store.split_query_ids(cfg.split) if q in all_qrels and q in store_queries]
    notes = []
    if cfg.split == "dev" and adapters:
        notes.append("these are dev-split numbers: training selected each adapter's epoch (and the MSE baseline's) "
                     "on this very split, so their gains are optimistic; the test split is the honest score.")
    return Scope({q: store_queries[q] for q in qids}, {q: all_qrels[q] for q in qids}, f"{cfg.split} split", notes,
                 split=cfg.split)


def _adapter_systems(adapters: list[tuple[Path | None, Adapter]], model: str, info: dict, q: np.ndarray, qids: list[str],
                     p_raw: np.ndarray, pids: list[str], taken: set[str]) -> tuple[dict[str, SystemRun], list[str]]:
    """One dense system per adapter (refusing an incompatible one), and what the report should say about them."""
    systems: dict[str, SystemRun] = {}
    notes: list[str] = []
    for i, (path, ad) in enumerate(adapters):
        check_compatible(ad, model, int(info["dim"]), info.get("data_fingerprint"))
        if ad.config.data_fingerprint != info.get("data_fingerprint"):
            notes.append(f"adapter {ad.name} was trained on other data ({ad.config.data_fingerprint}) than this store "
                         f"holds ({info.get('data_fingerprint')}): its test queries may include its training queries.")
        if ad.is_identity:
            notes.append(f"adapter {ad.name} is the identity: training found nothing better than the raw embeddings "
                         "on dev, so its rows equal raw by construction.")
        key = _adapter_key(i, ad, taken | set(systems))
        systems[key] = _dense_system(key, names.adapter_name(ad), q, qids, p_raw, pids, ad.project_queries,
                                     ad.project_passages, adapter=ad, adapter_dir=str(path) if path else None,
                                     curves=plots.read_curves(path) if path else None)
    labels = names.unique({k: s.label for k, s in systems.items()}, {k: s.adapter.name for k, s in systems.items()})
    return {k: replace(s, label=labels[k]) for k, s in systems.items()}, notes


@contextmanager
def _timed(timings: dict[str, float], step: str):
    t = time.perf_counter()
    yield
    timings[step] = round(time.perf_counter() - t, 2)


def evaluate_model(store: Store, model: str, cfg: EvalConfig, adapters: list[tuple[Path | None, Adapter]],
                   corpus: Corpus, store_queries: Queries, heldout: HeldOut | None,
                   bm25_cache: dict) -> ModelEvaluation:
    """Every system of one model on the same queries: rank, score, check HNSW, threshold accuracy, figures."""
    timings: dict[str, float] = {}
    with _timed(timings, "load"):
        info = store.model_info(model)
        dim = int(info["dim"])
        dump = chroma_store.fetch_all(store.raw_collection(model))
        pids, p_raw = dump.ids, l2_normalise(dump.embeddings)
        if set(pids) != set(corpus):
            raise StoreError(f"collection {info['collection']} holds {len(pids)} passages but the store's corpus has "
                             f"{len(corpus)} (or other ids); re-run ingest for {model}")
        scope = _scope(store, cfg, store_queries, heldout, bool(adapters))
        notes = list(scope.notes) if heldout is None else []
        qids = list(scope.queries)
        q, n_embedded = _query_vectors_for(store, model, dim, scope.queries, cfg, store_queries)
        if n_embedded:
            notes.append(f"{n_embedded} of the {len(qids)} queries were embedded now with {model} (not in the store).")

    with _timed(timings, "search"):
        systems = {"raw": _dense_system("raw", "raw", q, qids, p_raw, pids, l2_normalise,
                                        lambda x, _ids: l2_normalise(x))}
        adapted, adapter_notes = _adapter_systems(adapters, model, info, q, qids, p_raw, pids, set(systems))
        systems.update(adapted)
        notes += adapter_notes
    if cfg.mse_baseline:
        with _timed(timings, "mse_baseline"):
            mse = _mse_baseline(store, model, cfg, q, qids, p_raw, pids, notes)
            if mse is not None:
                systems["mse_baseline"] = mse
    if cfg.nudge:
        with _timed(timings, "nudge"):
            systems.update(_nudge_systems(store, model, q, qids, dump, p_raw, notes))
    if "finetune" in cfg.baselines:
        with _timed(timings, "finetune"):
            systems.update(_finetune_system(store, model, corpus, store_queries, scope, qids, pids, cfg, notes))
    if cfg.bm25:
        with _timed(timings, "bm25"):
            key = tuple(qids)
            if key not in bm25_cache:
                index = store.lexical_index()  # missing or damaged: a StoreError naming the command that builds it
                bm25_cache[key] = (index, index.search_queries(scope.queries, max(TOP_K, DEFAULT_N)))
            index, lexical = bm25_cache[key]
            systems["bm25"] = SystemRun(key="bm25", label="BM25 alone",
                                        results={q: dict(list(r.items())[:TOP_K]) for q, r in lexical.items()})
        with _timed(timings, "hybrid"):
            dense = [s for k, s in systems.items() if k == "raw" or k in adapted]
            systems.update(_hybrid_systems(dense, lexical, store, model, info, index, q, qids, pids, notes))

    with _timed(timings, "statistics"):
        raw_scores = _score(systems["raw"].results, scope.qrels, cfg)
        scores = {k: raw_scores if k == "raw" else _score(s.results, scope.qrels, cfg, raw_scores)
                  for k, s in systems.items()}
        vs_best_plain = _best_plain_comparison(systems, scores, cfg)
    with _timed(timings, "seen_unseen"):
        subset_sizes, by_subset = _subsets(store, scope, systems, scores, cfg)
    if heldout is not None:
        notes += scope.notes
    hnsw: dict[str, dict] = {}
    if cfg.hnsw:
        with _timed(timings, "hnsw"):
            hnsw = {k: _hnsw(store, s, model, q, qids, scope.qrels) for k, s in systems.items()
                    if s.dense and k != "mse_baseline" and k not in NUDGE_SYSTEMS}  # those have no collection
    with _timed(timings, "costs"):
        costs = _costs(systems, q, qids, scope.queries, len(pids), index if cfg.bm25 else None, store.lexical_dir)
    with _timed(timings, "threshold"):
        dev_pairs = store_pairs(store, model, "dev")
        if heldout is None:
            test_pairs = replace(dev_pairs, split="test")
        else:  # the held-out queries' own pairs, mined now as ingest mines the store's
            mining = MiningConfig(**(info.get("mining") or {}))
            test_pairs = heldout_pairs(qids, q, pids, p_raw, {p: corpus[p].text for p in pids}, scope.qrels, mining)
            notes.append(f"threshold accuracy: the threshold is chosen on the store's dev pairs and the accuracy "
                         f"measured on these held-out queries' own pairs, their negatives mined now from the raw "
                         f"ranking by ingest's rule ({mining.k_hard} hard, {mining.k_weak} weak per query).")
        thresholds = threshold_accuracies([s for s in systems.values() if s.dense], pids, dev_pairs, test_pairs)
    systems = {k: replace(s, **scores[k], hnsw=hnsw.get(k), threshold=thresholds.by_system.get(k, {}),
                          vs_best_plain=vs_best_plain.get(k, {}), by_subset=by_subset.get(k, {}), cost=costs.get(k, {}))
               for k, s in systems.items()}
    ev = ModelEvaluation(model=model, dim=dim, scope=scope.label, query_ids=qids, systems=systems,
                         notes=notes + thresholds.notes, pair_counts=thresholds.pair_counts,
                         subset_sizes=subset_sizes, seen_reason=_why_seen(subset_sizes, scope.split, store.split_policy()))
    if cfg.plots:
        with _timed(timings, "plots"):
            figures, files = _figures(ev, cfg, q, scope.qrels, scope.queries, corpus, pids, thresholds.hist)
            for key, png in _study_figures(model, info.get("data_fingerprint"), cfg, ev.notes).items():
                rel = str(Path("figures") / slug(model) / f"{key}.png")
                figures[key], files[rel] = rel, png
            ev = replace(ev, figures=figures, figure_files=files)
    return replace(ev, seconds=timings)


#: the fewest scored queries a report is made from: an interval and a paired test compare queries with each other
MIN_SCORED_QUERIES = 2


def _require_scored_split(scope: Scope, store: Store) -> None:
    """InputError (before anything is written) when the store's split has too few scored queries to report on."""
    n = len(scope.queries)
    if n < MIN_SCORED_QUERIES:
        raise InputError(f"the store's {scope.label} has {n} scored quer{'y' if n == 1 else 'ies'}; eval needs at "
                         f"least {MIN_SCORED_QUERIES} (intervals and paired tests compare queries). Ingest more "
                         f"questions, or give the split a larger share: embedfit ingest --store {store.root} --split "
                         f"0.6 0.2 0.2 ...")


def compute_eval(cfg: EvalConfig, store: Store | None = None,
                 adapters: list[tuple[Path | None, Adapter]] | None = None) -> EvalOutcome:
    """Evaluate every requested model, in memory: nothing is written (`EvalOutcome.write` writes the report).

    `store` and `adapters` (folder or None, adapter) default to `cfg.store` and the folders of `cfg.adapters`;
    the Python API passes adapters it holds in memory.
    """
    cfg.validate()
    t0 = time.perf_counter()
    store = store or Store(cfg.store, cfg.chroma_host, cfg.chroma_port, write=False)
    store.require()
    if adapters is None:
        adapters = [(Path(p), load_adapter(p)) for p in cfg.adapters]
    models = _models_to_run(store, cfg, adapters)
    corpus = store.load_corpus()
    store_queries = store.load_queries()
    heldout = None
    if cfg.heldout:
        heldout = load_heldout(cfg.queries, cfg.qrels, corpus, store_queries, store.load_splits())
        require_enough(heldout, cfg.min_queries, cfg.min_usable)
    else:
        _require_scored_split(_scope(store, cfg, store_queries, None, bool(adapters)), store)
    bm25_cache: dict = {}
    evaluations = []
    for model in models:
        log.info("evaluating %s (%s)", model, "held-out queries" if heldout else f"{cfg.split} split")
        mine = [(p, a) for p, a in adapters if a.config.base_model == model]
        evaluations.append(evaluate_model(store, model, cfg, mine, corpus, store_queries, heldout, bm25_cache))
    outcome = EvalOutcome(config=cfg, models=evaluations, seconds=time.perf_counter() - t0)
    if cfg.plots:
        outcome.figures = {"forest": FOREST_FIGURE}
        outcome.figure_files = {FOREST_FIGURE: plots.forest_png([forest_panel(ev) for ev in evaluations], PRIMARY_METRIC)}
    return outcome


def run_eval(cfg: EvalConfig) -> Evaluation:
    """`embedfit eval`: refuse a wrong `cfg.out` first (before the work), then `evaluate`, then write the report."""
    cfg.validate()
    check_output(cfg.out, REPORT_OUTPUT, cfg.force)
    ev = evaluate(cfg.store, cfg.adapters, config=cfg)
    ev.write(cfg.out, force=cfg.force)
    return ev


# -- the Python API -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Evaluation:
    """What `evaluate` computed, in memory: every system's scores, intervals, paired tests, seen/unseen split and
    figures. Nothing is on disk until `write`.

    Attributes:
        outcome: the full result (`embedfit.evaluation.results.EvalOutcome`): `.models[i].systems[key]` holds each
            system's per-query scores, means, 95% intervals and its paired comparison with raw.
    """

    outcome: EvalOutcome

    @property
    def metrics(self) -> dict:
        """The `metrics.json` object: the contract other tools read."""
        return report.metrics_json(self.outcome)

    def summary(self) -> str:
        """Per model: every system's metrics and change against raw, the best system and the steps to it, and
        the seen / unseen split (markdown)."""
        return "\n\n".join("\n".join([report.main_table(ev), "", report.best_and_steps(ev),
                                       *report.seen_unseen_table(ev)]) for ev in self.outcome.models)

    def report(self) -> str:
        """The whole `report.md` text (its figure links resolve once `write` has put the figures beside it)."""
        return report.report_md(self.outcome)

    def write(self, out: str | Path, force: bool = False) -> Path:
        """Write metrics.json, details.json, report.md, report.html and figures/ into `out`; returns `out`.

        Raises:
            OutputError: `out` exists and is not an eval report of ours (and not `force`), or must never be one.
        """
        out = check_output(out, REPORT_OUTPUT, force)
        report.write_reports(self.outcome, out)
        return out


def evaluate(store: str | Path | Store, adapters: Sequence[Adapter | str | Path] = (), *,
             config: EvalConfig | None = None, **options) -> Evaluation:
    """Score the raw embeddings, each adapter, and the baselines (BM25, raw + BM25, the MSE cookbook adapter) on
    the same held-out queries: means with 95% bootstrap intervals, paired tests against raw, seen and unseen
    queries apart, threshold accuracy, HNSW check and figures. Computes only: `Evaluation.write` writes.

    Args:
        store: the store folder (or a `Store`).
        adapters: adapters (`Adapter` objects, e.g. `fit(...).adapter`, or adapter folders); each is scored with
            the model it was trained on. The first of a model is "adapted" in the metrics.
        config: an `EvalConfig` to start from; `options` override its fields.
        **options: any `EvalConfig` field, e.g. `split="dev"`, `models=["all-MiniLM-L6-v2"]`, `bm25=False`,
            `mse_baseline=False`, `plots=False`, `queries=..., qrels=...` (held-out BEIR files).

    Returns:
        An `Evaluation`: `.summary()`, `.metrics`, `.write(folder)`.

    Raises:
        StoreError: no store or no embeddings. MismatchError: an adapter of another model or data.
        InputError: a bad option, or fewer than 2 scored queries.

    Example:
        >>> ev = ef.evaluate(".data/scifact", [result.adapter])   # doctest: +SKIP
        >>> print(ev.summary()); ev.write("report/")              # doctest: +SKIP
    """
    base = with_options(config or EvalConfig(), options, {"store", "adapters", "out", "force"}, "evaluate")
    st = store if isinstance(store, Store) else Store(Path(store), base.chroma_host, base.chroma_port)
    loaded = [(None, a) if isinstance(a, Adapter) else (Path(a), load_adapter(a)) for a in adapters]
    cfg = replace(base, store=st.root, adapters=[p for p, _ in loaded if p is not None])
    return Evaluation(compute_eval(cfg, st, loaded))
