"""The eval run: every system on the same queries, with intervals, significance, HNSW check and plots.

For each model (every model in the store unless `--model` narrows it):

1. the queries: the store's test split, or the held-out `--queries/--qrels` files (`eval.heldout`);
2. the systems, all ranked by *exact* search over the stored vectors (`core.exact_search`):
   `raw` (the model's embeddings), each given adapter (`adapted`, then `adapted:<name>`), the OpenAI
   cookbook MSE matrix trained here on the store's train split (`mse_baseline`), and BM25 (`bm25`);
3. per-query metrics by pytrec_eval (`core.metrics`), BCa bootstrap intervals and paired permutation
   p-values against raw (`eval.stats`);
4. what Chroma's HNSW index returns for raw and each adapter, and its recall@10 against exact search;
5. threshold accuracy on (query, positive) vs (query, weak / hard negative) pairs: threshold chosen
   on the dev split, accuracy on the test split (`eval.threshold`);
6. the figures (`eval.plots`), then `metrics.json`, `details.json` and `report.md` (`eval.report`).

Nothing here computes a metric itself: it only wires the tested pure functions together.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adapter.adapter import Adapter
from adapter.io import check_compatible, load_adapter, weights_sha
from core import chroma_store, query_vectors
from core.embedding.base import l2_normalise
from core.errors import MismatchError, ProjectError, StoreError
from core.exact_search import exact_search
from core.metrics import per_query_metrics, recall_at_k_curve
from core.outputs import check_output
from core.store import Store
from core.types import Corpus, Qrels, Queries, slug
from eval import plots, report
from eval.config import CI_METRICS, K_VALUES, METRICS, REPORT_OUTPUT, EvalConfig
from eval.heldout import HeldOut, load_heldout, require_enough
from eval.results import EvalOutcome, ModelEvaluation, SystemRun
from eval.stats import bootstrap_ci, paired_p_value
from eval.threshold import best_threshold, threshold_accuracy
from search.chroma_ann import chroma_search, recall_against_exact
from search.lexical import bm25_search

log = logging.getLogger(__name__)

TOP_K = max(K_VALUES)
#: metrics whose change against raw gets a paired interval and p-value in the report
DELTA_METRICS = ("MRR@10", "nDCG@10", "Recall@10", "Recall@100")
RECALL_CURVE_KS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100)
PAIR_KINDS = ("weak", "hard")


# -- inputs ------------------------------------------------------------------------------------------

def _models_to_run(store: Store, cfg: EvalConfig, adapters: list[tuple[Path, Adapter]]) -> list[str]:
    manifest = store.require()
    if cfg.models:
        for m in cfg.models:
            store.require(m)
        models = list(cfg.models)
    else:
        models = sorted(manifest.get("models", {}))
        if not models:
            raise StoreError(f"the store at {store.root} holds no model yet; run python -m ingest first")
    for path, ad in adapters:
        if ad.config.base_model not in models:
            hint = (f"add --model {ad.config.base_model}" if ad.config.base_model in manifest.get("models", {})
                    else f"the store has no {ad.config.base_model!r} embeddings")
            raise MismatchError(f"adapter {path} was trained on {ad.config.base_model!r}, which is not among the "
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
        from core.embedding import EmbeddingCache, embed_cached, load_embedder

        embedder = load_embedder(model)
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
                  project_q: Callable[[np.ndarray], np.ndarray], project_p: Callable[[np.ndarray], np.ndarray],
                  **extra) -> SystemRun:
    t0 = time.perf_counter()
    passages = project_p(p_raw)
    results = exact_search(project_q(q), qids, passages, pids, k=TOP_K)
    log.info("%s: exact search of %d queries over %d passages in %.1fs", key, len(qids), len(pids), time.perf_counter() - t0)
    return SystemRun(key=key, label=label, results=results, project_queries=project_q, passages=passages, **extra)


def _adapter_label(adapter: Adapter) -> str:
    c = adapter.config
    if c.identity:
        return f"adapter {c.name} (identity: nothing beat raw on dev)"
    return f"adapter {c.name} ({c.kind}, {c.loss}, sides={c.sides})"


def _mse_baseline(store: Store, model: str, cfg: EvalConfig, q: np.ndarray, qids: list[str], p_raw: np.ndarray,
                  pids: list[str], notes: list[str]) -> SystemRun | None:
    """The OpenAI-cookbook objective (cosine MSE against ±1, one matrix on both sides), trained here."""
    try:
        from adapter.config import TrainConfig
        from adapter.train import train_adapter
    except ImportError as exc:  # the training module is part of this repository; say so if it is missing
        notes.append(f"MSE cookbook baseline skipped: adapter training is not available ({exc}).")
        log.warning("MSE baseline skipped: %s", exc)
        return None
    tcfg = TrainConfig(store=store.root, model=model, kind="linear", sides="both", loss="mse",
                       epochs=cfg.mse_epochs, keep_identity_candidate=False, selection="last",
                       name=f"{slug(model)}-mse-cookbook",
                       chroma_host=cfg.chroma_host, chroma_port=cfg.chroma_port)
    try:
        res = train_adapter(store, tcfg)
    except ProjectError as exc:
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


# -- statistics ------------------------------------------------------------------------------------

def _score(system: SystemRun, qrels: Qrels, raw: SystemRun | None, cfg: EvalConfig) -> None:
    system.per_query = per_query_metrics(qrels, system.results, K_VALUES)
    system.means = {m: float(np.mean(list(system.per_query[m].values()))) for m in METRICS}
    for m in CI_METRICS:
        system.ci95[m] = bootstrap_ci(list(system.per_query[m].values()), n_resamples=cfg.bootstrap_resamples, seed=cfg.seed)
    if raw is None or raw is system:
        return
    for m in DELTA_METRICS:
        a, b = system.per_query[m], raw.per_query[m]
        diff = [a[q] - b[q] for q in b]
        system.vs_raw[m] = {
            "delta": system.means[m] - raw.means[m],
            "ci95": bootstrap_ci(diff, n_resamples=cfg.bootstrap_resamples, seed=cfg.seed),
            "p": paired_p_value(a, b, n_resamples=cfg.bootstrap_resamples, seed=cfg.seed),
        }


def _hnsw(store: Store, system: SystemRun, model: str, q: np.ndarray, qids: list[str], qrels: Qrels) -> dict:
    """Query the collection the app would query for this system (see search.chroma_ann)."""
    ad = system.adapter
    if ad is not None and ad.config.sides == "both":
        name = ad.collection_name
        col = chroma_store.get_collection(store.client, name)
        if col is None:
            return {"skipped": f"collection {name!r} not found: project the adapter into Chroma first "
                               f"(python -m adapter project --store STORE --adapter {system.adapter_dir})"}
        have = (col.metadata or {})
        sha = weights_sha(system.adapter_dir) if system.adapter_dir else None
        for k in ("weights_sha", "adapter_sha"):
            if k in have and sha and have[k] != sha:
                return {"skipped": f"collection {name!r} holds another version of this adapter ({k} {have[k]} != {sha}); "
                                   "re-project it"}
        if col.count() != len(system.passages):
            return {"skipped": f"collection {name!r} holds {col.count()} vectors, the store {len(system.passages)}; re-project"}
    else:
        col = store.raw_collection(model)
    approx = chroma_search(col, system.project_queries(q), qids, k=TOP_K)
    metrics = per_query_metrics(qrels, approx, K_VALUES)
    return {
        "collection": col.name,
        "metrics": {m: float(np.mean(list(metrics[m].values()))) for m in METRICS},
        "recall@10_vs_exact": recall_against_exact(approx, system.results, k=10),
    }


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


def _threshold_all(systems: list[SystemRun], store: Store, model: str, pids: list[str],
                   ev: ModelEvaluation) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Fill `system.threshold` for every dense system; returns test-split score arrays for the histograms."""
    examples = store.load_examples(model)
    ids, raw_q = query_vectors.load(store.root, model)
    qrow = {q: i for i, q in enumerate(ids)}
    prow = {p: i for i, p in enumerate(pids)}
    hist: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for kind in PAIR_KINDS:
        dev, test = (_pairs(examples, qrow, prow, s, kind, balanced=True) for s in ("dev", "test"))
        every = _pairs(examples, qrow, prow, "test", kind, balanced=False)
        ev.pair_counts[kind] = {"dev_pos": len(dev.pos_q), "dev_neg": len(dev.neg_q),
                                "test_pos": len(test.pos_q), "test_neg": len(test.neg_q)}
        if min(len(dev.pos_q), len(dev.neg_q), len(test.pos_q), len(test.neg_q)) == 0:
            ev.notes.append(f"threshold accuracy ({kind}): not enough dev/test pairs in the store ({ev.pair_counts[kind]}).")
            continue
        for s in systems:
            Q = s.project_queries(raw_q)
            P = s.passages
            dev_pos, dev_neg = _pair_scores(Q, P, dev.pos_q, dev.pos_p), _pair_scores(Q, P, dev.neg_q, dev.neg_p)
            t = best_threshold(dev_pos, dev_neg)  # chosen on dev ...
            dev_acc, _ = threshold_accuracy(dev_pos, dev_neg, t)
            acc, se = threshold_accuracy(_pair_scores(Q, P, test.pos_q, test.pos_p),  # ... reported on test
                                         _pair_scores(Q, P, test.neg_q, test.neg_p), t)
            s.threshold[kind] = {"threshold": t, "accuracy": acc, "se": se, "dev_accuracy": dev_acc,
                                 "n_pos": len(test.pos_q), "n_neg": len(test.neg_q)}
            hist.setdefault(s.key, {})[kind] = (_pair_scores(Q, P, every.pos_q, every.pos_p),
                                                _pair_scores(Q, P, every.neg_q, every.neg_p))
    return hist


