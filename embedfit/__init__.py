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
    evaluation/  the eval run, report files, plots, threshold accuracy, studies
    app/         the Gradio page
    cli.py       one command, `embedfit` (and `embedfit`), with a subcommand per stage

Importing `embedfit` imports nothing heavy: each layer is imported when it is used.
"""
__version__ = "0.2.0"
