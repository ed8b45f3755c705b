"""Training an adapter on frozen embeddings, with selection on the dev split.

The loop is plain PyTorch on vectors already in memory (no re-embedding), so an epoch over ~6.7k
training queries takes well under a second on two CPU cores. After every epoch the adapter is
scored on the dev split with the same exact search and metrics as `eval`; the best epoch is kept.
The identity (raw embeddings) is scored first and stays a candidate, so the saved adapter is never
worse than raw on dev; when nothing beats it, the adapter is saved with `identity=True` and says so.
Training stops early after `patience` epochs without improvement.
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from embedfit.adapters.adapter import Adapter, AdapterConfig
from embedfit.adapters.config import TrainConfig
from embedfit.adapters.data import SplitData, TrainingData, load_training_data
from embedfit.adapters.losses import cosine_mse, info_nce, triplet
from embedfit.adapters.modules import build_module, pca_basis
from embedfit.errors import InputError, StoreError
from embedfit.metrics.retrieval import retrieval_metrics
from embedfit.progress import progress
from embedfit.retrieval.exact import exact_search
from embedfit.retrieval.fusion import DEFAULT_N, FusionChoice, LexicalPrior, LexicalTopN
from embedfit.retrieval.fusion_choice import fuse_on_dev
from embedfit.retrieval.lexical import LexicalIndex
from embedfit.settings import K_VALUES, TOP_K
from embedfit.store.store import Store
from embedfit.types import Qrels, Results, slug

log = logging.getLogger(__name__)



@dataclass
class TrainResult:
    adapter: Adapter
    curves: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    identity_dev: dict[str, float] = field(default_factory=dict)
    best_epoch: int = 0
    #: of `seconds`, the time spent choosing the BM25 fusion on dev after training
    fusion_seconds: float = 0.0


def _project(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return F.normalize(module(x), dim=-1)


def dev_metrics(module: nn.Module | None, data: TrainingData, sides: str) -> dict[str, float]:
    """Exact-search metrics on dev for `module` (None = identity, the raw embeddings)."""
    return retrieval_metrics(data.dev.qrels, dev_results(module, data, sides), K_VALUES)


def dev_results(module: nn.Module | None, data: TrainingData, sides: str, k: int = TOP_K) -> Results:
    """The exact top-`k` of every dev query under `module` (None = identity)."""
    split = data.dev
    with torch.no_grad():
        Q = torch.from_numpy(split.Q)
        P = torch.from_numpy(data.P)
        if module is not None:
            Q = _project(module, Q)
            if sides == "both":
                P = _project(module, P)
    return exact_search(Q.numpy(), split.query_ids, P.numpy(), data.passage_ids, k=k)


def fuse_with_store_bm25(store: Store | None, dense: Callable[[], Results], qrels: Qrels,
                         metric: str) -> FusionChoice | None:
    """The BM25 fusion for an adapter (`embedfit.retrieval.fusion.choose_fusion` via `embedfit.retrieval.fusion_choice.fuse_on_dev`): its dense
    top-n on held-out queries (`dense()`, called only when there is an index to fuse with) fused with the store's
    BM25 top-n. None, with a warning, when the store has no lexical index; None without a store (training on
    in-memory data: tests, experiments)."""
    index = store_lexical_index(store, "no BM25 fusion chosen for this adapter")
    if index is None:
        return None
    return fuse_on_dev(dense(), store.load_queries(), qrels, index, metric=metric, n=DEFAULT_N)


def store_lexical_index(store: Store | None, without: str) -> LexicalIndex | None:
    """The store's BM25 index, or None (with the warning `without`: what is skipped, and why) when the store has
    none or there is no store (training on in-memory data: tests, experiments)."""
    if store is None:
        return None
    try:
        return store.lexical_index()
    except StoreError as exc:
        log.warning("%s: %s", without, exc)
        return None


def lexical_side(store: Store | None, data: TrainingData) -> LexicalTopN | None:
    """BM25's top n for every train and dev query, from the store's index: what `run_selection` fuses each candidate
    with (None without a store or an index: then selection decides by the dense ranking alone). The time it takes
    (seconds on NQ) belongs to selection; `embedfit train` and `make bench` both include it."""
    index = store_lexical_index(store, "selection by the dense ranking alone")
    if index is None:
        return None
    queries = store.load_queries()
    ids = [*data.train.query_ids, *data.dev.query_ids]
    t0 = time.perf_counter()
    results = index.search_queries({q: queries[q] for q in ids}, DEFAULT_N)
    log.info("BM25 top %d of %d train and dev queries in %.1f s (for fused selection)", DEFAULT_N, len(ids),
             time.perf_counter() - t0)
    return LexicalTopN.from_results(results, ids, data.passage_ids)


def choose_adapter_fusion(store: Store | None, module: nn.Module | None, data: TrainingData, sides: str,
                          metric: str) -> FusionChoice | None:
    """The BM25 fusion for this adapter, chosen on the dev split (`fuse_with_store_bm25`)."""
    return fuse_with_store_bm25(store, lambda: dev_results(module, data, sides, k=DEFAULT_N), data.dev.qrels, metric)


def _batches(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _sample_positive(split: SplitData, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.array([split.positives[r][rng.integers(len(split.positives[r]))] for r in rows], dtype=np.int64)


def _take(lists: list[np.ndarray], rows: np.ndarray, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Up to `k` negatives per query: a random subset when more were mined (a little variety per epoch)."""
    out = []
    for r in rows:
        cand = lists[r]
        out.append(cand if len(cand) <= k else rng.choice(cand, size=k, replace=False))
    return out


