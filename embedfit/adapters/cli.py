"""`embedfit train|project|export|grid`: choose and fit a customization on the store's frozen embeddings
(identity, query memory, query adapter, both; selected on held-out labelled queries), save it; write the
adapter-projected Chroma collection; or search a grid of fixed-setting adapters."""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from embedfit.adapters.config import LOSSES, METRICS, SELECTABLE, TrainConfig
from embedfit.adapters.export import FORMATS, export
from embedfit.adapters.fit import FitResult, fit
from embedfit.adapters.grid import grid_table, run_grid
from embedfit.adapters.io import adapter_sha, check_adapter_out, load_adapter
from embedfit.adapters.modules import KINDS
from embedfit.adapters.project import project_collection
from embedfit.errors import InputError
from embedfit.runcli import parse_with_verbosity, run_cli, shared_options
from embedfit.store.store import Store


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
    p.add_argument("--patience", type=int, default=d.patience,
                   help="stop a training run after this many epochs without a better dev mean")
    p.add_argument("--seed", type=int, default=d.seed)


def _config(a: argparse.Namespace, out: Path | None) -> TrainConfig:
    return TrainConfig(
        store=a.store, model=a.model, out=out, kind=a.kind, sides=a.sides, dim_out=a.dim_out, rank=a.rank,
        hidden=a.hidden, loss=a.loss, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
        weight_decay=a.weight_decay, temperature=a.temperature, n_hard=a.n_hard,
        triplet_negatives=a.triplet_negatives, triplet_margin=a.triplet_margin, metric=a.metric,
        patience=a.patience, seed=a.seed, chroma_host=a.chroma_host, chroma_port=a.chroma_port)


def parser() -> argparse.ArgumentParser:
    """The subcommands and their options, each with its `TrainConfig` field's default (tests/test_cli_options.py)."""
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="embedfit", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train, select on dev, save (and project when --sides both)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    shared_options(t, d.store)
    _train_options(t, d)
    t.add_argument("--out", type=Path, required=True,
                   help="adapter folder to write (an existing one is replaced only if it is an adapter folder)")
    t.add_argument("--force", action="store_true", help="replace --out even if it is not an adapter folder")
    t.add_argument("--name", default=None, help="adapter name (default: the --out folder name)")
    t.add_argument("--no-project", action="store_true", help="do not write the projected collection")
    t.add_argument("--fixed", action="store_true",
                   help="train exactly the settings given (--kind, --loss, --temperature, ...) instead of selecting "
                        "among identity / query memory / query adapter / both")
    t.add_argument("--methods", nargs="+", choices=SELECTABLE, default=list(d.methods),
                   help="selection: the customizations that compete with the identity")
    t.add_argument("--candidate-sets", nargs="+", choices=("mined", "corpus"), default=list(d.candidate_sets),
                   help="selection: InfoNCE negatives (mined hard negatives, or a softmax over the whole corpus)")
    t.add_argument("--temperatures", nargs="+", type=float, default=list(d.temperatures), help="selection")
    t.add_argument("--alphas", nargs="+", type=float, default=list(d.alphas),
                   help="selection: query-memory strengths tried")
    t.add_argument("--nudge-gammas", nargs="+", type=float, default=list(d.nudge_gammas),
                   help="selection: NUDGE-N move sizes tried (the nudge method)")
    t.add_argument("--select-by", choices=("dense", "fused"), default=d.select_by,
                   help="selection: decide by the customization's own ranking, or by its fusion with BM25 when that "
                        "pays on dev (needs the store's BM25 index)")
    t.add_argument("--lexical-priors", nargs="*", type=float, default=list(d.lexical_priors),
                   help="selection, with --select-by fused: BM25 weights at which each adapter is also trained "
                        "through the fused score (none: adapters are trained on the dense score only)")
    t.add_argument("--margins", nargs="*", type=float, default=list(d.margins),
                   help="selection: bounded-memory margins tried when the memory's best point costs unseen queries "
                        "(none: no bounded memory)")
    t.add_argument("--folds", type=int, default=None,
                   help="selection: cross-validation folds over train+dev (default: 5 up to 3,000 labelled queries, "
                        "else 1 = the dev split)")
    t.add_argument("--unseen-tolerance", type=float, default=d.unseen_tolerance,
                   help="selection: refuse a setting that loses more than this on held-out queries about new documents "
                        "(metric points / 100; negative: no guard)")
    t.add_argument("--max-epochs", type=int, default=d.max_epochs,
                   help="selection: the most epochs a training run may take (each run stops once --patience epochs "
                        "pass without a better dev mean)")
    pr = sub.add_parser("project", help="write the adapter-projected collection of a both-sides adapter")
    shared_options(pr, d.store)
    pr.add_argument("--adapter", type=Path, required=True)
    ex = sub.add_parser("export", help="write the adapter for another stack: numpy, sentence-transformers or chroma")
    ex.add_argument("--adapter", type=Path, required=True)
    ex.add_argument("--format", choices=FORMATS, required=True)
    ex.add_argument("--out", type=Path, required=True, help="export folder (replaced only if it is an export of ours)")
    ex.add_argument("--force", action="store_true", help="replace --out even if it is not an export folder")
    ex.add_argument("--query-side-only", action="store_true",
                    help="for an adapter with a query memory: export its query part alone (encoders cannot move "
                         "stored passages)")
    shared_options(ex, None, chroma=False)
    g = sub.add_parser("grid", help="train a grid of settings, print a table, optionally save the best")
    shared_options(g, d.store)
    _train_options(g, d)
    g.add_argument("--kinds", nargs="+", choices=KINDS, default=None)
    g.add_argument("--sides-list", nargs="+", choices=("query", "both"), default=None)
    g.add_argument("--losses", nargs="+", choices=LOSSES, default=None)
    g.add_argument("--lrs", nargs="+", type=float, default=None)
    g.add_argument("--temperatures", nargs="+", type=float, default=None)
    g.add_argument("--weight-decays", nargs="+", type=float, default=None)
    g.add_argument("--out", type=Path, default=None, help="save the best run's adapter here")
    g.add_argument("--force", action="store_true", help="replace --out even if it is not an adapter folder")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parse_with_verbosity(parser(), argv)


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """`embedfit train`'s options as the `TrainConfig` that `fit` runs (selection settings included)."""
    cfg = dataclasses.replace(_config(a, a.out), name=a.name)
    if a.fixed:
        return cfg
    return dataclasses.replace(cfg, methods=tuple(a.methods), candidate_sets=tuple(a.candidate_sets),
                               temperatures=tuple(a.temperatures), alphas=tuple(a.alphas), folds=a.folds,
                               nudge_gammas=tuple(a.nudge_gammas), margins=tuple(a.margins),
                               select_by=a.select_by, lexical_priors=tuple(a.lexical_priors),
                               unseen_tolerance=None if a.unseen_tolerance < 0 else a.unseen_tolerance,
                               max_epochs=max(a.max_epochs, a.epochs))


