"""What every `python -m STAGE` does around its work: logging set-up and clean exits.

Our own errors (`EmbedfitError`) are printed as one clear message with exit code 2; Ctrl-C exits 130
with a note that re-running resumes; anything else is a bug and keeps its traceback. The cause an error was raised from is logged at
DEBUG, so `-v` shows it.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from embedfit.errors import EmbedfitError

QUIET_LOGGERS = ("openai", "httpx", "httpcore", "urllib3", "chromadb", "sentence_transformers", "transformers",
                 "huggingface_hub", "filelock", "matplotlib", "PIL", "gradio", "uvicorn.access", "numba", "asyncio", "bm25s")


def shared_options(p: argparse.ArgumentParser, store: Path | None, chroma: bool = True,
                   store_help: str = "store folder (env EMBEDFIT_STORE)") -> None:
    """The options every stage's command shares, declared once: `--store` (default `store`; None: no such
    option), `--chroma-host`/`--chroma-port` (a Chroma server instead of the local store) and `-v`."""
    if store is not None:
        p.add_argument("--store", type=Path, default=store, help=store_help)
    if chroma:
        p.add_argument("--chroma-host", default=None, help="use a Chroma server (env CHROMA_HOST)")
        p.add_argument("--chroma-port", type=int, default=None, help="(env CHROMA_PORT)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG")


def parse_with_verbosity(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse, and set the log level from `-v` (declared by `shared_options`)."""
    a = p.parse_args(argv)
    logging.getLogger().setLevel(logging.DEBUG if a.verbose else logging.INFO)
    return a


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # third-party loggers stay at WARNING even at -v: the openai/httpx ones could print request headers
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def run_cli(job: Callable[[], None]) -> int:
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    setup_logging()
    try:
        job()
    except EmbedfitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.__cause__ is not None:  # what went wrong underneath, for a bug report (-v shows it)
            logging.getLogger(__name__).debug("caused by", exc_info=exc.__cause__)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume (finished work is kept)", file=sys.stderr)
        return 130
    return 0
