"""Choosing the customization on the data at hand: a small grid scored on held-out labelled queries.

The candidates, all on the frozen vectors (no re-embedding):

- `identity`: the raw embeddings. Always a candidate, and it wins ties: selection never returns something
  that scored worse than raw on the queries that decided.
- `memory`: the query memory alone (`embedfit.adapters.memory`: passages move toward the training queries they
  answer), for each alpha of the grid.
- `query`: a linear query-side adapter trained with InfoNCE, for each candidate set (`mined`: the batch's
  positives + mined hard negatives; `corpus`: a softmax over every passage), temperature and epoch count.
- `query+memory`: that adapter, with the memory built from the *adapted* training queries.
- `nudge`: NUDGE-N (`embedfit.adapters.nudge`, ICLR 2025), the published passage-side method closest to the
  memory, for each gamma of the grid (the table's alpha column); a chosen one ships as a query memory (its moved
  passages, alpha 1), so the store, the page and every export apply it as they apply ours.
- `query+nudge`: the query adapter with NUDGE-N's bounded move computed on the *adapted* queries. Tried in a second
  stage, at the best epochs of an adapter + memory family that gains overall but costs unseen queries: the memory
  moves every answered passage by alpha, NUDGE-N bounds each move, and the bound is what protects new queries.
  The same stage tries the *centred* memory (`memory.centre_memory`: no move along the mean training query, which
  brings a moved passage closer to every new query too) at every alpha, for the memory alone and with the adapter.
  (The margin-bounded memory, `memory.sufficient_moves`, is tried there too when `--margins` are given.)

With `--select-by fused` every candidate is also scored fused with BM25, and each adapter family is trained a
second time *through* the fused score (`TrainConfig.lexical_priors`: BM25's normalised score added to the InfoNCE
logits), so an adapter can learn what BM25 misses rather than what it already finds; those rows say "through BM25".

Small data makes one dev split noisy (a few dozen queries decide), so with up to `AUTO_FOLDS_UP_TO`
labelled queries selection cross-validates: train+dev are cut into k folds, every candidate is trained on
k-1 and scored on the one left out, and the mean over folds decides; the chosen setting is then fitted on all
of train+dev. With more labelled queries the dev split alone decides (as `embedfit.adapters.train` does) and the
adapter is fitted on train only. Either way the output says how many queries decided.

The guard: the held-out queries of each fold are also scored apart on the *unseen* ones (about documents the
fold's training queries never pointed at, `embedfit.metrics.seen`). A setting whose mean there falls more than
`unseen_tolerance` below the identity's is refused, however much it gains overall: moving passages toward old
queries must not buy repeat questions at the price of new ones. The table shows the refused best beside the
allowed one.

Epochs cost nothing extra to select: every epoch of a training run is scored, and a run stops once `patience`
epochs have passed without a better mean (for the adapter alone or with the memory), or at `max_epochs`. On the
NQ demo store the best epochs were 1 to 4 of a fixed 15 (then 30) epoch schedule: stopping early halved the time
selection spends training there (measured in `make bench`).
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embedfit.adapters.adapter import Adapter, AdapterConfig, PassageMemory
from embedfit.adapters.config import TrainConfig
from embedfit.adapters.data import SplitData, TrainingData, load_training_data
from embedfit.adapters.memory import apply_memory, centre_memory, query_memory, sufficient_moves
from embedfit.adapters.nudge import nudge_embeddings
from embedfit.adapters.train import (
    TrainResult,
    flush_denormals,
    fuse_with_store_bm25,
    initial_module,
    lexical_side,
    run_epochs,
    torch_threads,
)
from embedfit.metrics.retrieval import per_query_metrics, ranking_binary_metrics, top_rows
from embedfit.metrics.seen import seen_unseen, trained_passages
from embedfit.progress import progress
from embedfit.retrieval.exact import exact_search
from embedfit.retrieval.fusion import (
    DEFAULT_N,
    WEIGHTS,
    LexicalPrior,
    LexicalTopN,
    PreparedLexical,
    fused_rankings,
    prepare_lexical,
)
from embedfit.settings import K_VALUES, TOP_K
from embedfit.store.store import Store
from embedfit.types import Results, slug

log = logging.getLogger(__name__)

#: labelled queries (train + dev) up to which selection cross-validates instead of trusting one dev split
AUTO_FOLDS_UP_TO = 3000
DEFAULT_FOLDS = 5
METHODS = ("identity", "memory", "query", "query+memory", "nudge", "query+nudge")
#: prefix of the per-fold metrics computed over the held-out queries about new documents only
UNSEEN = "unseen:"
#: prefix of a point's metric after z-score fusion with BM25 at one weight ("fused0.3:MRR@10")
FUSED = "fused"
#: the metrics a fused ranking (its top 10) can give, so the ones fused selection can decide by
FUSED_METRICS = ("Recall@1", "Recall@5", "Recall@10", "MRR@10", "nDCG@10")


@dataclass(frozen=True)
class Point:
    """One candidate setting."""
    method: str
    candidates: str | None = None
    temperature: float | None = None
    epochs: int | None = None
    alpha: float | None = None
    #: a bounded memory (`embedfit.adapters.memory.sufficient_moves`): each passage moves only as far as its own
    #: training queries need to prefer it by this margin
    margin: float | None = None
    #: a centred memory (`embedfit.adapters.memory.centre_memory`): no move along the mean training query
    centred: bool | None = None
    #: the adapter was trained through the fused score, BM25 at this weight in its logits (`TrainConfig.lexical_prior`)
    prior: float | None = None

    @property
    def family(self) -> tuple:
        """The table's row: the setting without its epoch count and alpha (those are chosen within it); a centred
        memory, and an adapter trained through the fused score, are rows of their own."""
        return ((self.method, self.candidates, self.temperature) + (("centred",) if self.centred else ())
                + (("prior", self.prior) if self.prior else ()))

    def to_json(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class Selection:
    """What selection measured: every point's metrics on each fold, and what it chose."""
    metric: str
    folds: int
    decided_by: int  # labelled queries whose scores decided (all of train+dev with folds, else dev)
    #: a point may lose at most this much of the metric on the held-out queries about new documents (None: no
    #: guard); `TrainConfig.unseen_tolerance` holds the default
    unseen_tolerance: float | None
    scores: dict[Point, list[dict[str, float]]] = field(default_factory=dict)
    losses: dict[tuple, dict[int, list[float]]] = field(default_factory=dict)
    seconds: float = 0.0
    #: what decides: "dense" (the customization's own ranking) or "fused" (the customization + BM25, at the fusion
    #: weight best for it: what is served when BM25 fusion pays)
    served: str = "dense"

    def mean(self, point: Point, metric: str | None = None) -> float:
        """Mean over folds (NaN-free: a fold without any unseen query does not count for the unseen mean)."""
        vals = [m[metric or self.metric] for m in self.scores[point]]
        vals = [v for v in vals if not np.isnan(v)]
        return float(np.mean(vals)) if vals else float("nan")

    def mean_metrics(self, point: Point) -> dict[str, float]:
        """The dense ranking's mean metrics (what a config's dev_metrics records)."""
        return {k: self.mean(point, k) for k in self.scores[point][0]
                if not k.startswith(UNSEEN) and not k.startswith(FUSED)}

    def has_fused(self) -> bool:
        return any(k.startswith(FUSED) for k in self.scores[Point("identity")][0])

    def fused_weight(self, point: Point) -> float:
        """The BM25 weight at which the point's fused mean is best (the smaller weight wins a tie; 0 = dense)."""
        return max(WEIGHTS, key=lambda w: (round(self.mean(point, f"{FUSED}{w}:{self.metric}"), 12), -w))

    def value(self, point: Point, served: str | None = None) -> float:
        """The mean metric that decides: the dense one, or the fused one at the point's best weight."""
        if (served or self.served) == "fused":
            return self.mean(point, f"{FUSED}{self.fused_weight(point)}:{self.metric}")
        return self.mean(point)

    def unseen_change(self, point: Point, served: str | None = None) -> float:
        """The point's mean change of the deciding metric on unseen held-out queries, against identity (NaN: none);
        fused: each at its own best weight."""
        if (served or self.served) == "fused":
            def unseen(p: Point) -> float:
                return self.mean(p, f"{UNSEEN}{FUSED}{self.fused_weight(p)}:{self.metric}")
            return unseen(point) - unseen(Point("identity"))
        return self.mean(point, UNSEEN + self.metric) - self.mean(Point("identity"), UNSEEN + self.metric)

    def guarded(self, point: Point, served: str | None = None) -> bool:
        """True when the point loses more than the tolerance on queries about new documents."""
        change = self.unseen_change(point, served)
        return self.unseen_tolerance is not None and not np.isnan(change) and change < -self.unseen_tolerance

    def best(self, points=None, guard: bool = True, served: str | None = None, every_family: bool = False) -> Point:
        """The best deciding mean over complete points (scored on every fold) that do not lose more than the
        tolerance on unseen queries; the first listed wins ties, and identity (never guarded) is listed first. When
        the dense ranking decides, an adapter trained through the fused score is not a candidate: it is meant to be
        served with BM25, and it is the fused metric that can judge it (`every_family`: it is, for the table and
        for early stopping, which follow every family)."""
        best, score = None, -np.inf
        dense = (served or self.served) == "dense" and not every_family
        for p in points if points is not None else self.scores:
            if len(self.scores[p]) != self.folds or (guard and self.guarded(p, served)) or (dense and p.prior):
                continue
            if self.value(p, served) > score + 1e-12:
                best, score = p, self.value(p, served)
        return best

    def decide_served(self) -> None:
        """Fused when fusion pays: the best fused point beats the best dense point's dense mean, at a BM25 weight
        above 0. Otherwise the dense choice stands (and what is served is the customization alone)."""
        if not self.has_fused():
            self.served = "dense"
            return
        dense, fused = self.best(served="dense"), self.best(served="fused")
        pays = fused is not None and dense is not None and self.fused_weight(fused) > 0 \
            and self.value(fused, "fused") > self.value(dense, "dense") + 1e-12
        self.served = "fused" if pays else "dense"

    def table(self) -> list[dict]:
        """One row per family (`Point.family`): its best epochs/alpha, mean, spread, gain (of the deciding metric:
        fused rows also give the dense mean and their BM25 weight)."""
        identity = self.value(Point("identity"))
        rows = []
        for fam in dict.fromkeys(p.family for p in self.scores):
            mine = [p for p in self.scores if p.family == fam]
            best = self.best(mine, every_family=True)
            unguarded = self.best(mine, guard=False, every_family=True)
            if unguarded is None:
                continue
            for p, guarded in ((best, False), (unguarded, True)):
                if p is None or (guarded and p == best):
                    continue
                key = self.metric if self.served == "dense" else f"{FUSED}{self.fused_weight(p)}:{self.metric}"
                per_fold = [m[key] for m in self.scores[p]]
                rows.append({**p.to_json(), "mean": round(float(np.mean(per_fold)), 4),
                             "sd": round(float(np.std(per_fold)), 4), "gain": round(float(np.mean(per_fold)) - identity, 4),
                             "unseen_change": round(self.unseen_change(p), 4), "guarded": guarded,
                             **({"dense_mean": round(self.mean(p), 4), "bm25_weight": self.fused_weight(p)}
                                if self.served == "fused" else {})})
        return rows

    def points(self) -> list[dict]:
        """Every point scored on every fold: its setting, mean metric and whether the unseen guard refused it
        (the report's "selection at a glance" figure draws them all)."""
        return [{**p.to_json(), "mean": round(self.value(p), 4), "refused": bool(self.guarded(p))}
                for p, folds in self.scores.items() if len(folds) == self.folds]


