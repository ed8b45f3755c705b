"""Project-wide settings: where each stage reads and writes by default, the environment variable that
overrides each default, and the cut-offs every stage scores at.

One home, so an option is not spelled (and defaulted) differently in three CLIs: every config dataclass
takes its path defaults from the functions here, and every metric list comes from the constants here.

    setting          env var        default
    data set         NQ_DATA        the Hub dataset `sentence-transformers/natural-questions` (needs internet)
    store            NQ_STORE       .data/store
    embedding cache  NQ_CACHE       .data/cache
    adapters         NQ_ADAPTERS    .data/adapters  (one folder per model: .data/adapters/<model>)
    eval report      NQ_REPORT      .data/report
    built models     NQ_MODEL_CACHE ~/.cache/nq-retrieval/models  (ONNX graphs made on first use: int8, L6 export)
    shared data      SHARED_DATA    ../shared/data beside the repository (benchmarks, tests, CI: nq/, scifact/)

Paths are resolved when a config is built (not at import), so a test or a shell that sets the variable
afterwards is honoured.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA_HOME = Path(".data")

#: the dataset ingest loads when neither --data nor NQ_DATA is given (a Hub id: needs internet)
DEFAULT_DATASET = "sentence-transformers/natural-questions"

#: the k values of every ranking metric (Recall@k for each; MRR and nDCG at 10; top 100 retrieved)
K_VALUES = (1, 5, 10, 100)
#: the metrics every system gets, in report order (names as `embedfit.metrics.retrieval` computes them)
METRICS = ("Recall@1", "Recall@5", "Recall@10", "Recall@100", "MRR@10", "nDCG@10")
#: how many passages a system retrieves per query: enough for the largest k
TOP_K = max(K_VALUES)


def _env_path(var: str, default: Path) -> Path:
    value = os.environ.get(var, "").strip()
    return Path(value) if value else default


def default_data() -> str:
    """`--data` default: NQ_DATA, else the Hub dataset (a folder, a file or a dataset id)."""
    return os.environ.get("NQ_DATA", "").strip() or DEFAULT_DATASET


def default_store() -> Path:
    return _env_path("NQ_STORE", DATA_HOME / "store")


def default_cache() -> Path:
    return _env_path("NQ_CACHE", DATA_HOME / "cache")


def default_adapters() -> Path:
    """The folder holding one adapter per model (`make demo` trains into `<this>/<model>`)."""
    return _env_path("NQ_ADAPTERS", DATA_HOME / "adapters")


def default_report() -> Path:
    return _env_path("NQ_REPORT", DATA_HOME / "report")


def default_model_cache() -> Path:
    """Where model files we build ourselves (the int8 ONNX graphs, the fp32 ONNX export of all-MiniLM-L6-v2)
    are kept. A user cache rather than `.data/`: they depend only on the installed packages, not on a project's
    data, so every checkout and store on this machine can share them."""
    return _env_path("NQ_MODEL_CACHE", Path("~/.cache/nq-retrieval/models")).expanduser()


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
