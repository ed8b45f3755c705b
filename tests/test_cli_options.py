"""Each command's options are held to its config dataclass, so an option is not written by hand in three places
that drift: an option with no value given yields exactly the dataclass default, every option names a field,
and every field is an option unless it is listed here with the reason it is not."""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest

from embedfit.adapters import cli as adapters_cli
from embedfit.adapters.config import TrainConfig
from embedfit.app import cli as app_cli
from embedfit.app.config import AppConfig
from embedfit.evaluation import cli as eval_cli
from embedfit.evaluation.config import EvalConfig
from embedfit.pipeline import cli as ingest_cli
from embedfit.pipeline.config import IngestConfig

#: options named otherwise than their field (option dest -> field)
RENAMED = {"cache": "cache_dir", "no_cache": "cache_dir", "no_bm25": "bm25", "no_mse_baseline": "mse_baseline",
           "no_hnsw": "hnsw", "no_plots": "plots", "no_nudge": "nudge"}
#: options that are the command's own, not a setting of the run: -v, and train's what-to-do-with-the-result
COMMAND_ONLY = {"verbose", "command", "no_project", "fixed", "force"}
#: fields without an option, and why
NOT_OPTIONS = {
    IngestConfig: {},
    EvalConfig: {"plot_lines": "a figure detail (the latent-space lines), set from Python"},
    AppConfig: {name: "a page setting (the k slider's range and start, the examples shown, the sessions kept), set "
                      "from Python" for name in ("max_k", "default_k", "n_examples", "state_sessions")},
    TrainConfig: {
        "candidates": "selection tries --candidate-sets; a --fixed run uses the default (mined)",
        "keep_identity_candidate": "an ablation switch for studies; the product always keeps the identity",
        "lexical_prior": "set per training run by selection, from --lexical-priors (with --select-by fused)",
        "selection": "an ablation switch for studies (best epoch vs last)",
        "tune_fusion": "always on from the command; off for fit_vectors (no texts, no BM25)",
    },
}


def _subparser(p: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices[name]


def _dests(p: argparse.ArgumentParser) -> set[str]:
    return {a.dest for a in p._actions if a.dest != "help"}


@pytest.mark.parametrize("config, parser", [
    (IngestConfig, ingest_cli.parser()),
    (EvalConfig, eval_cli.parser()),
    (AppConfig, app_cli.parser()),
    (TrainConfig, _subparser(adapters_cli.parser(), "train")),
])
def test_every_option_is_a_field_and_every_field_an_option(config, parser):
    fields = {f.name for f in dataclasses.fields(config)}
    options = {RENAMED.get(d, d) for d in _dests(parser)} - (COMMAND_ONLY - fields)
    assert options - fields == set(), f"options that are no field: {options - fields}"
    missing = fields - options - set(NOT_OPTIONS[config])
    assert missing == set(), f"fields with no option and no reason: {missing}"


def test_options_left_out_give_the_dataclass_defaults(tmp_path):
    assert ingest_cli.parse_args(["--data", "x"]) == IngestConfig(data="x")
    assert eval_cli.parse_args([]) == EvalConfig()
    assert app_cli.parse_args([]) == AppConfig()
    a = adapters_cli.parse_args(["train", "--out", str(tmp_path / "ad")])
    assert adapters_cli.config_from_args(a) == TrainConfig(out=Path(tmp_path / "ad"))