# -- figures -----------------------------------------------------------------------------------------

def _figures(ev: ModelEvaluation, cfg: EvalConfig, q: np.ndarray, qids: list[str], qrels: Qrels,
             queries: Queries, corpus: Corpus, pids: list[str], hist: dict) -> None:
    rel = Path("figures") / slug(ev.model)
    folder = cfg.out / rel
    folder.mkdir(parents=True, exist_ok=True)
    dense = [s for s in ev.systems.values() if s.dense]

    rows = [(s.label, {k: (*hist[s.key][k], s.threshold.get(k, {}).get("threshold"), s.threshold.get(k, {}).get("accuracy"))
                       for k in PAIR_KINDS if k in hist.get(s.key, {})}) for s in dense if s.key in hist]
    if rows:
        plots.similarity_histograms(folder / "similarity_hist.png", rows, title=f"{ev.model}: cosine of test pairs")
        ev.figures["similarity_hist"] = str(rel / "similarity_hist.png")

    curves = {s.label: recall_at_k_curve(qrels, s.results, RECALL_CURVE_KS) for s in ev.systems.values()}
    plots.recall_curves(folder / "recall_at_k.png", curves, title=f"{ev.model}: Recall@k, {ev.scope}")
    ev.figures["recall_at_k"] = str(rel / "recall_at_k.png")

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
        plots.latent_space(
            folder / "latent_space.png", folder / "latent_space.html", spaces, lines,
            n_positive=len(pos_rows),
            query_text=[queries[qids[i]] for i in sample],
            passage_text=[f"{corpus[pids[r]].title}: {corpus[pids[r]].text[:120]}" for r in p_rows],
            title=f"{ev.model}: {n} queries, their positives and {len(extra)} random passages (PCA 2-D)")
        ev.figures["latent_space"] = str(rel / "latent_space.png")
        ev.figures["latent_space_html"] = str(rel / "latent_space.html")

    for s in ev.systems.values():
        if s.curves:
            name = f"training_{slug(s.key)}.png"
            metric = (s.adapter.config.dev_metrics or {}).get("metric", "MRR@10") if s.adapter is not None else "MRR@10"
            plots.training_curves(folder / name, s.curves, metric, title=f"{ev.model}: training curves of {s.label}")
            ev.figures[f"training:{s.key}"] = str(rel / name)