def _loss_infonce(module, cfg, data, rows, rng, Qt, Pt, prior: LexicalPrior | None = None):
    split = data.train
    pos = _sample_positive(split, rows, rng)
    if cfg.candidates == "corpus":  # every passage competes: the softmax is the retrieval task itself
        cand = np.arange(len(data.passage_ids))
    else:  # the batch's positives + mined hard negatives
        hard = _take(split.hard, rows, cfg.n_hard, rng)
        cand = np.unique(np.concatenate([pos] + hard))
    where = {int(p): i for i, p in enumerate(cand)}
    target = torch.tensor([where[int(p)] for p in pos])
    mask = torch.zeros(len(rows), len(cand), dtype=torch.bool)
    for b, r in enumerate(rows):  # other known positives of this query are not negatives
        for p in split.positives[r]:
            if int(p) in where and int(p) != int(pos[b]):
                mask[b, where[int(p)]] = True
    q = _project(module, Qt[rows])
    c = Pt[cand]
    c = _project(module, c) if cfg.sides == "both" else c
    extra = None
    if prior is not None and cfg.lexical_prior:
        extra = cfg.lexical_prior * torch.from_numpy(prior.expand(rows, len(data.passage_ids), columns=cand))
    return info_nce(q, c, target, mask, cfg.temperature, extra)


def _loss_triplet(module, cfg, data, rows, rng, Qt, Pt):
    split = data.train
    pos = _sample_positive(split, rows, rng)
    pools = {"hard": [split.hard], "weak": [split.weak], "both": [split.hard, split.weak]}[cfg.triplet_negatives]
    negs = []
    for b, r in enumerate(rows):
        cand = np.concatenate([p[r] for p in pools])
        if len(cand) == 0:
            cand = np.array([rng.integers(len(data.passage_ids))])
        negs.append(rng.choice(cand, size=cfg.n_hard, replace=len(cand) < cfg.n_hard))
    neg = torch.from_numpy(np.stack(negs))  # (B,K)
    q = _project(module, Qt[rows])
    p, n = Pt[pos], Pt[neg]
    if cfg.sides == "both":
        p, n = _project(module, p), _project(module, n)
    return triplet(q, p, n, cfg.triplet_margin)