def table_markdown(sel: Selection, chosen: Point) -> str:
    who = (f"{sel.folds}-fold cross-validation over {sel.decided_by} labelled queries (train + dev)" if sel.folds > 1
           else f"the dev split ({sel.decided_by} queries)")
    tol = (f"; a setting that loses more than {sel.unseen_tolerance:.3f} on the held-out queries about new "
           "documents (unseen) is refused (marked *refused*, beside the best allowed one)" if sel.unseen_tolerance is not None else "")
    served = ("; the setting + BM25 decides (z-score fusion at each row's best BM25 weight, in brackets: what is "
              "served, because fusion paid on these queries), its dense mean beside it" if sel.served == "fused" else "")
    head = (f"dev {sel.metric}, decided by {who}; each row shows its best epochs / alpha (for nudge: NUDGE-N's "
            f"gamma){tol}{served}\n\n"
            f"| method | candidates | temperature | epochs | alpha | mean {sel.metric} | sd over folds | vs identity | "
            "unseen vs identity |\n|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in sel.table():
        mark = " **chosen**" if Point(**{f.name: r.get(f.name) for f in dataclasses.fields(Point)}) == chosen else ""
        mark += " *refused*" if r["guarded"] else ""
        mark += " *not a candidate: fusion did not pay*" if r.get("prior") and sel.served == "dense" else ""
        unseen = "" if np.isnan(r["unseen_change"]) else f"{r['unseen_change']:+.4f}"
        sd = f"{r['sd']:.4f}" if sel.folds > 1 else "–"
        mean = (f"{r['mean']:.4f} (w {r['bm25_weight']:g}; dense {r['dense_mean']:.4f})" if "bm25_weight" in r
                else f"{r['mean']:.4f}")
        through = f", through BM25 {r['prior']:g}" if r.get("prior") else ""
        lines.append(f"| {r['method']}{mark} | {r.get('candidates', '')}{through} | {r.get('temperature', '')} | "
                     f"{r.get('epochs', '')} | {r.get('alpha', '')}"
                     f"{f' bounded, margin {m:g}' if (m := r.get('margin')) is not None else ''}"
                     f"{' centred' if r.get('centred') else ''} | {mean} | {sd} | "
                     f"{r['gain']:+.4f} | "
                     f"{unseen} |")
    return "\n".join(lines)


# -- data: folds over the labelled queries -------------------------------------------------------------

def concat_splits(a: SplitData, b: SplitData) -> SplitData:
    return SplitData(query_ids=a.query_ids + b.query_ids, Q=np.concatenate([a.Q, b.Q]),
                     positives=a.positives + b.positives, hard=a.hard + b.hard, weak=a.weak + b.weak,
                     qrels={**a.qrels, **b.qrels})


def subset_split(s: SplitData, rows: np.ndarray) -> SplitData:
    ids = [s.query_ids[i] for i in rows]
    return SplitData(query_ids=ids, Q=s.Q[rows], positives=[s.positives[i] for i in rows],
                     hard=[s.hard[i] for i in rows], weak=[s.weak[i] for i in rows],
                     qrels={q: s.qrels[q] for q in ids})


def fold_rows(n: int, k: int, seed: int) -> list[np.ndarray]:
    """k disjoint, seeded, near-equal sets of rows covering range(n)."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, k)]


def folds_of(data: TrainingData, k: int, seed: int) -> list[TrainingData]:
    """k copies of `data` whose dev is one fold of train+dev and whose train is the rest (k=1: `data` itself)."""
    if k == 1:
        return [data]
    pool = concat_splits(data.train, data.dev)
    out = []
    for held in fold_rows(len(pool.query_ids), k, seed):
        rest = np.setdiff1d(np.arange(len(pool.query_ids)), held)
        out.append(dataclasses.replace(data, train=subset_split(pool, rest), dev=subset_split(pool, held)))
    return out


def auto_folds(data: TrainingData, folds: int | None) -> int:
    if folds:
        return folds
    n = len(data.train.query_ids) + len(data.dev.query_ids)
    return DEFAULT_FOLDS if n <= AUTO_FOLDS_UP_TO else 1


# -- scoring ------------------------------------------------------------------------------------------

def _adapt(module: nn.Module | None, Q: np.ndarray) -> np.ndarray:
    if module is None:
        return Q
    with torch.no_grad():
        return F.normalize(module(torch.from_numpy(Q)), dim=-1).numpy()


def _results(Qa: np.ndarray, P: np.ndarray, split: SplitData, data: TrainingData, k: int = TOP_K) -> Results:
    return exact_search(Qa, split.query_ids, P, data.passage_ids, k=k)


def data_is_binary(split: SplitData) -> bool:
    return all(r <= 1 for rels in split.qrels.values() for r in rels.values())


def _unseen_rows(d: TrainingData) -> set[str]:
    """The dev queries of `d` about documents its train part never pointed at (`embedfit.metrics.seen`)."""
    trained = trained_passages(d.train.qrels, d.train.query_ids)
    return set(seen_unseen(d.dev.qrels, d.dev.query_ids, trained)["unseen"])


def _score(Qa: np.ndarray, P: np.ndarray, split: SplitData, data: TrainingData,
           unseen: set[str] | None = None, lexical: PreparedLexical | None = None) -> dict[str, float]:
    """Mean metrics on `split`, plus `UNSEEN` (the selection metrics' means over its `unseen` queries, NaN without
    any): what the guard against losses on new documents reads. With `lexical` (the split's BM25 top n) and binary
    relevance, also the metrics of the ranking fused with BM25 at every weight (`FUSED`)."""
    fused: list[tuple[str, dict[str, dict[str, float]]]] = []
    if data_is_binary(split):  # the fast path (tested against trec_eval): thousands of points are scored
        Qn = Qa / np.maximum(np.linalg.norm(Qa, axis=1, keepdims=True), 1e-12)
        S = Qn @ P.T
        top = top_rows(S, data.passage_ids, max(K_VALUES))
        per_query = ranking_binary_metrics(top, split.query_ids, data.passage_ids, split.qrels, K_VALUES)[0]
        if lexical is not None:
            tops = fused_rankings(S, lexical, WEIGHTS, dense_top=top)
            got = ranking_binary_metrics(np.stack([tops[w] for w in WEIGHTS]), split.query_ids, data.passage_ids,
                                         split.qrels, (1, 5, 10))
            fused = [(f"{FUSED}{w}:", g) for w, g in zip(WEIGHTS, got)]
    else:
        per_query = per_query_metrics(split.qrels, _results(Qa, P, split, data), K_VALUES)
    out: dict[str, float] = {}
    for prefix, metrics in [("", per_query), *fused]:
        for m, v in metrics.items():
            out[prefix + m] = float(np.mean(list(v.values())))
            vals = [x for q, x in v.items() if unseen and q in unseen]
            out[UNSEEN + prefix + m] = float(np.mean(vals)) if vals else float("nan")
    return out


def _memory_points(sel: Selection, base: Point, module: nn.Module | None, d: TrainingData, alphas,
                   unseen: set[str], lexical: PreparedLexical | None = None) -> None:
    """Score the query memory built from `d.train`'s (adapted) queries, for every alpha, on `d.dev`."""
    rows, M = _memory_of(base, module, d)
    Qa = _adapt(module, d.dev.Q)
    for a in alphas:
        sel.scores.setdefault(dataclasses.replace(base, alpha=a), []).append(
            _score(Qa, apply_memory(d.P, rows, M, a), d.dev, d, unseen, lexical))


# -- the search -----------------------------------------------------------------------------------------

def _query_cfg(cfg: TrainConfig, candidates: str, temperature: float, prior: float | None = None) -> TrainConfig:
    return dataclasses.replace(cfg, kind="linear", sides="query", loss="infonce", dim_out=None,
                               candidates=candidates, temperature=temperature, lexical_prior=prior or 0.0)


def _prior_of(lexical: LexicalTopN | None, d: TrainingData, weight: float | None) -> LexicalPrior | None:
    """BM25's prior for `d.train`'s queries when a point is trained through the fused score (else None)."""
    if not weight:
        return None
    if lexical is None:
        raise ValueError("an adapter trained through the fused score needs BM25's top n of its training queries")
    return LexicalPrior.of(lexical.for_queries(d.train.query_ids))


def run_selection(cfg: TrainConfig, data: TrainingData, lexical: LexicalTopN | None = None) -> Selection:
    """Score every candidate of `cfg`'s grid on every fold (see the module docstring). With `lexical` (BM25's top n
    for every train and dev query), each point is also scored fused with BM25, and the fused metric decides when
    fusion pays (`Selection.decide_served`)."""
    t0 = time.perf_counter()
    k = auto_folds(data, cfg.folds)
    folds = folds_of(data, k, cfg.seed)
    sel = Selection(metric=cfg.metric, folds=k, decided_by=sum(len(f.dev.query_ids) for f in folds),
                    unseen_tolerance=cfg.unseen_tolerance)
    log.info("selection: %s over %d labelled queries, metric %s",
             f"{k}-fold cross-validation" if k > 1 else "the dev split", sel.decided_by, cfg.metric)
    unseen = [_unseen_rows(d) for d in folds]
    if lexical is not None and (cfg.metric not in FUSED_METRICS or not data_is_binary(data.dev)):
        log.info("selection: by the dense ranking alone (fused selection needs binary relevance and one of %s)",
                 ", ".join(FUSED_METRICS))
        lexical = None
    lex = [prepare_lexical(lexical.for_queries(d.dev.query_ids), len(d.passage_ids)) if lexical is not None else None
           for d in folds]
    for d, u, lx in zip(folds, unseen, lex):
        sel.scores.setdefault(Point("identity"), []).append(_score(d.dev.Q, d.P, d.dev, d, u, lx))
    if "memory" in cfg.methods:
        for d, u, lx in zip(folds, unseen, lex):
            _memory_points(sel, Point("memory"), None, d, cfg.alphas, u, lx)
    if "nudge" in cfg.methods:
        for d, u, lx in zip(folds, unseen, lex):
            for g in cfg.nudge_gammas:
                sel.scores.setdefault(Point("nudge", alpha=g), []).append(
                    _score(d.dev.Q, nudge_embeddings(d.P, d.train, d.dev, gamma=g), d.dev, d, u, lx))
    # what decides while the adapters train (their early stopping watches it): the fused metric when fusion pays for
    # the points scored so far (raw, memory, NUDGE-N); decided again over every point at the end
    sel.decide_served()
    if not {"query", "query+memory"} & set(cfg.methods):
        _bounded_points(sel, cfg, folds, unseen, lex, lexical)
        sel.decide_served()
        sel.seconds = time.perf_counter() - t0
        return sel
    # with fused selection, each adapter family is also trained through the fused score, at each prior weight
    priors = (None, *cfg.lexical_priors) if lexical is not None else (None,)
    for cand, temp, prior in itertools.product(cfg.candidate_sets, cfg.temperatures, priors):
        qcfg = _query_cfg(cfg, cand, temp, prior)
        runs = []  # per fold: (data, module, epoch generator)
        for d in folds:
            torch.manual_seed(cfg.seed)
            module = initial_module(qcfg, d)
            runs.append((d, module, run_epochs(module, qcfg, d, np.random.default_rng(cfg.seed), cfg.max_epochs,
                                               batch_bars=False, prior=_prior_of(lexical, d, prior))))
        name = f"{cand} T={temp}" + (f", through BM25 {prior:g}" if prior else "")
        bar = progress(total=cfg.max_epochs * len(runs), desc=f"select: adapter {name}", unit="fold-epoch",
                       leave=False)
        mine: list[Point] = []
        for epoch in range(1, cfg.max_epochs + 1):
            for (d, module, steps), u, lx in zip(runs, unseen, lex):
                got, loss = next(steps)
                sel.losses.setdefault((cand, temp, prior), {}).setdefault(got, []).append(loss)
                if "query" in cfg.methods:
                    sel.scores.setdefault(Point("query", cand, temp, got, prior=prior), []).append(
                        _score(_adapt(module, d.dev.Q), d.P, d.dev, d, u, lx))
                if "query+memory" in cfg.methods:
                    _memory_points(sel, Point("query+memory", cand, temp, got, prior=prior), module, d, cfg.alphas,
                                   u, lx)
                bar.update()
            mine = [p for p in sel.scores if (p.candidates, p.temperature, p.prior) == (cand, temp, prior)]
            # early stopping: the run ends once neither method (adapter alone, adapter + memory) has found a
            # better allowed point for `patience` epochs (by the metric that decides, as far as known now: see
            # below); a method whose every point was refused counts as 0
            last = max((b.epochs for m in ("query", "query+memory")
                        if (b := sel.best([p for p in mine if p.method == m], every_family=True))), default=0)
            if epoch - last >= cfg.patience:
                log.info("selection: %s stopped after epoch %d (best at epoch %d)", name, epoch, last)
                break
        best = sel.best(mine, every_family=True)
        bar.close()
        if best is None:  # every point of the family lost too much on unseen queries: the table says so
            log.info("selection: %s: every point refused by the unseen guard", name)
        else:
            log.info("selection: %s best %s %.4f (%s)", name, cfg.metric, sel.value(best), best)
    _bounded_points(sel, cfg, folds, unseen, lex, lexical)
    sel.decide_served()
    sel.seconds = time.perf_counter() - t0
    return sel


def fit(cfg: TrainConfig, point: Point, d: TrainingData,
        lexical: LexicalTopN | None = None) -> tuple[nn.Module | None, PassageMemory | None]:
    """The chosen setting fitted on `d.train`: the query module (None without one) and the memory (or None).
    `lexical`: BM25's top n of `d.train`'s queries (among others), for a point trained through the fused score."""
    module = None
    if point.method in ("query", "query+memory", "query+nudge"):
        qcfg = _query_cfg(cfg, point.candidates, point.temperature, point.prior)
        torch.manual_seed(cfg.seed)
        module = initial_module(qcfg, d)
        steps = run_epochs(module, qcfg, d, np.random.default_rng(cfg.seed), point.epochs, batch_bars=False,
                           prior=_prior_of(lexical, d, point.prior))
        for _ in progress(steps,
                          total=point.epochs, desc="fit the chosen adapter", unit="epoch", leave=False):
            pass
    memory = None
    if point.method in ("memory", "query+memory"):
        rows, M = _memory_of(point, module, d)
        memory = PassageMemory(tuple(d.passage_ids[r] for r in rows), M)
    if point.method in ("nudge", "query+nudge"):  # NUDGE-N's moved passages as a memory: P + 1 * (moved - P) = moved
        moved = _nudged(module, d, point.alpha)
        rows = np.array(sorted({int(p) for pos in d.train.positives for p in pos}), dtype=np.int64)
        memory = PassageMemory(tuple(d.passage_ids[r] for r in rows), (moved[rows] - d.P[rows]).astype(np.float32))
    return module, memory


def _nudged(module: nn.Module | None, d: TrainingData, gamma: float) -> np.ndarray:
    """NUDGE-N's passages for `d.train`'s queries as the search sees them: adapted by `module` when there is one
    (the passages then move toward the adapted queries, within NUDGE-N's bound)."""
    if module is None:
        return nudge_embeddings(d.P, d.train, d.dev, gamma=gamma)
    return nudge_embeddings(d.P, dataclasses.replace(d.train, Q=_adapt(module, d.train.Q)),
                            dataclasses.replace(d.dev, Q=_adapt(module, d.dev.Q)), gamma=gamma)


def _memory_of(point: Point, module: nn.Module | None, d: TrainingData) -> tuple[np.ndarray, np.ndarray]:
    """(rows, M) of the point's query memory built from `d.train`'s (adapted) queries; a bounded point's vectors are
    scaled by each passage's sufficient fraction of the move (`sufficient_moves`), so they apply with its alpha."""
    Qt = _adapt(module, d.train.Q)
    rows, M = query_memory(Qt, d.train.positives, len(d.passage_ids))
    if point.centred:
        M = centre_memory(M, Qt)
    if point.margin is not None:
        t = sufficient_moves(d.P, rows, M, point.alpha, Qt, d.train.positives, point.margin)
        M = (M * t[:, None]).astype(np.float32)
    return rows, M


def _bounded_points(sel: Selection, cfg: TrainConfig, folds: list[TrainingData], unseen: list[set[str]],
                    lex: list[PreparedLexical | None], lexical: LexicalTopN | None = None) -> None:
    """Stage two, for the memory families whose best point beats identity overall but costs unseen queries (where a
    bound can help; a memory that loses overall, as on NQ's grouped split, is not retried). For each, at that
    point's epochs: the adapter with NUDGE-N's bounded move on the *adapted* queries (`query+nudge`, every gamma of
    `cfg.nudge_gammas`, when NUDGE is among the methods), and the margin-bounded memory (`cfg.margins`, at the
    point's alpha and the grid's largest; none by default). Scored on every fold like the rest; a query adapter is
    refitted per fold to the point's epochs (same seed: the module the first stage scored)."""
    bases = []
    for fam in dict.fromkeys(p.family for p in sel.scores if p.method in ("memory", "query+memory") and not p.centred):
        top = sel.best([p for p in sel.scores if p.family == fam], guard=False)
        if top is not None and sel.value(top) > sel.value(Point("identity")) and sel.unseen_change(top) < 0:
            bases.append(top)
    for base in bases:
        nudge = base.method == "query+memory" and "nudge" in cfg.methods
        log.info("selection: bounded moves for %s (it costs unseen queries %+.4f)", base.to_json(),
                 sel.unseen_change(base))
        for d, u, lx in zip(folds, unseen, lex):
            module = fit(cfg, dataclasses.replace(base, method="query"), d, lexical)[0] if base.method == "query+memory" \
                else None
            _memory_points(sel, dataclasses.replace(base, centred=True), module, d, cfg.alphas, u, lx)
            Qt, Qa = _adapt(module, d.train.Q), _adapt(module, d.dev.Q)
            if nudge:
                for g in cfg.nudge_gammas:
                    sel.scores.setdefault(dataclasses.replace(base, method="query+nudge", alpha=g), []).append(
                        _score(Qa, _nudged(module, d, g), d.dev, d, u, lx))
            if cfg.margins:
                rows, M = query_memory(Qt, d.train.positives, len(d.passage_ids))
                for alpha in dict.fromkeys((base.alpha, max(cfg.alphas))):
                    for margin in cfg.margins:
                        t = sufficient_moves(d.P, rows, M, alpha, Qt, d.train.positives, margin)
                        sel.scores.setdefault(dataclasses.replace(base, alpha=alpha, margin=margin), []).append(
                            _score(Qa, apply_memory(d.P, rows, M * t[:, None], alpha), d.dev, d, u, lx))


def memory_alpha(point: Point) -> float | None:
    """The alpha a point's memory is applied with: its own, or 1 for NUDGE-N (whose alpha column holds gamma)."""
    return 1.0 if point.method in ("nudge", "query+nudge") else point.alpha


def _dense_results(module, memory: PassageMemory | None, alpha: float | None, d: TrainingData, k: int) -> Results:
    P = d.P
    if memory is not None:
        where = {pid: i for i, pid in enumerate(d.passage_ids)}
        P = apply_memory(P, np.array([where[p] for p in memory.ids], dtype=np.int64), memory.vectors, alpha)
    return _results(_adapt(module, d.dev.Q), P, d.dev, d, k=k)


def select_adapter(store: Store | None, cfg: TrainConfig, data: TrainingData | None = None) -> tuple[TrainResult, Selection, Point]:
    """Run the selection, fit the chosen setting (on train+dev after cross-validation, else on train), choose
    its BM25 fusion on queries it was not fitted on, and return it as an adapter."""
    with torch_threads(1), flush_denormals():
        cfg.validate()
        t0 = time.perf_counter()
        data = data or load_training_data(store, cfg.model)
        lexical = lexical_side(store, data) if cfg.select_by == "fused" else None
        sel = run_selection(cfg, data, lexical)
        chosen = sel.best()
        identity = sel.mean_metrics(Point("identity"))
        log.info("selection chose %s (%s%s %.4f vs identity %.4f) in %.1f s", chosen.to_json(), cfg.metric,
                 " with BM25" if sel.served == "fused" else "", sel.value(chosen), sel.value(Point("identity")),
                 sel.seconds)
        folds = folds_of(data, sel.folds, cfg.seed)
        fit_on = dataclasses.replace(data, train=concat_splits(data.train, data.dev)) if sel.folds > 1 else data
        module, memory = fit(cfg, chosen, fit_on, lexical)
        t_fusion = time.perf_counter()
        fusion = None
        if cfg.tune_fusion:
            def dense() -> Results:  # on queries the fused model was not fitted on: fold 1's held-out part (or dev)
                f_module, f_memory = fit(cfg, chosen, folds[0], lexical) if sel.folds > 1 else (module, memory)
                return _dense_results(f_module, f_memory, memory_alpha(chosen), folds[0], DEFAULT_N)

            fusion = fuse_with_store_bm25(store, dense, folds[0].dev.qrels, cfg.metric)
        fusion_seconds = time.perf_counter() - t_fusion
    if module is None:
        module = initial_module(_query_cfg(cfg, "mined", cfg.temperature), data)  # identity weights: W = I
    name = cfg.name or (cfg.out.name if cfg.out else f"{slug(cfg.model)}-selected")
    settings = {**cfg.training_settings(), "epochs": chosen.epochs or 0,
                "candidates": chosen.candidates, "temperature": chosen.temperature,
                "lexical_prior": chosen.prior or 0.0,
                "n_train_queries": len(fit_on.train.query_ids), "n_dev_queries": sel.decided_by,
                "fit_splits": ["train", "dev"] if sel.folds > 1 else ["train"],
                "split": store.split_policy() if store is not None else None}
    config = AdapterConfig(
        name=name, kind="linear", sides="query", dim_in=data.dim, dim_out=data.dim, base_model=data.model_id,
        data_fingerprint=data.data_fingerprint, raw_collection=data.raw_collection, loss="infonce",
        identity=chosen.method in ("identity", "memory", "nudge"), training=settings,
        dev_metrics={"selected": sel.mean_metrics(chosen), "identity": identity, "metric": cfg.metric},
        fusion=fusion.to_json() if fusion else None,
        memory=({"alpha": memory_alpha(chosen), "n_passages": len(memory.ids),
                 **({"bounded_margin": chosen.margin} if chosen.margin is not None else {}),
                 **({"centred": True} if chosen.centred else {}),
                 **({"method": "nudge-n", "gamma": chosen.alpha} if chosen.method in ("nudge", "query+nudge")
                    else {})}
                if memory is not None else None),
        selection={"chosen": chosen.to_json(), "folds": sel.folds, "decided_by": sel.decided_by,
                   "metric": cfg.metric, "unseen_tolerance": sel.unseen_tolerance,
                   "unseen_change": None if np.isnan(sel.unseen_change(chosen)) else round(sel.unseen_change(chosen), 4),
                   "served": sel.served,
                   **({"bm25_weight": sel.fused_weight(chosen)} if sel.served == "fused" else {}),
                   "seconds": round(sel.seconds, 1), "table": sel.table(), "points": sel.points()})
    seconds = time.perf_counter() - t0
    config.training["fit_seconds"] = round(seconds, 2)  # what the report's decision card quotes as the cost to fit
    result = TrainResult(adapter=Adapter(config, module, memory), curves=_curves(sel, chosen, identity),
                         seconds=seconds, identity_dev=identity, best_epoch=chosen.epochs or 0,
                         fusion_seconds=fusion_seconds)
    return result, sel, chosen


def _curves(sel: Selection, chosen: Point, identity: dict[str, float]) -> list[dict]:
    """Mean-over-folds dev metrics per epoch of the chosen family (epoch 0 = identity), for curves.json/png."""
    curves = [{"epoch": 0, "train_loss": None, "candidate": "identity (raw)", **identity}]
    if chosen.method not in ("query", "query+memory"):
        return curves
    losses = sel.losses.get((chosen.candidates, chosen.temperature, chosen.prior), {})
    for p in sel.scores:
        if p.family == chosen.family and p.alpha == chosen.alpha \
                and len(sel.scores[p]) == sel.folds:
            curves.append({"epoch": p.epochs, "train_loss": float(np.mean(losses.get(p.epochs, [np.nan]))),
                           **sel.mean_metrics(p)})
    return sorted(curves, key=lambda c: c["epoch"])
