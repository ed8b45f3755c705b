"""Our own error types.

Every failure a user can cause (bad file, wrong model, busy store, no network) raises a subclass of
`EmbedfitError` whose message says what went wrong and what to do. CLIs print that message and exit
non-zero instead of a traceback; anything else is a bug.
"""
from __future__ import annotations

from pathlib import Path


class EmbedfitError(Exception):
    """Base of every error we raise on purpose; the message is meant for the user."""


class DataError(EmbedfitError):
    """An input file (or dataset) cannot be read as the format it claims to be."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(where + message)


class OfflineError(EmbedfitError):
    """Something needs the internet (a hub model or dataset) and the internet is not reachable."""


class UnknownModelError(EmbedfitError):
    """The model name is neither a known model, a local path, nor a hub id."""


class EmbeddingError(EmbedfitError):
    """An embedding backend failed (after retries, where it retries)."""


class StoreError(EmbedfitError):
    """The store (Chroma plus our side files) is missing, inconsistent or cannot be opened."""


class StoreBusyError(StoreError):
    """Another process holds the embedded store; Chroma's local store is not process-safe."""


class MismatchError(EmbedfitError):
    """Embeddings, collections or adapters of different models, dimensions or data were about to be mixed."""


class InputError(EmbedfitError):
    """A user-supplied value (question text, CLI option) is not acceptable."""


class OutputError(EmbedfitError):
    """An output path cannot be written, or holds something that is not ours to replace."""
