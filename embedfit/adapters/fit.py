"""`embedfit.fit`: choose and fit the customization for a store's frozen embeddings, as one call.

The Python face of `embedfit train` (which calls it): selection among the identity, the query memory, a linear
query adapter and both (`embedfit.adapters.select`), or one fixed setting (`fixed=True`,
`embedfit.adapters.train`). What comes back is a `FitResult`: the adapter, the table of what selection measured,
the per-epoch curves, and `save`, which writes the adapter folder and, when the adapter moves passages, its
projected collection in the store (`embedfit.adapters.project.save_and_project`).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from embedfit.adapters.adapter import Adapter
from embedfit.adapters.config import TrainConfig
from embedfit.adapters.curves import curves_json, curves_png
from embedfit.adapters.io import save_adapter
from embedfit.adapters.project import save_and_project
from embedfit.adapters.select import Point, Selection, select_adapter, table_markdown
from embedfit.adapters.train import TrainResult, train_adapter
from embedfit.embed.registry import DEFAULT_MODEL
from embedfit.settings import with_options
from embedfit.store.store import Store

#: the `TrainConfig` fields `fit(**options)` does not take: where things are, which the arguments already say
_NOT_OPTIONS = {"store", "model", "out", "chroma_host", "chroma_port"}


@dataclass
class FitResult:
    """What `fit` (or `fit_vectors`) chose and fitted.

    Attributes:
        adapter: the fitted `Adapter` (the identity when nothing beat the raw embeddings: the honest answer).
        selection: every candidate's scores per fold (None for a `fixed=True` run).
        chosen: the winning candidate (None for a `fixed=True` run).
        curves: dev metrics per epoch of the chosen setting (epoch 0 = the raw embeddings).
        seconds: wall time of the fit.
        store: the store it was fitted on (None for `fit_vectors`): `save` projects into it.
    """

    adapter: Adapter
    selection: Selection | None = None
    chosen: Point | None = None
    curves: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    store: Store | None = None
    best_epoch: int = 0

    @classmethod
    def of(cls, result: TrainResult, store: Store | None, selection: Selection | None = None,
           chosen: Point | None = None) -> FitResult:
        return cls(adapter=result.adapter, selection=selection, chosen=chosen, curves=result.curves,
                   seconds=result.seconds, store=store, best_epoch=result.best_epoch)

    @property
    def table(self) -> str:
        """The selection table (markdown): each candidate family's best score, spread over folds, gain over the
        identity and change on queries about unseen documents; empty for a fixed run."""
        return table_markdown(self.selection, self.chosen) if self.selection is not None else ""

    @property
    def helped(self) -> bool:
        """False when the identity won: nothing beat the raw embeddings on the queries that decided."""
        return not self.adapter.is_identity

    def summary(self) -> str:
        """What was chosen, on how many queries, and raw -> adapted on each dev metric (the selection metric *)."""
        cfg = self.adapter.config
        metric = cfg.dev_metrics["metric"]
        sel, raw = cfg.dev_metrics["selected"], cfg.dev_metrics["identity"]
        if cfg.selection is not None:
            s = cfg.selection
            verdict = ("nothing beat the raw embeddings: the saved adapter is the IDENTITY" if self.adapter.is_identity
                       else f"chose {s['chosen']}")
            where = (f"mean of {s['folds']} held-out folds ({s['decided_by']} queries)" if s["folds"] > 1
                     else f"dev split ({s['decided_by']} queries)")
            if s.get("served") == "fused":
                verdict += (f" by its {metric} with BM25 (weight {s.get('bm25_weight')}); the table above has those "
                            "figures, the ones below are the customization alone")
        else:
            verdict = ("no trained epoch beat the raw embeddings on dev: the saved adapter is the IDENTITY"
                       if cfg.identity else f"selected epoch {self.best_epoch}")
            where = f"dev split ({cfg.training['n_dev_queries']} queries)"
        rows = [f"{self.adapter.describe()}", f"  {verdict}; in {self.seconds:.1f} s", f"  {where}:   raw  -> adapted"]
        for k in ("MRR@10", "Recall@1", "Recall@10", "nDCG@10", "Recall@100"):
            if k in raw and k in sel:
                mark = " *" if k == metric else ""
                rows.append(f"    {k:10s} {raw[k]:.4f} -> {sel[k]:.4f} ({sel[k] - raw[k]:+.4f}){mark}")
        return "\n".join(rows)

    def save(self, out: str | Path, project: bool = True, force: bool = False) -> dict | None:
        """Write the adapter folder `out` (with `curves.json` and `curves.png`) and, when the adapter moves passages
        (both sides, or a query memory) and it was fitted on a store, its projected collection there.

        Args:
            out: the adapter folder. An existing one is replaced only if it is an adapter folder (or `force`).
            project: write the projected collection (`False`: the folder only; `embedfit project` does it later).
            force: replace `out` even if it is not an adapter folder (never the current folder, a store, ...).

        Returns:
            The projection's counts ({"collection", "projected", "unchanged", "count", ...}), or None.

        Raises:
            OutputError: `out` is not ours to replace. StoreBusyError: another process writes the store.
        """
        out = Path(out)
        cfg = self.adapter.config
        files = {"curves.json": curves_json(self.curves)}
        if self.curves:
            files["curves.png"] = curves_png(self.curves, cfg.dev_metrics["metric"], self.adapter.describe())
        if self.store is None:
            save_adapter(self.adapter, out, extra_files=files, force=force)
            return None
        return save_and_project(self.store, self.adapter, out, project=project, force=force, extra_files=files)


def as_store(store: str | Path | Store, write: bool = False) -> Store:
    """A `Store` from a folder (or the `Store` itself)."""
    return store if isinstance(store, Store) else Store(Path(store), write=write)


def train_config(model: str, store: Store | None, options: dict, config: TrainConfig | None = None) -> TrainConfig:
    """`config` (default `TrainConfig()`) with `options` (its field names) applied; InputError naming a wrong one."""
    base = with_options(config or TrainConfig(), options, _NOT_OPTIONS, "fit")
    where = {"store": store.root, "chroma_host": store.chroma_host, "chroma_port": store.chroma_port} if store else {}
    return dataclasses.replace(base, model=model, **where)


def fit(store: str | Path | Store, model: str = DEFAULT_MODEL, *, fixed: bool = False,
        config: TrainConfig | None = None, **options) -> FitResult:
    """Choose and fit the customization of `model`'s frozen embeddings in `store` (built by `embedfit.ingest`).

    Selection (the default) scores the identity, the query memory, a linear query adapter and both on held-out
    labelled queries (5-fold cross-validation up to 3,000 of them, else the dev split) and keeps the identity
    unless something beats it; a setting that loses on queries about documents no training query pointed at is
    refused. Nothing is written: call `FitResult.save`.

    Args:
        store: the store folder (or a `Store`).
        model: the base model whose raw collection is in the store.
        fixed: train exactly the given setting (`kind`, `sides`, `loss`, `temperature`, ...) instead of selecting.
        config: a `TrainConfig` to start from; `options` override its fields.
        **options: any `TrainConfig` field, e.g. `methods=("memory",)`, `folds=3`, `alphas=(0.5, 1.0)`, `epochs=10`.

    Returns:
        A `FitResult`: `.adapter`, `.table`, `.summary()`, `.save(folder)`.

    Raises:
        StoreError: no store, or no `model` embeddings, train or dev queries in it. InputError: a bad option.

    Example:
        >>> import embedfit as ef
        >>> result = ef.fit(".data/scifact", "all-MiniLM-L6-v2", folds=3)   # doctest: +SKIP
        >>> print(result.table); result.save("adapters/l6")                  # doctest: +SKIP
    """
    st = as_store(store)
    cfg = train_config(model, st, options, config)
    st.require(model)
    if fixed:
        return FitResult.of(train_adapter(st, cfg), st)
    result, sel, chosen = select_adapter(st, cfg)
    return FitResult.of(result, st, sel, chosen)
