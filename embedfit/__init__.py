"""embedfit: the cheapest way to make retrieval better on your own data without re-training the embedding model.

One package, layered by concern; each layer imports only the layers below it (`tests/test_layers.py`):

    embedfit/    types, errors, settings, atomic files, outputs, jsonl, progress, procs, runcli   the ground floor
    embed/       embedding backends, the content-addressed cache, int8 graphs, the model registry
    metrics/     pure scoring: retrieval metrics, statistics (intervals, paired tests), seen/unseen
    data/        loaders (BEIR, pairs, NQ simplified, hub), cleaning, filters, the id rule, splits
    retrieval/   exact search, the BM25 index, fusion and its dev choice
    store/       the Chroma store, the store folder and its manifest, saved query vectors
    adapters/    modules, losses, training, selection, the query memory, save/load, projection, export
    pipeline/    the ingest run, negative mining, the Ray engine
    search/      the Retriever service (raw, adapted, hybrid side by side)
    report/      the decision card and the report drawn from eval's files (report.html, the page's Eval tab)
    evaluation/  the eval run, report files, plots, threshold accuracy, studies
    app/         the Gradio page
    cli.py       one command, `embedfit` (and `python -m embedfit`), with a subcommand per stage

The public API is the names in `__all__`; every command calls these same functions:

    import embedfit as ef
    store = ef.ingest("path/to/beir_folder", ".data/scifact", model="all-MiniLM-L6-v2")
    result = ef.fit(store, "all-MiniLM-L6-v2")         # selection + fit: result.adapter, result.table
    result.save("adapters/l6")                          # the adapter folder (+ its projected collection)
    ev = ef.evaluate(store, [result.adapter])           # computes only: ev.summary(); ev.write("report/")
    hits = ef.Retriever(store, adapter="adapters/l6").search("a question", k=10)
    ef.export(result.adapter, "numpy", "exports/l6")

    result = ef.fit_vectors(P, Q, positives)            # your own vectors, no store

Importing `embedfit` imports nothing heavy: each name is imported from its layer when first used, so
`import embedfit` works without the optional extras (gradio, ray, openai, datasets) installed.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

#: public name -> the module that defines it (one home per concept; this table only points at it)
_API = {
    "ingest": "embedfit.pipeline.ingest",
    "fit": "embedfit.adapters.fit",
    "fit_vectors": "embedfit.pipeline.vectors",
    "FitResult": "embedfit.adapters.fit",
    "evaluate": "embedfit.evaluation.evaluate",
    "Evaluation": "embedfit.evaluation.evaluate",
    "Retriever": "embedfit.search.retriever",
    "export": "embedfit.adapters.export",
    "load_adapter": "embedfit.adapters.io",
    "Adapter": "embedfit.adapters.adapter",
    "Store": "embedfit.store.store",
    "EmbedfitError": "embedfit.errors",
}
__all__ = ["__version__", "ingest", "fit", "fit_vectors", "FitResult", "evaluate", "Evaluation", "Retriever", "export",
           "load_adapter", "Adapter", "Store", "EmbedfitError"]

def __getattr__(name: str) -> Any:
    """Import a public name from its layer on first use (PEP 562)."""
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'embedfit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
