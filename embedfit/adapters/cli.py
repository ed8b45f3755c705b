"""`embedfit train|project|export|grid`: choose and fit a customization on the store's frozen embeddings
(identity, query memory, query adapter, both; selected on held-out labelled queries), save it; write the
adapter-projected Chroma collection; or search a grid of fixed-setting adapters."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from embedfit.adapters.config import LOSSES, METRICS, TrainConfig
from embedfit.adapters.curves import curves_json, curves_png
from embedfit.adapters.export import FORMATS, export_adapter
from embedfit.adapters.grid import grid_table, run_grid
from embedfit.adapters.io import adapter_sha, check_adapter_out, load_adapter
from embedfit.adapters.modules import KINDS
from embedfit.adapters.project import project_collection, save_and_project
from embedfit.adapters.select import select_adapter, table_markdown
from embedfit.adapters.train import train_adapter
from embedfit.errors import InputError
from embedfit.runcli import run_cli
from embedfit.settings import default_store
from embedfit.store.store import Store


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--store", type=Path, default=default_store(), help="store folder built by ingest (env EMBEDFIT_STORE)")
    p.add_argument("--chroma-host", default=None, help="use a Chroma server (env CHROMA_HOST)")
    p.add_argument("--chroma-port", type=int, default=None, help="(env CHROMA_PORT)")
    p.add_argument("-v", "--verbose", action="store_true")


def _train_options(p: argparse.ArgumentParser, d: TrainConfig) -> None:
    p.add_argument("--model", default=d.model, help="base embedding model (its raw collection must be in the store)")
    p.add_argument("--kind", choices=KINDS, default=d.kind)
    p.add_argument("--sides", choices=("query", "both"), default=d.sides,
                   help="query: adapt query vectors only; both: also project passages into a second collection")
    p.add_argument("--loss", choices=LOSSES, default=d.loss)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="pulls the change toward identity")
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--n-hard", type=int, default=d.n_hard, help="negatives per query")
    p.add_argument("--triplet-negatives", choices=("hard", "weak", "both"), default=d.triplet_negatives)
    p.add_argument("--triplet-margin", type=float, default=d.triplet_margin)
    p.add_argument("--dim-out", type=int, default=None, help="output dimension (linear only; default: same)")
    p.add_argument("--rank", type=int, default=d.rank)
    p.add_argument("--hidden", type=int, default=d.hidden)
    p.add_argument("--metric", choices=METRICS, default=d.metric, help="dev metric for selection")
    p.add_argument("--patience", type=int, default=d.patience)
    p.add_argument("--seed", type=int, default=d.seed)


def _config(a: argparse.Namespace, out: Path | None) -> TrainConfig:
    return TrainConfig(
        store=a.store, model=a.model, out=out, kind=a.kind, sides=a.sides, dim_out=a.dim_out, rank=a.rank,
        hidden=a.hidden, loss=a.loss, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
        weight_decay=a.weight_decay, temperature=a.temperature, n_hard=a.n_hard,
        triplet_negatives=a.triplet_negatives, triplet_margin=a.triplet_margin, metric=a.metric,
        patience=a.patience, seed=a.seed, chroma_host=a.chroma_host, chroma_port=a.chroma_port)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="embedfit", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train, select on dev, save (and project when --sides both)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _common(t)
    _train_options(t, d)
    t.add_argument("--out", type=Path, required=True,
                   help="adapter folder to write (an existing one is replaced only if it is an adapter folder)")
    t.add_argument("--force", action="store_true", help="replace --out even if it is not an adapter folder")
    t.add_argument("--name", default=None, help="adapter name (default: the --out folder name)")
    t.add_argument("--no-project", action="store_true", help="do not write the projected collection")
    t.add_argument("--fixed", action="store_true",
                   help="train exactly the settings given (--kind, --loss, --temperature, ...) instead of selecting "
                        "among identity / query memory / query adapter / both")
    t.add_argument("--methods", nargs="+", choices=("memory", "query", "query+memory"), default=list(d.methods),
                   help="selection: the customizations that compete with the identity")
    t.add_argument("--candidate-sets", nargs="+", choices=("mined", "corpus"), default=list(d.candidate_sets),
                   help="selection: InfoNCE negatives (mined hard negatives, or a softmax over the whole corpus)")
    t.add_argument("--temperatures", nargs="+", type=float, default=list(d.temperatures), help="selection")
    t.add_argument("--alphas", nargs="+", type=float, default=list(d.alphas),
                   help="selection: query-memory strengths tried")
    t.add_argument("--folds", type=int, default=None,
                   help="selection: cross-validation folds over train+dev (default: 5 up to 3,000 labelled queries, "
                        "else 1 = the dev split)")
    t.add_argument("--unseen-tolerance", type=float, default=d.unseen_tolerance,
                   help="selection: refuse a setting that loses more than this on held-out queries about new documents "
                        "(metric points / 100; negative: no guard)")
    t.add_argument("--max-epochs", type=int, default=d.max_epochs,
                   help="selection: the longest schedule a still-improving run is extended to")
    pr = sub.add_parser("project", help="write the adapter-projected collection of a both-sides adapter")
    _common(pr)
    pr.add_argument("--adapter", type=Path, required=True)
    ex = sub.add_parser("export", help="write the adapter for another stack: numpy, sentence-transformers or chroma")
    ex.add_argument("--adapter", type=Path, required=True)
    ex.add_argument("--format", choices=FORMATS, required=True)
    ex.add_argument("--out", type=Path, required=True, help="export folder (replaced only if it is an export of ours)")
    ex.add_argument("--force", action="store_true", help="replace --out even if it is not an export folder")
    ex.add_argument("--query-side-only", action="store_true",
                    help="for an adapter with a query memory: export its query part alone (encoders cannot move "
                         "stored passages)")
    ex.add_argument("-v", "--verbose", action="store_true")
    g = sub.add_parser("grid", help="train a grid of settings, print a table, optionally save the best")
    _common(g)
    _train_options(g, d)
    g.add_argument("--kinds", nargs="+", choices=KINDS, default=None)
    g.add_argument("--sides-list", nargs="+", choices=("query", "both"), default=None)
    g.add_argument("--losses", nargs="+", choices=LOSSES, default=None)
    g.add_argument("--lrs", nargs="+", type=float, default=None)
    g.add_argument("--temperatures", nargs="+", type=float, default=None)
    g.add_argument("--weight-decays", nargs="+", type=float, default=None)
    g.add_argument("--out", type=Path, default=None, help="save the best run's adapter here")
    g.add_argument("--force", action="store_true", help="replace --out even if it is not an adapter folder")
    a = p.parse_args(argv)
    logging.getLogger().setLevel(logging.DEBUG if a.verbose else logging.INFO)
    return a


def _save(store, result, out: Path, project: bool, force: bool) -> str:
    cfg = result.adapter.config
    counts = save_and_project(store, result.adapter, out, project=project, force=force, extra_files={
        "curves.json": curves_json(result.curves),
        "curves.png": curves_png(result.curves, cfg.dev_metrics["metric"], result.adapter.describe()),
    })
    lines = [f"saved adapter to {out}"]
    if counts:
        lines.append(f"projected collection {counts['collection']}: {counts['projected']} written, "
                     f"{counts['unchanged']} unchanged, {counts['count']} vectors")
    return "\n".join(lines)


def _train_summary(result) -> str:
    cfg = result.adapter.config
    metric = cfg.dev_metrics["metric"]
    sel, raw = cfg.dev_metrics["selected"], cfg.dev_metrics["identity"]
    if cfg.selection is not None:
        s = cfg.selection
        verdict = ("nothing beat the raw embeddings: the saved adapter is the IDENTITY" if result.adapter.is_identity
                   else f"chose {s['chosen']}")
        where = (f"mean of {s['folds']} held-out folds ({s['decided_by']} queries)" if s["folds"] > 1
                 else f"dev split ({s['decided_by']} queries)")
    else:
        verdict = ("no trained epoch beat the raw embeddings on dev: the saved adapter is the IDENTITY"
                   if cfg.identity else f"selected epoch {result.best_epoch}")
        where = f"dev split ({cfg.training['n_dev_queries']} queries)"
    rows = [f"{result.adapter.describe()}", f"  {verdict}; in {result.seconds:.1f} s",
            f"  {where}:   raw  -> adapted"]
    for k in ("MRR@10", "Recall@1", "Recall@10", "nDCG@10", "Recall@100"):
        mark = " *" if k == metric else ""
        rows.append(f"    {k:10s} {raw[k]:.4f} -> {sel[k]:.4f} ({sel[k] - raw[k]:+.4f}){mark}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    def job() -> None:
        a = parse_args(argv)
        if a.command == "export":
            out = export_adapter(a.adapter, a.format, a.out, force=a.force, query_side_only=a.query_side_only)
            print(f"exported {a.adapter} as {a.format} to {out}")
            return
        if a.command == "project":
            store = Store(a.store, a.chroma_host, a.chroma_port, write=True)
            store.require()
            counts = project_collection(store, load_adapter(a.adapter), adapter_sha(a.adapter))
            print(f"{counts['collection']}: {counts['projected']} projected, {counts['unchanged']} unchanged, "
                  f"{counts['deleted']} deleted, {counts['count']} vectors")
            return
        if a.out is not None:  # refuse an --out that is not ours before any work, not after it
            check_adapter_out(a.out, a.force, protect={"the store it trains from": a.store})
        # a result that moves passages is projected into the store: take its write lock now, so a store in use
        # (the app, another trainer) refuses before the work instead of after it
        if a.command == "grid":
            may_project = a.out is not None
        else:
            may_project = not a.no_project and (a.sides == "both" or (
                not a.fixed and any("memory" in m for m in a.methods)))
        store = Store(a.store, a.chroma_host, a.chroma_port, write=may_project)
        store.require(a.model)
        if a.command == "train":
            cfg = _config(a, a.out)
            cfg.name = a.name
            fixed_only = [f"--{k.replace('_', '-')}" for k in ("kind", "sides", "loss", "dim_out")
                          if getattr(a, k) != getattr(TrainConfig(), k)]
            if fixed_only and not a.fixed:
                raise InputError(f"{', '.join(fixed_only)} choose one fixed setting: add --fixed to train exactly it "
                                 "(without --fixed, train selects among identity, query memory and a linear query "
                                 "adapter on held-out labelled queries)")
            if a.fixed:
                result = train_adapter(store, cfg)
                print(_train_summary(result))
            else:
                cfg = dataclasses.replace(cfg, methods=tuple(a.methods), candidate_sets=tuple(a.candidate_sets),
                                          temperatures=tuple(a.temperatures), alphas=tuple(a.alphas), folds=a.folds,
                                          unseen_tolerance=None if a.unseen_tolerance < 0 else a.unseen_tolerance,
                                          max_epochs=max(a.max_epochs, a.epochs))
                result, sel, chosen = select_adapter(store, cfg)
                print(table_markdown(sel, chosen))
                print(_train_summary(result))
            print(_save(store, result, a.out, project=not a.no_project, force=a.force))
            return
        base = _config(a, a.out)
        grid = {k: v for k, v in {"kind": a.kinds, "sides": a.sides_list, "loss": a.losses, "lr": a.lrs,
                                  "temperature": a.temperatures, "weight_decay": a.weight_decays}.items() if v}
        runs = run_grid(store, base, grid)
        print(grid_table(runs, base.metric))
        if a.out and runs:
            print(_save(store, runs[0][1], a.out, project=True, force=a.force))

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