# -- the run -----------------------------------------------------------------------------------------

def evaluate_model(store: Store, model: str, cfg: EvalConfig, adapters: list[tuple[Path, Adapter]],
                   corpus: Corpus, store_queries: Queries, heldout: HeldOut | None,
                   bm25_cache: dict) -> ModelEvaluation:
    timings: dict[str, float] = {}
    t = time.perf_counter()
    info = store.model_info(model)
    dim = int(info["dim"])
    dump = chroma_store.fetch_all(store.raw_collection(model))
    pids, p_raw = dump.ids, l2_normalise(dump.embeddings)
    if set(pids) != set(corpus):
        raise StoreError(f"collection {info['collection']} holds {len(pids)} passages but the store's corpus has "
                         f"{len(corpus)} (or other ids); re-run ingest for {model}")
    notes: list[str] = []
    if heldout is not None:
        queries, qrels = heldout.queries, heldout.qrels
        scope = f"held-out queries from {cfg.queries}"
    else:
        all_qrels = store.load_qrels()
        qids_split = [q for q in store.split_query_ids(cfg.split) if q in all_qrels and q in store_queries]
        queries = {q: store_queries[q] for q in qids_split}
        qrels = {q: all_qrels[q] for q in qids_split}
        scope = f"{cfg.split} split"
        if cfg.split == "dev" and adapters:
            notes.append("these are dev-split numbers: training selected each adapter's epoch (and the MSE baseline's) "
                         "on this very split, so their gains are optimistic; the test split is the honest score.")
    qids = list(queries)
    q, n_embedded = _query_vectors_for(store, model, dim, queries, cfg, store_queries)
    if n_embedded:
        notes.append(f"{n_embedded} of the {len(qids)} queries were embedded now with {model} (not in the store).")
    timings["load"] = time.perf_counter() - t

    systems: dict[str, SystemRun] = {}
    t = time.perf_counter()
    systems["raw"] = _dense_system("raw", f"raw {model}", q, qids, p_raw, pids, l2_normalise, l2_normalise)
    for i, (path, ad) in enumerate(adapters):
        check_compatible(ad, model, dim, info.get("data_fingerprint"))
        if ad.config.data_fingerprint != info.get("data_fingerprint"):
            notes.append(f"adapter {ad.name} was trained on other data ({ad.config.data_fingerprint}) than this store "
                         f"holds ({info.get('data_fingerprint')}): its test queries may include its training queries.")
        if ad.config.identity:
            notes.append(f"adapter {ad.name} is the identity: training found nothing better than the raw embeddings "
                         "on dev, so its rows equal raw by construction.")
        key = _adapter_key(i, ad, set(systems))
        curves = plots.read_curves(path)
        systems[key] = _dense_system(key, _adapter_label(ad), q, qids, p_raw, pids, ad.project_queries,
                                     ad.project_passages, adapter=ad, adapter_dir=str(path), curves=curves)
    timings["search"] = time.perf_counter() - t

    if cfg.mse_baseline:
        t = time.perf_counter()
        mse = _mse_baseline(store, model, cfg, q, qids, p_raw, pids, notes)
        if mse is not None:
            systems["mse_baseline"] = mse
        timings["mse_baseline"] = time.perf_counter() - t
    if cfg.bm25:
        t = time.perf_counter()
        key = tuple(qids)
        if key not in bm25_cache:
            bm25_cache[key] = bm25_search(corpus, queries, k=TOP_K)
        systems["bm25"] = SystemRun(key="bm25", label="BM25 (bm25s)", results=bm25_cache[key])
        timings["bm25"] = time.perf_counter() - t

    t = time.perf_counter()
    raw = systems["raw"]
    _score(raw, qrels, None, cfg)
    for s in systems.values():
        if s is not raw:
            _score(s, qrels, raw, cfg)
    timings["statistics"] = time.perf_counter() - t

    ev = ModelEvaluation(model=model, dim=dim, scope=scope, query_ids=qids, systems=systems, notes=notes)
    if heldout is not None:
        for split, ids in heldout.overlap.items():
            ev.notes.append(f"{len(ids)} of the given queries are also in the store's {split} split (by id or text): "
                            f"the adapter was {'trained' if split == 'train' else 'selected'} on them, so they are not held out.")
        if heldout.skipped:
            ev.notes.append("left out of the given files: " + ", ".join(f"{k} {v}" for k, v in sorted(heldout.skipped.items())) + ".")

    if cfg.hnsw:
        t = time.perf_counter()
        for s in systems.values():
            if s.dense and s.key != "mse_baseline":
                s.hnsw = _hnsw(store, s, model, q, qids, qrels)
        timings["hnsw"] = time.perf_counter() - t

    t = time.perf_counter()
    hist = _threshold_all([s for s in systems.values() if s.dense], store, model, pids, ev)
    timings["threshold"] = time.perf_counter() - t

    if cfg.plots:
        t = time.perf_counter()
        _figures(ev, cfg, q, qids, qrels, queries, corpus, pids, hist)
        timings["plots"] = time.perf_counter() - t
    ev.seconds = {k: round(v, 2) for k, v in timings.items()}
    return ev


