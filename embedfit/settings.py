"""Project-wide settings: where each stage reads and writes by default, the environment variable that
overrides each default, and the cut-offs every stage scores at.

One home, so an option is not spelled (and defaulted) differently in three CLIs: every config dataclass
takes its path defaults from the functions here, and every metric list comes from the constants here.

    setting          env var               default
    data set         EMBEDFIT_DATA         the Hub dataset `sentence-transformers/natural-questions` (needs internet)
    store            EMBEDFIT_STORE        .data/store
    embedding cache  EMBEDFIT_CACHE        .data/cache
    adapters         EMBEDFIT_ADAPTERS     .data/adapters  (one folder per model: .data/adapters/<model>)
    eval report      EMBEDFIT_REPORT       .data/report
    built models     EMBEDFIT_MODEL_CACHE  ~/.cache/embedfit/models  (ONNX graphs made on first use: int8, L6 export)
    progress bars    EMBEDFIT_PROGRESS     1 (0 silences them)
    shared data      SHARED_DATA           ../shared/data beside the repository (benchmarks, tests, CI: nq/, scifact/)

Paths are resolved when a config is built (not at import), so a test or a shell that sets the variable
afterwards is honoured. The names the tool had before it was called embedfit (`NQ_STORE`, ...) are no longer
read; one set without its new name gets a warning saying which to set.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
DATA_HOME = Path(".data")

#: the dataset ingest loads when neither --data nor EMBEDFIT_DATA is given (a Hub id: needs internet)
DEFAULT_DATASET = "sentence-transformers/natural-questions"

#: the k values of every ranking metric (Recall@k for each; MRR and nDCG at 10; top 100 retrieved)
K_VALUES = (1, 5, 10, 100)
#: the metrics every system gets, in report order (names as `embedfit.metrics.retrieval` computes them)
METRICS = ("Recall@1", "Recall@5", "Recall@10", "Recall@100", "MRR@10", "nDCG@10")
#: the metric the verdict in words and the decision card are about ("helped / hurt / no significant difference")
PRIMARY_METRIC = "MRR@10"
#: how many passages a system retrieves per query: enough for the largest k
TOP_K = max(K_VALUES)


#: our variables and the names they had before the tool was called embedfit (no longer read: a warning says so)
RENAMED_ENV = {"EMBEDFIT_DATA": "NQ_DATA", "EMBEDFIT_STORE": "NQ_STORE", "EMBEDFIT_CACHE": "NQ_CACHE",
               "EMBEDFIT_ADAPTERS": "NQ_ADAPTERS", "EMBEDFIT_REPORT": "NQ_REPORT",
               "EMBEDFIT_MODEL_CACHE": "NQ_MODEL_CACHE", "EMBEDFIT_PROGRESS": "NQ_PROGRESS"}


#: the old names already warned about (once per process)
_warned: set[str] = set()


def env(var: str) -> str:
    """The stripped value of our environment variable `var` ("" when unset), warning once when only its old name
    is set: a shell profile from before the rename would otherwise be ignored without a word."""
    value = os.environ.get(var, "").strip()
    old = RENAMED_ENV.get(var)
    if not value and old and os.environ.get(old, "").strip() and old not in _warned:
        _warned.add(old)
        log.warning("%s is no longer read: set %s instead (embedfit's name for it)", old, var)
    return value



#: optional libraries and the extra that installs each (pyproject.toml's optional-dependencies)
EXTRAS = {"gradio": "app", "gradio_client": "app", "ray": "ray", "openai": "openai", "tiktoken": "openai",
          "datasets": "hub"}


def install_hint(module: str) -> str | None:
    """`pip install "embedfit[EXTRA]"` for an optional library of ours (`ray.data` -> the `ray` extra), else None."""
    extra = EXTRAS.get(module.split(".")[0])
    return f'pip install "embedfit[{extra}]"' if extra else None


def _env_path(var: str, default: Path) -> Path:
    value = env(var)
    return Path(value) if value else default


def default_data() -> str:
    """`--data` default: EMBEDFIT_DATA, else the Hub dataset (a folder, a file or a dataset id)."""
    return env("EMBEDFIT_DATA") or DEFAULT_DATASET


def default_store() -> Path:
    return _env_path("EMBEDFIT_STORE", DATA_HOME / "store")


def default_cache() -> Path:
    return _env_path("EMBEDFIT_CACHE", DATA_HOME / "cache")


def default_adapters() -> Path:
    """The folder holding one adapter per model (`make demo` trains into `<this>/<model>`)."""
    return _env_path("EMBEDFIT_ADAPTERS", DATA_HOME / "adapters")


def default_report() -> Path:
    return _env_path("EMBEDFIT_REPORT", DATA_HOME / "report")


def default_model_cache() -> Path:
    """Where model files we build ourselves (the int8 ONNX graphs, the fp32 ONNX export of all-MiniLM-L6-v2)
    are kept. A user cache rather than `.data/`: they depend only on the installed packages, not on a project's
    data, so every checkout and store on this machine can share them."""
    return _env_path("EMBEDFIT_MODEL_CACHE", Path("~/.cache/embedfit/models")).expanduser()


def shared_data(name: str) -> Path:
    """A shared read-only dataset folder (`nq`, `scifact`) used by tests, benchmarks and CI.

    `<NAME>_DATA` (NQ_DATA, SCIFACT_DATA) wins when it names a folder; else `SHARED_DATA/<name>`; else
    `../shared/data/<name>` beside the repository, where CI puts it.
    """
    own = os.environ.get(f"{name.upper()}_DATA", "").strip()
    if own and Path(own).is_dir():
        return Path(own).resolve()
    root = _env_path("SHARED_DATA", REPO.parent / "shared" / "data")
    return (root / name).resolve()


def with_options(base, options: dict, reserved: set[str], call: str):
    """`dataclasses.replace(base, **options)` for a Python API call's `**options`, refusing (InputError) a name
    that is no field of the config, or one the call's own arguments set (`reserved`): a typo costs one line
    listing the names it accepts, not a silently ignored setting."""
    import dataclasses

    from embedfit.errors import InputError

    known = {f.name for f in dataclasses.fields(base)} - reserved
    wrong = sorted(set(options) - known)
    if wrong:
        raise InputError(f"unknown {call} option(s) {', '.join(wrong)}; known: {', '.join(sorted(known))}")
    return dataclasses.replace(base, **options)
