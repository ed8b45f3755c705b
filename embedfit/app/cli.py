"""`embedfit app`: serve the side-by-side search page for a store (and its adapter). See `--help`."""
from __future__ import annotations

import argparse
import ctypes
import os
import sys
from pathlib import Path

from embedfit.app.config import AppConfig
from embedfit.errors import InputError
from embedfit.runcli import parse_with_verbosity, run_cli, shared_options


def parser() -> argparse.ArgumentParser:
    """The options, each with its `AppConfig` field's default (tests/test_cli_options.py holds them to it)."""
    d = AppConfig()
    p = argparse.ArgumentParser(prog="embedfit app", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    shared_options(p, d.store)
    p.add_argument("--model", default=d.model, help="embedding model whose collection to search")
    p.add_argument("--adapter", type=Path, default=None,
                   help="adapter folder (default: EMBEDFIT_ADAPTERS/MODEL, .data/adapters/MODEL unless set: where `make demo` puts it)")
    p.add_argument("--report", type=Path, default=d.report, help="eval report folder shown in the report tab (env EMBEDFIT_REPORT)")
    p.add_argument("--host", default=d.host, help="address to bind; 0.0.0.0 exposes the page to your network")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--max-chars", type=int, default=d.max_chars, help="longer questions are cut to this many characters")
    p.add_argument("--concurrency", type=int, default=d.concurrency, help="searches running at once")
    p.add_argument("--queue-size", type=int, default=d.queue_size, help="searches allowed to wait; more are refused")
    p.add_argument("--torch-threads", type=int, default=d.torch_threads, help="threads for embedding a question")
    p.add_argument("--device", default=d.device, help="where a sentence-transformers model embeds: auto, cpu, cuda, cuda:N, mps")
    return p


def parse_args(argv: list[str] | None = None) -> AppConfig:
    p = parser()
    a = parse_with_verbosity(p, argv)
    cfg = AppConfig(store=a.store, model=a.model, adapter=a.adapter, report=a.report, host=a.host, port=a.port,
                    chroma_host=a.chroma_host, chroma_port=a.chroma_port, max_chars=a.max_chars,
                    concurrency=a.concurrency, queue_size=a.queue_size, torch_threads=a.torch_threads,
                    device=a.device)
    try:
        cfg.validate()
    except InputError as exc:
        p.error(str(exc))
    return cfg


def limit_malloc_arenas(n: int = 2) -> bool:
    """Cap glibc's malloc arenas at `n` for this process (unless MALLOC_ARENA_MAX says otherwise).

    Why: glibc gives threads their own arenas (up to 8 per core), and the app's worker threads (Gradio's,
    the embedder's, Chroma's) spread the memory of search results over many of them. Under load the app's
    resident memory kept climbing (scripts/load_test.py: about +25 MB per 1,000 searches after warm-up);
    with two arenas it levels off after the first rounds, at no measurable cost in throughput.
    Called before the heavy imports start threads. Returns whether the cap was set (False off glibc).
    """
    if os.environ.get("MALLOC_ARENA_MAX"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-8, n))  # -8 = M_ARENA_MAX
    except (OSError, AttributeError):
        return False


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    limit_malloc_arenas()

    # The heavy imports below (torch, Chroma, Gradio) stay inside `job` on purpose: they start threads and
    # read the environment, so they must come after the malloc cap and the Gradio default set above.
    def job() -> None:
        cfg = parse_args(argv)
        from embedfit.store.store import Store

        Store(cfg.store, cfg.chroma_host, cfg.chroma_port).require(cfg.model)  # no store: say so before loading anything
        import torch

        torch.set_num_threads(cfg.torch_threads)  # process-wide, so set here and not in the shared Retriever
        from embedfit.app.startup import open_app

        state = open_app(cfg)
        from embedfit.app.serve import serve
        from embedfit.app.ui import build_demo

        serve(build_demo(state), cfg, block=True)

    return run_cli(job)


if __name__ == "__main__":
    sys.exit(main())
