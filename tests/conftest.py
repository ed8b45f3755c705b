"""Test settings shared by every test: offline flags, the shared NQ data, quiet progress bars."""
from __future__ import annotations

import os
from pathlib import Path

for _k, _v in {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "GRADIO_ANALYTICS_ENABLED": "False",
    "ANONYMIZED_TELEMETRY": "False",
    "EMBEDFIT_PROGRESS": "0",
    "TOKENIZERS_PARALLELISM": "false",
}.items():
    os.environ.setdefault(_k, _v)

import pytest  # noqa: E402

from embedfit.settings import shared_data  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "artifacts" / "tests"


def nq_data_dir() -> Path:
    """`NQ_DATA`, else ../shared/data/nq beside the repo (as in CI): `embedfit.settings.shared_data`."""
    return shared_data("nq")


@pytest.fixture(scope="session")
def nq_dir() -> Path:
    path = nq_data_dir()
    if not (path / "corpus.jsonl").exists():
        pytest.fail(f"shared NQ data not found at {path}; set NQ_DATA to the folder with corpus.jsonl")
    return path


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


SMALL_LIMIT = 300


def build_small_store(root: Path, model: str = "all-MiniLM-L6-v2", limit: int = SMALL_LIMIT, **overrides):
    """A real store from the first `limit` shared NQ queries (used by adapter, eval and app tests)."""
    from embedfit.pipeline.config import IngestConfig
    from embedfit.pipeline.ingest import run_ingest

    cfg = IngestConfig(data=str(nq_data_dir()), store=root / "store", model=model, limit=limit,
                       cache_dir=root / "cache", **overrides)
    return cfg, run_ingest(cfg)


@pytest.fixture(scope="session")
def small_store(tmp_path_factory):
    """(IngestConfig, summary) of a 300-query all-MiniLM-L6-v2 store shared by the whole session (read-only!)."""
    return build_small_store(tmp_path_factory.mktemp("small"))


def metrics_without_timings(m: dict) -> dict:
    """A metrics.json object without what eval measures in time (each system's cost, and the decision card's):
    two runs on the same data agree on everything else, to the last digit."""
    return {k: ({**v, "cost": None} if k == "decision" else v) for k, v in m.items() if k != "costs"}
