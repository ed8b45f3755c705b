"""`embedfit serve`: a Chroma server for one store, so several processes can use it at once (the app while an
ingest or a training writes). It holds the store's lock while it runs: embedded openers of the same folder are
refused instead of corrupting each other's reads. Point the other commands at it with --chroma-host/--chroma-port
(or CHROMA_HOST/CHROMA_PORT). Ctrl-C stops it."""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from embedfit import procs
from embedfit.runcli import parse_with_verbosity, run_cli, shared_options
from embedfit.settings import default_store
from embedfit.store.server import start_server

log = logging.getLogger(__name__)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="embedfit serve", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    shared_options(p, default_store(), chroma=False)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log", type=Path, default=None, help="append the server's own output to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    a = parse_with_verbosity(parser(), argv)

    def job() -> None:
        procs.interrupt_on_sigterm()  # `kill` ends it like Ctrl-C: the server is stopped, not orphaned
        proc = start_server(a.store, a.host, a.port, log_file=a.log)
        try:
            print(f"serving the store {a.store} at {a.host}:{a.port}; use it with --chroma-host {a.host} "
                  f"--chroma-port {a.port} (or CHROMA_HOST/CHROMA_PORT). Ctrl-C stops it.", flush=True)
            while proc.poll() is None:
                time.sleep(0.5)
            log.error("the Chroma server exited (code %s)", proc.returncode)
        finally:
            if proc.poll() is None:
                procs.stop_process(proc, timeout=15)

    return run_cli(job)
