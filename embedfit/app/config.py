"""Settings of one app run (`embedfit app` fills this; tests build it directly)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from embedfit.embed.registry import DEFAULT_MODEL, check_device
from embedfit.errors import InputError
from embedfit.search.retriever import DEFAULT_MAX_CHARS, DEFAULT_MAX_K
from embedfit.settings import default_adapters, default_report, default_store


@dataclass
class AppConfig:
    store: Path = field(default_factory=default_store)
    model: str = DEFAULT_MODEL
    #: None: `<adapters>/<model>` (env EMBEDFIT_ADAPTERS, default .data/adapters), where `make demo` puts the adapter it trains
    adapter: Path | None = None
    report: Path = field(default_factory=default_report)
    host: str = "127.0.0.1"
    port: int = 7860
    chroma_host: str | None = None
    chroma_port: int | None = None
    #: the handler's limit on question length (the textbox limit is only a convenience in the browser)
    max_chars: int = DEFAULT_MAX_CHARS
    max_k: int = DEFAULT_MAX_K
    default_k: int = 10
    #: searches running at once (2 cores: more only makes each one slower) and waiting at most
    concurrency: int = 2
    queue_size: int = 32
    n_examples: int = 8
    #: browser/API sessions whose Gradio state is kept in memory (Gradio's default, 10,000, let memory grow by about
    #: 85 KB per API call up to ~1 GB: every `/search` call over the REST API is a new session). The page keeps no
    #: per-session state of its own, so an evicted session simply starts a fresh one on its next event.
    state_sessions: int = 64
    #: torch threads for the query embedding. One short question gains nothing from a second thread, and on a
    #: busy 2-core machine two threads spin against each other: measured 24 ms vs 490 ms p50 per question here.
    torch_threads: int = 1
    #: where a sentence-transformers model embeds questions: auto (CUDA when present), cpu, cuda, cuda:N, mps
    device: str = "auto"

    def validate(self) -> None:
        """Every option checked in one place (the CLI turns a failure into its usage error)."""
        check_device(self.device)
        if not 0 < self.port < 65536:
            raise InputError("--port must be between 1 and 65535")
        for name in ("max_chars", "max_k", "default_k", "concurrency", "queue_size", "torch_threads", "state_sessions"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be positive")
        if self.default_k > self.max_k:
            raise InputError(f"default_k ({self.default_k}) must not exceed max_k ({self.max_k})")

    def adapter_dir(self) -> Path:
        return self.adapter if self.adapter is not None else default_adapters() / self.model