def _loss_mse(module, cfg, data, rows, rng, Qt, Pt):
    """Cookbook: (query, positive, +1) and (query, random passage, -1) pairs, one matrix on both sides."""
    split = data.train
    pos = _sample_positive(split, rows, rng)
    neg = np.array([(split.weak[r][rng.integers(len(split.weak[r]))] if len(split.weak[r])
                     else rng.integers(len(data.passage_ids))) for r in rows], dtype=np.int64)
    q = _project(module, Qt[np.concatenate([rows, rows])])
    p = _project(module, Pt[np.concatenate([pos, neg])])
    label = torch.cat([torch.ones(len(rows)), -torch.ones(len(rows))])
    return cosine_mse(q, p, label)


LOSS_FNS = {"infonce": _loss_infonce, "triplet": _loss_triplet, "mse": _loss_mse}


def initial_module(cfg: TrainConfig, data: TrainingData) -> nn.Module:
    dim_out = cfg.dim_out or data.dim
    init = None
    if cfg.kind == "linear" and dim_out < data.dim:
        init = pca_basis(torch.from_numpy(data.P), dim_out)  # best rank-k linear compression of the corpus
    return build_module(cfg.kind, data.dim, dim_out, cfg.rank, cfg.hidden, init)


@contextmanager
def flush_denormals():
    """Treat subnormal floats as 0 while training. InfoNCE over the corpus at a low temperature puts most softmax
    probabilities below float32's normal range, and the CPU handles those in microcode: an epoch on the NQ demo store
    took 4.7 s with all-MiniLM-L6-v2 against 1.2 s with them flushed (the loss changed in its 8th digit), while
    paraphrase-MiniLM-L3-v2, whose scores spread less, was 1.2 s either way."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)  # torch's default (it offers no way to read the current setting)


@contextmanager
def torch_threads(n: int):
    """Run with `n` intra-op threads. The matrices here are small (384 x 384): with several threads
    each op waits on the others, and on a busy 2-core machine a step measured 275 ms with 2 threads
    vs 9.5 ms with 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_epochs(module: nn.Module, cfg: TrainConfig, data: TrainingData, rng: np.random.Generator,
               epochs: int | None = None, batch_bars: bool = True,
               prior: LexicalPrior | None = None) -> Iterator[tuple[int, float]]:
    """Train `module` in place on `data.train`, one epoch per step; yields (epoch, mean training loss) after
    each, with the module in eval mode (the caller scores it, keeps a copy, or stops). `batch_bars=False`: no
    progress bar per epoch (a caller running many short runs shows its own). With `cfg.lexical_prior` > 0, `prior`
    (BM25's normalised scores for `data.train`'s queries, in its order) is added to the InfoNCE logits at that
    weight: the adapter is trained through the fused score."""
    epochs = epochs or cfg.epochs
    if cfg.lexical_prior:
        if cfg.loss != "infonce":
            raise ValueError("training through the fused score (lexical_prior) needs the infonce loss")
        if prior is None or prior.query_ids != tuple(data.train.query_ids):
            raise ValueError("lexical_prior > 0 needs the BM25 prior of every training query, in order")
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=cfg.lr,
                            weight_decay=cfg.weight_decay)
    Qt, Pt = torch.from_numpy(data.train.Q), torch.from_numpy(data.P)
    loss_fn = LOSS_FNS[cfg.loss]
    for epoch in range(1, epochs + 1):
        module.train()
        losses = []
        batches = _batches(len(data.train.query_ids), cfg.batch_size, rng)
        for rows in progress(batches, desc=f"epoch {epoch}/{epochs}", unit="batch", leave=False, disable=not batch_bars):
            loss = loss_fn(module, cfg, data, rows, rng, Qt, Pt, **({"prior": prior} if cfg.lexical_prior else {}))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        module.eval()
        yield epoch, float(np.mean(losses))


def train_adapter(store: Store, cfg: TrainConfig, data: TrainingData | None = None) -> TrainResult:
    """Train per `cfg` on the store's train split, select on dev, return the chosen adapter."""
    with torch_threads(1), flush_denormals():
        return _train(store, cfg, data)


