"""What every `python -m STAGE` does around its work: logging set-up and clean exits.

Our own errors (`ProjectError`) are printed as one clear message with exit code 2; Ctrl-C exits 130
with a note that re-running resumes; anything else is a bug and keeps its traceback. The cause an error was raised from is logged at
DEBUG, so `-v` shows it.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

from embedfit.errors import ProjectError

QUIET_LOGGERS = ("openai", "httpx", "httpcore", "urllib3", "chromadb", "sentence_transformers", "transformers",
                 "huggingface_hub", "filelock", "matplotlib", "PIL", "gradio", "uvicorn.access", "numba", "asyncio", "bm25s")


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
    except ProjectError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if exc.__cause__ is not None:  # what went wrong underneath, for a bug report (-v shows it)
            logging.getLogger(__name__).debug("caused by", exc_info=exc.__cause__)
        return 2
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume (finished work is kept)", file=sys.stderr)
        return 130
    return 0