def run_eval(cfg: EvalConfig) -> EvalOutcome:
    """Evaluate every requested model and write the report files into `cfg.out`."""
    cfg.validate()
    check_output(cfg.out, REPORT_OUTPUT, cfg.force)  # refuse a wrong --out before the work, not after it
    t0 = time.perf_counter()
    store = Store(cfg.store, cfg.chroma_host, cfg.chroma_port, write=False)
    store.require()
    adapters = [(Path(p), load_adapter(p)) for p in cfg.adapters]
    models = _models_to_run(store, cfg, adapters)
    corpus = store.load_corpus()
    store_queries = store.load_queries()
    heldout = None
    if cfg.heldout:
        heldout = load_heldout(cfg.queries, cfg.qrels, corpus, store_queries, store.load_splits())
        require_enough(heldout, cfg.min_queries, cfg.min_usable)
    cfg.out.mkdir(parents=True, exist_ok=True)
    bm25_cache: dict = {}
    evaluations = []
    for model in models:
        log.info("evaluating %s (%s)", model, "held-out queries" if heldout else f"{cfg.split} split")
        mine = [(p, a) for p, a in adapters if a.config.base_model == model]
        evaluations.append(evaluate_model(store, model, cfg, mine, corpus, store_queries, heldout, bm25_cache))
    outcome = EvalOutcome(config=cfg, models=evaluations, out=cfg.out, seconds=time.perf_counter() - t0)
    report.write_reports(outcome)
    return outcome