def _train(store: Store, cfg: TrainConfig, data: TrainingData | None) -> TrainResult:
    cfg.validate()
    if cfg.lexical_prior:  # its epochs must be judged by the fused metric, which selection measures and this does not
        raise InputError("training through the fused score is chosen by selection: `embedfit train --select-by "
                         "fused` (a fixed run keeps the best epoch by the dense metric, which it is not meant for)")
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    data = data or load_training_data(store, cfg.model)
    module = initial_module(cfg, data)
    same_dim = (cfg.dim_out or data.dim) == data.dim
    identity = dev_metrics(None, data, cfg.sides)
    curves = [{"epoch": 0, "train_loss": None, "candidate": "identity (raw)", **identity}]
    best_score, best_state, best_epoch = -1.0, None, 0
    if cfg.keep_identity_candidate and same_dim:
        best_score = identity[cfg.metric]
    elif not same_dim:
        log.warning("a %d-d output cannot fall back to the raw %d-d embeddings: the best trained epoch is kept "
                    "even if it is worse than raw (compare with epoch 0 in the curves)", cfg.dim_out, data.dim)
    bad = 0
    for epoch, loss in run_epochs(module, cfg, data, rng):
        m = dev_metrics(module, data, cfg.sides)
        curves.append({"epoch": epoch, "train_loss": loss, **m})
        log.info("epoch %d: loss %.4f, dev %s %.4f (best %.4f)", epoch, loss, cfg.metric, m[cfg.metric], best_score)
        if cfg.selection == "last":
            best_score, best_state, best_epoch = m[cfg.metric], copy.deepcopy(module.state_dict()), epoch
        elif m[cfg.metric] > best_score + 1e-9:
            best_score, best_state, best_epoch, bad = m[cfg.metric], copy.deepcopy(module.state_dict()), epoch, 0
        else:
            bad += 1
            if bad >= cfg.patience:
                log.info("early stop after epoch %d (%d epochs without improvement)", epoch, bad)
                break
    is_identity = best_state is None
    if best_state is not None:
        module.load_state_dict(best_state)
    best_dev = curves[best_epoch] if not is_identity else curves[0]
    name = cfg.name or (cfg.out.name if cfg.out else f"{slug(cfg.model)}-{cfg.kind}-{cfg.sides}-{cfg.loss}")
    config = AdapterConfig(
        name=name, kind=cfg.kind, sides=cfg.sides, dim_in=data.dim, dim_out=cfg.dim_out or data.dim,
        base_model=data.model_id, data_fingerprint=data.data_fingerprint, raw_collection=data.raw_collection,
        rank=cfg.rank, hidden=cfg.hidden, loss=cfg.loss, identity=is_identity,
        training={**cfg.training_settings(), "best_epoch": best_epoch, "epochs_run": len(curves) - 1,
                  "n_train_queries": len(data.train.query_ids), "n_dev_queries": len(data.dev.query_ids),
                  "split": store.split_policy() if store is not None else None},
        dev_metrics={"selected": {k: v for k, v in best_dev.items() if "@" in k},
                     "identity": {k: v for k, v in identity.items() if "@" in k}, "metric": cfg.metric},
    )
    if is_identity:
        log.warning("no trained epoch beat the raw embeddings on dev %s (%.4f): saving the identity adapter",
                    cfg.metric, identity[cfg.metric])
    t_fusion = time.perf_counter()
    if cfg.tune_fusion:
        fusion = choose_adapter_fusion(store, None if is_identity else module, data, cfg.sides, cfg.metric)
        config.fusion = fusion.to_json() if fusion else None
    fusion_seconds = time.perf_counter() - t_fusion
    seconds = time.perf_counter() - t0
    config.training["fit_seconds"] = round(seconds, 2)  # what the report's decision card quotes as the cost to fit
    return TrainResult(adapter=Adapter(config, module), curves=curves, seconds=seconds,
                       identity_dev=identity, best_epoch=best_epoch, fusion_seconds=fusion_seconds)
