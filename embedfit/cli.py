"""The one command, `embedfit SUBCOMMAND [options]` (also `embedfit`).

Each subcommand is its stage's own command-line module, called with the rest of the arguments; only the one named is
imported, so `embedfit --help` works without the optional extras (gradio for `app`, ray for `ingest --engine ray`).
"""
from __future__ import annotations

import importlib
import sys

from embedfit import __version__
from embedfit.settings import install_hint

#: subcommand -> (module whose `main(argv)` runs it, arguments put before the user's, one line of help)
COMMANDS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "ingest": ("embedfit.pipeline.cli", (), "load a dataset, embed it (cached), store it in Chroma, mine negatives, "
                                            "build the BM25 index"),
    "train": ("embedfit.adapters.cli", ("train",), "select and fit the customization (identity, query memory, query "
                                                   "adapter, both) on the store's frozen embeddings"),
    "project": ("embedfit.adapters.cli", ("project",), "write the projected collection of an adapter that moves "
                                                       "passages"),
    "export": ("embedfit.adapters.cli", ("export",), "write an adapter for numpy, sentence-transformers, Chroma or "
                                                     "LlamaIndex"),
    "grid": ("embedfit.adapters.cli", ("grid",), "train a grid of fixed settings and print a table"),
    "eval": ("embedfit.evaluation.cli", (), "score raw, customized and baseline systems with intervals; write the "
                                            "report (also: eval learning-curve, eval dims)"),
    "serve": ("embedfit.store.cli", (), "run a Chroma server for a store (it holds the store's lock), so the app "
                                        "and a writer can use it at once"),
    "app": ("embedfit.app.cli", (), "serve the page that shows raw and customized retrieval side by side"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items())
    return (f"usage: embedfit SUBCOMMAND [options]   (embedfit {__version__})\n\n"
            f"subcommands:\n{rows}\n\n`embedfit SUBCOMMAND --help` lists a subcommand's options.")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(f"embedfit {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"embedfit: unknown subcommand {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, prefix, _ = COMMANDS[argv[0]]
    try:
        return importlib.import_module(module).main([*prefix, *argv[1:]])
    except ModuleNotFoundError as exc:
        hint = install_hint(exc.name or "")
        if hint is None:
            raise
        print(f"error: embedfit {argv[0]} needs {exc.name}, which is not installed: {hint}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
