"""`embedfit eval`: score raw embeddings, adapters and baselines on the same queries; write report files. See `--help`.
`embedfit eval learning-curve`: the gain on test against the number of labelled queries (see its `--help`).
`embedfit eval dims`: smaller vectors (truncation, PCA, a trained d-dim adapter) against raw (see its `--help`).

Writes OUT/metrics.json (the contract other tools read), OUT/details.json, OUT/report.md, OUT/report.html (the same
report with its figures, in one file that opens offline) and OUT/figures/.
By default the store's test split is scored; `--queries FILE --qrels FILE` scores those held-out queries
against the store's corpus instead.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embedfit.adapters.config import SELECTABLE
from embedfit.evaluation import dims, learning_curve
from embedfit.evaluation.config import OPTIONAL_BASELINES, SPLITS, EvalConfig
from embedfit.evaluation.dims import DimsConfig, dims_table, run_dims
from embedfit.evaluation.evaluate import run_eval
from embedfit.evaluation.learning_curve import CurveConfig, run_learning_curve
from embedfit.runcli import parse_with_verbosity, run_cli, shared_options
from embedfit.settings import METRICS


def parser() -> argparse.ArgumentParser:
    """The options, each with its `EvalConfig` field's default (tests/test_cli_options.py holds them to it)."""
    d = EvalConfig()
    p = argparse.ArgumentParser(prog="embedfit eval", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    shared_options(p, d.store)
    p.add_argument("--out", type=Path, default=d.out, help="report folder (env EMBEDFIT_REPORT)")
    p.add_argument("--force", action="store_true",
                   help="write into --out even if it is a non-empty folder that is not an eval report")
    p.add_argument("--adapter", type=Path, action="append", default=[], dest="adapters",
                   help="adapter folder; repeat for several (the first of a model is 'adapted' in metrics.json)")
    p.add_argument("--model", action="append", default=[], dest="models",
                   help="model to evaluate; repeat for several (default: every model in the store)")
    p.add_argument("--queries", type=Path, default=None, help="held-out BEIR queries.jsonl (with --qrels)")
    p.add_argument("--qrels", type=Path, default=None, help="held-out BEIR qrels.tsv: query-id, corpus-id, score, header line")
    p.add_argument("--min-queries", type=int, default=d.min_queries,
                   help="held-out queries: refuse to report when fewer can be scored")
    p.add_argument("--min-usable", type=float, default=d.min_usable,
                   help="held-out queries: refuse to report when a smaller fraction of the file can be scored")
    p.add_argument("--split", choices=SPLITS, default=d.split, help="store split to score when no --queries are given")
    p.add_argument("--no-bm25", action="store_true", help="skip the BM25 baseline")
    p.add_argument("--no-mse-baseline", action="store_true", help="skip training the MSE cookbook baseline")
    p.add_argument("--no-nudge", action="store_true", help="skip the NUDGE-N and NUDGE-M baselines")
    p.add_argument("--mse-epochs", type=int, default=d.mse_epochs, help="epochs of the MSE cookbook baseline")
    p.add_argument("--no-hnsw", action="store_true", help="skip querying Chroma's HNSW index")
    p.add_argument("--no-plots", action="store_true", help="skip the figures")
    p.add_argument("--baselines", nargs="+", choices=OPTIONAL_BASELINES, default=[],
                   help="optional baselines that take minutes: finetune (full fine-tuning of the model with "
                        "sentence-transformers' MultipleNegativesRankingLoss on the train split, the corpus re-embedded)")
    p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs,
                   help="epochs of the fine-tune baseline (the best on dev is kept)")
    p.add_argument("--study", type=Path, action="append", default=[], dest="studies",
                   help="a folder `eval learning-curve` or `eval dims` wrote into; its figure joins the report when it "
                        "measured this store's data (repeatable; default: the studies' default folders)")
    p.add_argument("--bootstrap-resamples", type=int, default=d.bootstrap_resamples,
                   help="resamples of the bootstrap intervals and permutation tests")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the bootstrap, permutations and plot sampling")
    p.add_argument("--plot-queries", type=int, default=d.plot_queries, help="queries in the latent-space plot (0: no plot)")
    p.add_argument("--plot-passages", type=int, default=d.plot_passages, help="random passages in the latent-space plot")
    p.add_argument("--cache", type=Path, default=d.cache_dir, help="embedding cache for held-out queries (env EMBEDFIT_CACHE)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.add_argument("--batch-size", type=int, default=None, help="embedding batch size for held-out queries")
    p.add_argument("--device", default=d.device, help="where a sentence-transformers model embeds held-out queries")
    return p


def parse_args(argv: list[str] | None = None) -> EvalConfig:
    p = parser()
    a = parse_with_verbosity(p, argv)
    if (a.queries is None) != (a.qrels is None):
        p.error("--queries and --qrels go together")
    return EvalConfig(
        store=a.store, out=a.out, adapters=a.adapters, models=a.models, queries=a.queries, qrels=a.qrels,
        split=a.split, bm25=not a.no_bm25, mse_baseline=not a.no_mse_baseline, nudge=not a.no_nudge, mse_epochs=a.mse_epochs,
        hnsw=not a.no_hnsw, plots=not a.no_plots, bootstrap_resamples=a.bootstrap_resamples, seed=a.seed,
        plot_queries=a.plot_queries, plot_passages=a.plot_passages,
        cache_dir=None if a.no_cache else a.cache, batch_size=a.batch_size, device=a.device,
        chroma_host=a.chroma_host, chroma_port=a.chroma_port, min_queries=a.min_queries, min_usable=a.min_usable,
        force=a.force, studies=a.studies, baselines=a.baselines, finetune_epochs=a.finetune_epochs)


def _study_parser(command: str, doc: str | None, d: CurveConfig | DimsConfig, out_help: str) -> argparse.ArgumentParser:
    """The options every `embedfit eval <study>` shares: the store, the model, the output folder, -v."""
    p = argparse.ArgumentParser(prog=f"embedfit eval {command}", description=doc,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    shared_options(p, d.store, chroma=False)
    p.add_argument("--model", default=d.model)
    p.add_argument("--out", type=Path, default=d.out, help=out_help)
    return p


def parse_curve_args(argv: list[str]) -> CurveConfig:
    d = CurveConfig()
    p = _study_parser("learning-curve", learning_curve.__doc__, d, "folder for learning_curve.json and .png")
    p.add_argument("--sizes", type=int, nargs="+", default=list(d.sizes),
                   help="numbers of labelled queries (every labelled query is always the last point)")
    p.add_argument("--seeds", type=int, default=d.seeds, help="draws per size")
    p.add_argument("--metric", choices=METRICS, default=d.metric)
    p.add_argument("--methods", nargs="+", choices=SELECTABLE, default=list(d.methods))
    p.add_argument("--candidate-sets", nargs="+", choices=("mined", "corpus"), default=list(d.candidate_sets))
    p.add_argument("--temperatures", nargs="+", type=float, default=list(d.temperatures))
    p.add_argument("--folds", type=int, default=d.folds, help="cross-validation folds of each selection")
    a = parse_with_verbosity(p, argv)
    return CurveConfig(store=a.store, model=a.model, out=a.out, sizes=tuple(a.sizes), seeds=a.seeds, metric=a.metric,
                       methods=tuple(a.methods), candidate_sets=tuple(a.candidate_sets),
                       temperatures=tuple(a.temperatures), folds=a.folds)


def _curve_table(curve: dict) -> str:
    lines = [f"{curve['model']}: {curve['metric']} gain over raw on {curve['test_queries']} test queries (95% CI)",
             "| labels | seeds | all | seen | unseen | seen share | chosen |", "|---:|---:|---|---|---|---:|---|"]
    fmt = lambda g: f"{g['mean']:+.3f} [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}]" if g else "-"  # noqa: E731
    for p in curve["points"]:
        lines.append(f"| {p['labels']} | {p['seeds']} | {fmt(p['gain'])} | {fmt(p['seen'])} | {fmt(p['unseen'])} | "
                     f"{p['seen_share']:.2f} | {', '.join(p['chosen'])} |")
    return "\n".join(lines)


def parse_dims_args(argv: list[str]) -> DimsConfig:
    d = DimsConfig()
    p = _study_parser("dims", dims.__doc__, d, "folder for dims.json and dims.png")
    p.add_argument("--sizes", type=int, nargs="+", default=list(d.sizes), help="output dimensions")
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs of each d-dim adapter")
    a = parse_with_verbosity(p, argv)
    return DimsConfig(store=a.store, model=a.model, out=a.out, sizes=tuple(a.sizes), epochs=a.epochs)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["dims"]:
        def dims_job() -> None:
            cfg = parse_dims_args(args[1:])
            print(dims_table(run_dims(cfg)))
            print(f"written: {cfg.out / 'dims.json'}, {cfg.out / 'dims.png'}")
        return run_cli(dims_job)
    if args[:1] == ["learning-curve"]:
        def curve_job() -> None:
            cfg = parse_curve_args(args[1:])
            curve = run_learning_curve(cfg)
            print(_curve_table(curve))
            print(f"written: {cfg.out / 'learning_curve.json'}, {cfg.out / 'learning_curve.png'}")
        return run_cli(curve_job)

    def job() -> None:
        cfg = parse_args(args)
        print(run_eval(cfg).summary())
        print()
        print(f"report: {cfg.out / 'report.html'} (open it in a browser: one file, figures inside; "
              f"also {cfg.out / 'report.md'}, metrics: {cfg.out / 'metrics.json'})")

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