def _saved(result: FitResult, out: Path, project: bool, force: bool) -> str:
    counts = result.save(out, project=project, force=force)
    lines = [f"saved adapter to {out}"]
    if counts:
        lines.append(f"projected collection {counts['collection']}: {counts['projected']} written, "
                     f"{counts['unchanged']} unchanged, {counts['count']} vectors")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    def job() -> None:
        a = parse_args(argv)
        if a.command == "export":
            out = export(a.adapter, a.format, a.out, force=a.force, query_side_only=a.query_side_only)
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
            cfg = config_from_args(a)
            fixed_only = [f"--{k.replace('_', '-')}" for k in ("kind", "sides", "loss", "dim_out")
                          if getattr(a, k) != getattr(TrainConfig(), k)]
            if fixed_only and not a.fixed:
                raise InputError(f"{', '.join(fixed_only)} choose one fixed setting: add --fixed to train exactly it "
                                 "(without --fixed, train selects among identity, query memory and a linear query "
                                 "adapter on held-out labelled queries)")
            result = fit(store, a.model, fixed=a.fixed, config=cfg)
            if result.table:
                print(result.table)
            print(result.summary())
            print(_saved(result, a.out, project=not a.no_project, force=a.force))
            return
        base = _config(a, a.out)
        grid = {k: v for k, v in {"kind": a.kinds, "sides": a.sides_list, "loss": a.losses, "lr": a.lrs,
                                  "temperature": a.temperatures, "weight_decay": a.weight_decays}.items() if v}
        runs = run_grid(store, base, grid)
        print(grid_table(runs, base.metric))
        if a.out and runs:
            print(_saved(FitResult.of(runs[0][1], store), a.out, project=True, force=a.force))

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
