"""Start the server (`serve`) with safe defaults.

- binds 127.0.0.1 unless told otherwise; `share=False` always (a GRADIO_SHARE variable cannot turn on a
  public link behind the user's back);
- a bounded queue: `concurrency` searches at a time (2 cores), at most `queue_size` waiting, then
  "queue full" instead of unbounded memory and latency;
- bounded session state: Gradio keeps the state of 10,000 sessions by default and every API call is a new
  session, so memory grew with every search (scripts/load_test.py measured ~85 MB per 1,000); we keep
  `state_sessions` (the page has no per-session state to lose);
- bounded queue bookkeeping: Gradio 6's queue keeps, per session, a set of pending event ids (never
  removed, and scanned linearly by every REST result request), a message queue (up to 2,000 sessions) and
  10,000 analytics records; every API call is a new session, so memory and latency grew with every search.
  `IdleSessionPruner` drops the entries of sessions with nothing pending after each request, and the
  analytics are capped (`ANALYTICS_EVENTS`; monitoring is off, nothing reads them);
- no analytics, no monitoring endpoint, no MCP server, no run history kept in the browser;
- files: Gradio serves only what the app itself created (its cache); the store, adapter and report
  folders and the repository are additionally on the block list, so even a future `allowed_paths`
  slip could not expose them.
"""
from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import gradio as gr

from embedfit.app.cards import CSS
from embedfit.app.config import AppConfig
from embedfit.errors import InputError
from embedfit.report.render import CSS as REPORT_CSS
from embedfit.settings import REPO

log = logging.getLogger(__name__)



def blocked_paths(cfg: AppConfig) -> list[str]:
    """Folders Gradio must never serve: ours, and the repository unless Gradio's own cache lives inside it."""
    from gradio.utils import get_upload_folder

    paths = [Path(cfg.store), cfg.adapter_dir(), Path(cfg.report)]
    cache = Path(get_upload_folder()).resolve()
    if not cache.is_relative_to(REPO):
        paths.append(REPO)
    return [str(p.resolve()) for p in paths if not cache.is_relative_to(p.resolve())]


def require_every_input(demo: gr.Blocks) -> None:
    """A call with too few inputs gets a message that says what the endpoint takes.

    Gradio checks the count before our handler runs and raises a plain ValueError, which (with
    `show_error=False`, so that internals never reach a caller) arrives as `{"error": null}` plus a
    traceback in the log. A `gr.Error` is the one kind of error Gradio always passes on, so the check is
    redone here with one.
    """
    def validate_inputs(block_fn, inputs: list) -> None:
        wanted = block_fn.inputs
        if len(inputs) < len(wanted):
            try:
                params = list(inspect.signature(block_fn.fn).parameters)
            except (TypeError, ValueError):
                params = []
            names = ", ".join(params if len(params) == len(wanted) else (f"input {i + 1}" for i in range(len(wanted))))
            raise gr.Error(f"/{block_fn.api_name or block_fn.name} takes {len(wanted)} inputs ({names}); "
                           f"got {len(inputs)}", print_exception=False)

    demo.validate_inputs = validate_inputs


#: analytics records Gradio's queue keeps (its default 10,000; nothing reads them with monitoring off)
ANALYTICS_EVENTS = 256


def prune_idle_sessions(queue: Any) -> int:
    """Forget the queue bookkeeping of sessions with nothing pending; returns how many were dropped.

    A session is idle when every event it queued has had its completion delivered (its pending-id set is
    empty) and no message waits for it. Such a session's next event recreates both entries (Gradio's
    `Queue.push` does), so nothing a client can still ask for is lost. Must run on the server's event loop,
    where Gradio itself reads and writes these dicts. A Gradio without these attributes makes it a no-op.
    """
    ids = getattr(queue, "pending_event_ids_session", None)
    messages = getattr(queue, "pending_messages_per_session", None)
    if not isinstance(ids, dict) or not isinstance(messages, dict):
        return 0
    idle = [s for s in set(ids) | set(messages)
            if not ids.get(s) and (s not in messages or messages[s].empty())]
    for s in idle:
        ids.pop(s, None)
        messages.pop(s, None)
    return len(idle)


class IdleSessionPruner:
    """ASGI middleware: after each HTTP request (a search's result stream included) prune idle sessions,
    so the queue holds only sessions with work in flight however many searches have been served."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            server_app = scope.get("app")
            if scope.get("type") == "http" and server_app is not None and hasattr(server_app, "get_blocks"):
                prune_idle_sessions(getattr(server_app.get_blocks(), "_queue", None))


def serve(demo: gr.Blocks, cfg: AppConfig, block: bool = True) -> str:
    """Launch `demo`; returns the local URL. With `block=False` the server runs in a background thread."""
    from starlette.middleware import Middleware

    require_every_input(demo)
    demo.queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.queue_size, api_open=False)
    if hasattr(demo._queue, "ANALYTICS_MAX_EVENTS"):
        demo._queue.ANALYTICS_MAX_EVENTS = ANALYTICS_EVENTS
    try:
        _, url, _ = demo.launch(
            server_name=cfg.host, server_port=cfg.port, share=False, inbrowser=False,
            prevent_thread_lock=not block, show_error=False, quiet=not block,
            blocked_paths=blocked_paths(cfg), max_file_size="1mb", enable_monitoring=False,
            ssr_mode=False, mcp_server=False, pwa=False, run_history=False, footer_links=["api"], css=CSS + REPORT_CSS,
            state_session_capacity=cfg.state_sessions,
            app_kwargs={"middleware": [Middleware(IdleSessionPruner)]},
        )
    except OSError as exc:
        raise InputError(f"cannot listen on {cfg.host}:{cfg.port} ({exc}); pass another --port") from None
    return url
