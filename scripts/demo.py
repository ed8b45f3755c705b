"""`make demo`: the page first, the full report after.

Ingesting, selecting and evaluating two models one after the other kept a newcomer waiting about 11 minutes
before the page opened on 2 cores. So the demo runs in two phases:

1. **The page.** Ingest the app's model alone (the fast one, `paraphrase-MiniLM-L3-v2`, by default), select and
   fit its customization, then start the app on it. The page is usable from here on.
2. **The rest, while the page serves.** Ingest and fit the other models, then evaluate all of them into one
   report. The page's "Eval report" tab shows it after *Reload report*.

The embedded Chroma store is not process-safe (a writer is refused while the app reads), so phase 2 runs
against a `chroma run` server on the same store folder, started by the demo on a free local port and stopped
with it; the app of phase 1 uses that server too. The folder stays an ordinary store: `make app` opens it
embedded afterwards. Each step is the project's own CLI in its own process, so a failure names the step and
its command, and re-running the demo resumes (every step is idempotent and cached).

A data source that is a Hub dataset id (the default when `EMBEDFIT_DATA` is unset: 100k question/passage pairs) is
limited to `DEFAULT_HUB_LIMIT` questions unless `--limit` says otherwise (`--limit all` for the full set).
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from embedfit.data.load_hub import looks_like_dataset_id
from embedfit.errors import EmbedfitError, InputError
from embedfit.procs import (
    die_with_parent,
    free_port,
    interrupt_on_sigterm,
    port_is_free,
    stop_process,
    wait_until_answering,
)
from embedfit.runcli import run_cli
from embedfit.settings import default_adapters, default_data, default_report, default_store
from embedfit.store.server import start_server

log = logging.getLogger("demo")

#: questions taken from a Hub dataset by default: about the shared NQ data's size (8,308), so the first page
#: comes within minutes; the whole `sentence-transformers/natural-questions` (100k pairs: about 200k texts to embed
#: per model) takes over an hour with all-MiniLM-L6-v2 alone on 2 cores (about 30 texts/s, README "Speed")
DEFAULT_HUB_LIMIT = 10_000
FAST_MODEL = "paraphrase-MiniLM-L3-v2"
MODELS = ("all-MiniLM-L6-v2", FAST_MODEL)


class DemoError(EmbedfitError):
    """A step of the demo failed (its own error was printed above by that step)."""


@dataclass
class DemoConfig:
    data: str = field(default_factory=default_data)
    store: Path = field(default_factory=default_store)
    adapters: Path = field(default_factory=default_adapters)
    report: Path = field(default_factory=default_report)
    models: tuple[str, ...] = MODELS
    #: the model the page shows; ingested, fitted and served first
    app_model: str = FAST_MODEL
    split: tuple[float, ...] = (0.8, 0.1, 0.1)
    #: questions to ingest: None = all, except DEFAULT_HUB_LIMIT for a Hub dataset id
    limit: int | None = None
    all_data: bool = False
    port: int = 7860
    #: phase 1 only (ingest, fit and serve the app's model; no other model, no report)
    page_only: bool = False

    def validate(self) -> None:
        if not self.models:
            raise InputError("--models needs at least one model")
        if self.app_model not in self.models:
            raise InputError(f"--app-model {self.app_model!r} is not among --models {list(self.models)}")
        if self.limit is not None and self.limit <= 0:
            raise InputError("--limit must be a positive number of questions, or 'all'")
        if not 0 < self.port < 65536:
            raise InputError(f"--port must be a TCP port, got {self.port}")

    def ingest_limit(self) -> int | None:
        if self.all_data:
            return None
        if self.limit is None and looks_like_dataset_id(self.data) and not Path(self.data).exists():
            return DEFAULT_HUB_LIMIT
        return self.limit


def _py(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def _run(step: str, cmd: list[str], env: dict[str, str]) -> None:
    log.info("%s: %s", step, " ".join(cmd[1:]))
    rc = subprocess.Popen(cmd, env=env, preexec_fn=die_with_parent()).wait()
    if rc != 0:
        raise DemoError(f"{step} failed (exit {rc}); the command was: {' '.join(cmd)}")


def _wait_http(url: str, proc: subprocess.Popen, what: str, timeout: float) -> None:
    """Until `url` answers 200; an exited `proc` or the timeout is a DemoError."""
    try:
        wait_until_answering(url, proc, timeout)
    except (ChildProcessError, TimeoutError) as exc:
        raise DemoError(f"{what} {exc}") from None


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        stop_process(proc, timeout=15)


def _require_alive(server: subprocess.Popen | None) -> None:
    """DemoError when the demo's Chroma server has exited: the page cannot search without it, so the demo stops
    (and with it the page) rather than serve errors."""
    if server is not None and server.poll() is not None:
        raise DemoError(f"the Chroma server exited (code {server.returncode}): the page cannot search without it, "
                        "so the demo stops. Run `make demo` again (it resumes)")


def _model_steps(cfg: DemoConfig, model: str) -> list[tuple[str, list[str]]]:
    limit = cfg.ingest_limit()
    ingest = ["embedfit", "ingest", "--data", cfg.data, "--store", str(cfg.store), "--model", model,
              "--split", *map(str, cfg.split)] + (["--limit", str(limit)] if limit else [])
    train = ["embedfit", "train", "--store", str(cfg.store), "--model", model, "--out", str(cfg.adapters / model)]
    return [(f"ingest {model}", _py(*ingest)), (f"select and fit {model}", _py(*train))]


def run_demo(cfg: DemoConfig) -> int:
    cfg.validate()
    interrupt_on_sigterm()  # a `kill` stops the app and the Chroma server too
    t0 = time.monotonic()
    env = dict(os.environ)
    limit = cfg.ingest_limit()
    if limit == DEFAULT_HUB_LIMIT and cfg.limit is None:
        log.info("data: the Hub dataset %s, first %d questions (make demo LIMIT=all for all of it)", cfg.data, limit)
    # phase 1, embedded store (nothing else has it open): the app's model, then the page
    for step, cmd in _model_steps(cfg, cfg.app_model):
        _run(step, cmd, env)
    rest = [m for m in cfg.models if m != cfg.app_model]
    server = app = None
    try:
        if not cfg.page_only:  # phase 2 writes while the app reads: both go through one Chroma server
            port = free_port()  # the server holds the store: embedded openers are refused while it runs
            server = start_server(cfg.store, "127.0.0.1", port)
            env = {**env, "CHROMA_HOST": "127.0.0.1", "CHROMA_PORT": str(port)}
        app_cmd = _py("embedfit", "app", "--store", str(cfg.store), "--model", cfg.app_model, "--adapter",
                      str(cfg.adapters / cfg.app_model), "--report", str(cfg.report), "--port", str(cfg.port))
        log.info("app: %s", " ".join(app_cmd[1:]))
        if not port_is_free(cfg.port):  # else the readiness check could be answered by someone else's server
            raise DemoError(f"port {cfg.port} is in use (an earlier demo still running?); stop that process or pass "
                            "another port: make demo PORT=...")
        app = subprocess.Popen(app_cmd, env=env, preexec_fn=die_with_parent())
        url = f"http://127.0.0.1:{cfg.port}/"
        _wait_http(url, app, "the app", 300)
        log.info("PAGE READY after %.0f s: %s (%s)", time.monotonic() - t0, url, cfg.app_model)
        if not cfg.page_only:
            try:
                for m in rest:
                    for step, cmd in _model_steps(cfg, m):
                        _run(step, cmd, env)
                _run("evaluate", _py("embedfit", "eval", "--store", str(cfg.store),
                                     *[a for m in cfg.models for a in ("--adapter", str(cfg.adapters / m))],
                                     "--out", str(cfg.report)), env)
                log.info("FULL REPORT after %.0f s: %s (press 'Reload report' on the page's Eval report tab)",
                         time.monotonic() - t0, cfg.report / "report.html")
            except DemoError as exc:  # the page keeps serving what phase 1 made, unless its server is gone
                _require_alive(server)
                log.error("%s. The page still serves %s; run `make demo` again to finish the rest.", exc, cfg.app_model)
        log.info("serving %s until Ctrl-C", url)
        while app.poll() is None:  # the page is only as alive as the Chroma server it searches through
            _require_alive(server)
            time.sleep(1)
        return app.returncode
    finally:
        _stop(app)
        _stop(server)


def parse_args(argv: list[str] | None = None) -> DemoConfig:
    d = DemoConfig()
    p = argparse.ArgumentParser(prog="python -m scripts.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=d.data, help="a folder, file or Hub dataset id (env EMBEDFIT_DATA)")
    p.add_argument("--store", type=Path, default=d.store)
    p.add_argument("--adapters", type=Path, default=d.adapters, help="one adapter folder per model goes here")
    p.add_argument("--report", type=Path, default=d.report)
    p.add_argument("--models", nargs="+", default=list(d.models))
    p.add_argument("--app-model", default=d.app_model, help="the model the page shows (made first)")
    p.add_argument("--split", type=float, nargs=3, default=list(d.split), metavar=("TRAIN", "DEV", "TEST"))
    p.add_argument("--limit", default=None,
                   help=f"questions to ingest, or 'all' (default: all; {DEFAULT_HUB_LIMIT} for a Hub dataset id)")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--page-only", action="store_true", help="only the app's model and the page (no report)")
    a = p.parse_args(argv)
    limit, all_data = None, False
    if a.limit not in (None, ""):
        if a.limit == "all":
            all_data = True
        else:
            try:
                limit = int(a.limit)
            except ValueError:
                raise InputError(f"--limit must be a number of questions or 'all', got {a.limit!r}") from None
    return DemoConfig(data=a.data, store=a.store, adapters=a.adapters, report=a.report, models=tuple(a.models),
                      app_model=a.app_model, split=tuple(a.split), limit=limit, all_data=all_data, port=a.port,
                      page_only=a.page_only)


def main(argv: list[str] | None = None) -> int:
    rc = 0

    def job() -> None:
        nonlocal rc
        rc = run_demo(parse_args(argv))

    return run_cli(job) or rc


if __name__ == "__main__":
    sys.exit(main())
