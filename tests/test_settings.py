"""embedfit.settings: every default path honours its environment variable, in every CLI config, read when the
config is built (not at import)."""
from __future__ import annotations

from pathlib import Path

import pytest

from embedfit import settings
from embedfit.adapters.config import TrainConfig
from embedfit.app.config import AppConfig
from embedfit.evaluation.config import EvalConfig
from embedfit.metrics.retrieval import retrieval_metrics
from embedfit.pipeline.cli import main as ingest_main
from embedfit.pipeline.config import IngestConfig


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("EMBEDFIT_DATA", "EMBEDFIT_STORE", "EMBEDFIT_CACHE", "EMBEDFIT_ADAPTERS", "EMBEDFIT_REPORT", "NQ_DATA",
                "NQ_STORE", "SHARED_DATA", "SCIFACT_DATA"):
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


def test_defaults_without_environment(clean_env):
    assert IngestConfig().data == "sentence-transformers/natural-questions"
    assert IngestConfig().store == Path(".data/store") == TrainConfig().store == EvalConfig().store == AppConfig().store
    assert IngestConfig().cache_dir == Path(".data/cache") == EvalConfig().cache_dir
    assert EvalConfig().out == Path(".data/report") == AppConfig().report
    assert AppConfig(model="m").adapter_dir() == Path(".data/adapters/m")


def test_every_config_honours_its_variable(clean_env, tmp_path):
    clean_env.setenv("EMBEDFIT_DATA", "/data/x")
    clean_env.setenv("EMBEDFIT_STORE", str(tmp_path / "s"))
    clean_env.setenv("EMBEDFIT_CACHE", str(tmp_path / "c"))
    clean_env.setenv("EMBEDFIT_ADAPTERS", str(tmp_path / "a"))
    clean_env.setenv("EMBEDFIT_REPORT", str(tmp_path / "r"))
    assert IngestConfig().data == "/data/x"
    for cfg in (IngestConfig(), TrainConfig(), EvalConfig(), AppConfig()):
        assert cfg.store == tmp_path / "s", type(cfg).__name__
    assert IngestConfig().cache_dir == tmp_path / "c" == EvalConfig().cache_dir
    assert EvalConfig().out == tmp_path / "r" == AppConfig().report
    assert AppConfig(model="m").adapter_dir() == tmp_path / "a" / "m"


def test_an_old_variable_is_not_read_and_says_which_to_set(clean_env, tmp_path, caplog):
    clean_env.setenv("NQ_STORE", str(tmp_path / "old"))
    clean_env.setattr(settings, "_warned", set())
    with caplog.at_level("WARNING"):
        assert IngestConfig().store == Path(".data/store")
        assert TrainConfig().store == Path(".data/store")
    said = [r.getMessage() for r in caplog.records if "NQ_STORE" in r.getMessage()]
    assert said == ["NQ_STORE is no longer read: set EMBEDFIT_STORE instead (embedfit's name for it)"]  # once
    clean_env.setenv("EMBEDFIT_STORE", str(tmp_path / "new"))
    assert IngestConfig().store == tmp_path / "new"


def test_blank_variable_means_default(clean_env):
    clean_env.setenv("EMBEDFIT_STORE", "  ")
    assert IngestConfig().store == Path(".data/store")


def test_shared_data_resolution(clean_env, tmp_path):
    own = tmp_path / "mine"
    own.mkdir()
    assert settings.shared_data("scifact") == (settings.REPO.parent / "shared" / "data" / "scifact").resolve()
    clean_env.setenv("SHARED_DATA", str(tmp_path))
    assert settings.shared_data("scifact") == (tmp_path / "scifact").resolve()
    clean_env.setenv("SCIFACT_DATA", str(own))
    assert settings.shared_data("scifact") == own.resolve()
    clean_env.setenv("NQ_DATA", str(tmp_path / "pairs.jsonl"))  # a file, not a folder: not a shared folder
    assert settings.shared_data("nq") == (tmp_path / "nq").resolve()


def test_metric_lists_agree():
    qrels = {"q": {"p": 1}}
    got = retrieval_metrics(qrels, {"q": {"p": 1.0}}, settings.K_VALUES)
    assert set(settings.METRICS) <= set(got)
    assert settings.TOP_K == max(settings.K_VALUES) == 100


@pytest.mark.parametrize("args, message", [
    (["--split", "0.5", "0.5", "0.5"], "--split takes three non-negative fractions summing to 1"),
    (["--limit", "0"], "--limit must be positive"),
    (["--k-hard", "-1"], "--k-hard must not be negative"),
    (["--hard-margin", "1.5"], "--hard-margin must be a fraction"),
    (["--near-dup", "-0.1"], "--near-dup must be a fraction"),
    (["--min-words", "10", "--max-words", "5"], "need 1 <= --min-words <= --max-words"),
    (["--batch-size", "0"], "--batch-size must be positive"),
])
def test_ingest_options_are_checked_before_any_work(tmp_path, capsys, args, message):
    """One line and exit 2, before the store folder is even created (a ValueError traceback before)."""
    store = tmp_path / "store"
    assert ingest_main(["--data", str(tmp_path / "no-such-data"), "--store", str(store), *args]) == 2
    assert message in capsys.readouterr().err
    assert not store.exists()
