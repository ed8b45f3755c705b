"""Start the server (`serve`) with safe defaults.

- binds 127.0.0.1 unless told otherwise; `share=False` always (a GRADIO_SHARE variable cannot turn on a
  public link behind the user's back);
- a bounded queue: `concurrency` searches at a time (2 cores), at most `queue_size` waiting, then
  "queue full" instead of unbounded memory and latency;
- bounded session state: Gradio keeps the state of 10,000 sessions by default and every API call is a new
  session, so memory grew with every search (scripts/load_test.py measured ~85 MB per 1,000); we keep
  `state_sessions` (the page has no per-session state to lose);
- no analytics, no monitoring endpoint, no MCP server, no run history kept in the browser;
- files: Gradio serves only what the app itself created (its cache); the store, adapter and report
  folders and the repository are additionally on the block list, so even a future `allowed_paths`
  slip could not expose them.
"""
from __future__ import annotations

import inspect
import logging
from pathlib import Path

import gradio as gr

from app.cards import CSS
from app.config import AppConfig
from core.errors import InputError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]


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


def serve(demo: gr.Blocks, cfg: AppConfig, block: bool = True) -> str:
    """Launch `demo`; returns the local URL. With `block=False` the server runs in a background thread."""
    require_every_input(demo)
    demo.queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.queue_size, api_open=False)
    try:
        _, url, _ = demo.launch(
            server_name=cfg.host, server_port=cfg.port, share=False, inbrowser=False,
            prevent_thread_lock=not block, show_error=False, quiet=not block,
            blocked_paths=blocked_paths(cfg), max_file_size="1mb", enable_monitoring=False,
            ssr_mode=False, mcp_server=False, pwa=False, run_history=False, footer_links=["api"], css=CSS,
            state_session_capacity=cfg.state_sessions,
        )
    except OSError as exc:
        raise InputError(f"cannot listen on {cfg.host}:{cfg.port} ({exc}); pass another --port") from None
    return url
