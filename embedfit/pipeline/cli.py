"""`embedfit ingest`: load a dataset (NQ, any BEIR folder, pairs, a hub id), embed it, store it in Chroma, index it for BM25, mine negatives. See `--help`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from embedfit.pipeline.config import IngestConfig
from embedfit.pipeline.ingest import format_summary, ingest
from embedfit.pipeline.ray_engine import ENGINES
from embedfit.runcli import parse_with_verbosity, run_cli, shared_options


def parser() -> argparse.ArgumentParser:
    """The options, each with its `IngestConfig` field's default (tests/test_cli_options.py holds them to it)."""
    d = IngestConfig()
    p = argparse.ArgumentParser(prog="embedfit ingest", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--data", default=d.data, help="BEIR folder, pairs .jsonl, NQ simplified .jsonl(.gz), or a dataset id (env EMBEDFIT_DATA)")
    shared_options(p, d.store)
    p.add_argument("--force", action="store_true",
                   help="write into --store even if it is a non-empty folder that is not a store")
    p.add_argument("--lexical-only", action="store_true",
                   help="only rebuild the BM25 index (and the raw+BM25 fusion) of an existing --store from its own "
                        "dataset, e.g. after it was damaged (no --data, no model; nothing else is touched)")
    p.add_argument("--model", default=d.model, help="all-MiniLM-L6-v2, paraphrase-MiniLM-L3-v2, openai:text-embedding-3-small, "
                        "openai:text-embedding-ada-002, or a path")
    p.add_argument("--limit", type=int, default=None, help="keep only the first N queries and their passages")
    p.add_argument("--k-hard", type=int, default=d.k_hard, help="hard negatives per query")
    p.add_argument("--k-weak", type=int, default=d.k_weak, help="random negatives per query")
    p.add_argument("--hard-depth", type=int, default=d.hard_depth, help="how many nearest neighbours to consider")
    p.add_argument("--hard-margin", type=float, default=d.hard_margin, help="drop candidates scoring above this fraction of the positive's score")
    p.add_argument("--near-dup", type=float, default=d.near_dup, help="word containment above which a candidate counts as a duplicate of a positive")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--split", type=float, nargs=3, default=d.split, metavar=("TRAIN", "DEV", "TEST"))
    p.add_argument("--split-by", choices=("grouped", "random"), default=d.split_by,
                   help="random: i.i.d. over questions, as benchmark protocols split (test queries may be about "
                        "documents training saw: eval reports those apart, as 'seen'); grouped: no relevant passage "
                        "shared across splits (dev/test = new documents only)")
    p.add_argument("--min-words", type=int, default=d.min_words)
    p.add_argument("--max-words", type=int, default=d.max_words)
    p.add_argument("--batch-size", type=int, default=None, help="embedding batch size (default: the backend's)")
    p.add_argument("--device", default=d.device,
                   help="where a sentence-transformers model runs: auto (CUDA when torch sees a GPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--cache", type=Path, default=d.cache_dir, help="embedding cache folder (env EMBEDFIT_CACHE)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    p.add_argument("--engine", choices=ENGINES, default=d.engine,
                   help="where passages are embedded: in this process, or on Ray Data actors (same vectors, bit for bit)")
    p.add_argument("--ray-address", default=None,
                   help="with --engine ray: the cluster to join, from one of its nodes (HOST:PORT of the head, or auto); "
                        "default: RAY_ADDRESS, else Ray is started on this machine")
    p.add_argument("--ray-actors", type=int, default=None,
                   help="with --engine ray: actors embedding at once (default: one per node with CPUs)")
    return p


def parse_args(argv: list[str] | None = None) -> IngestConfig:
    p = parser()
    a = parse_with_verbosity(p, argv)
    return IngestConfig(
        data=a.data, store=a.store, model=a.model, limit=a.limit, k_hard=a.k_hard, k_weak=a.k_weak,
        hard_depth=a.hard_depth, hard_margin=a.hard_margin, near_dup=a.near_dup, seed=a.seed,
        split=tuple(a.split), split_by=a.split_by, device=a.device, min_words=a.min_words, max_words=a.max_words, batch_size=a.batch_size,
        cache_dir=None if a.no_cache else a.cache, chroma_host=a.chroma_host, chroma_port=a.chroma_port,
        force=a.force, lexical_only=a.lexical_only, engine=a.engine, ray_address=a.ray_address,
        ray_actors=a.ray_actors)


def main(argv: list[str] | None = None) -> int:
    def job() -> None:
        cfg = parse_args(argv)
        store = ingest(cfg.data, cfg.store, cfg.model, config=cfg)
        print(format_summary(store.last_ingest))

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
