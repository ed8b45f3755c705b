"""The public Python API (`import embedfit as ef`): its names, their docstrings, and each call on real data.

Oracles: for `fit_vectors`, synthetic data whose answer is known by construction (queries are a fixed rotation of
their passages, so raw retrieval fails and a linear query map recovers it; queries equal to their passages, so
nothing can beat raw), scored by a plain numpy ranking written here; for the store calls, the command line
(`embedfit train` / `embedfit eval`) run on the same store, which must give the same numbers.
"""
from __future__ import annotations

import inspect
import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, metrics_without_timings

import embedfit as ef
from embedfit.adapters.cli import main as adapter_main
from embedfit.errors import InputError, OutputError
from embedfit.evaluation.cli import main as eval_main

MODEL = "all-MiniLM-L6-v2"


def test_all_names_resolve_and_say_how_to_use_them():
    assert ef.__all__[0] == "__version__" and len(ef.__all__) <= 15
    for name in ef.__all__[1:]:
        obj = getattr(ef, name)
        doc = inspect.getdoc(obj) or ""
        assert len(doc) > 40, name
        if inspect.isfunction(obj):  # the calls: how to call, what comes back, what is refused, an example
            for section in ("Args:", "Returns:", "Raises:", "Example:"):
                assert section in doc, (name, section)
    with pytest.raises(AttributeError):
        ef.no_such_name  # noqa: B018


def test_import_embedfit_loads_no_layer_until_a_name_is_used():
    code = ("import sys, embedfit; heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'chromadb', 'gradio', 'ray', 'openai', 'datasets', 'sentence_transformers')]; "
            "assert not heavy, heavy; assert [m for m in sys.modules if m.startswith('embedfit.')] == [], "
            "[m for m in sys.modules if m.startswith('embedfit.')]; embedfit.fit_vectors; "
            "assert 'embedfit.pipeline.vectors' in sys.modules; assert 'gradio' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# -- fit_vectors: your own vectors, no store ---------------------------------------------------------------

def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _mrr(Q: np.ndarray, P: np.ndarray, gold: np.ndarray) -> float:
    """MRR@10 by a plain ranking: the independent oracle."""
    order = np.argsort(-(_unit(Q) @ _unit(P).T), axis=1)[:, :10]
    return float(np.mean([1.0 / (list(row).index(g) + 1) if g in row else 0.0 for row, g in zip(order, gold)]))


def _rotated_task(seed: int, n_pass: int = 500, n_q: int = 400, d: int = 16, angle: float = 1.5):
    """Passages, and queries = (their passage) turned by a fixed rotation R (largest angle `angle` radians) + noise:
    raw cosine finds about half of them, a linear query map (R^-1) is the answer. 100 fresh queries of the same
    kind, never seen by the fit, score the result."""
    from scipy.linalg import expm

    rng = np.random.default_rng(seed)
    P = _unit(rng.normal(size=(n_pass, d)))
    S = rng.normal(size=(d, d))
    S = (S - S.T) / 2
    R = expm(S * angle / np.linalg.norm(S, 2))
    gold = rng.integers(0, n_pass, size=n_q)
    Q = _unit(P[gold] @ R + 0.3 * rng.normal(size=(n_q, d)) / np.sqrt(d))
    return P, Q[:300], gold[:300], Q[300:], gold[300:]


def test_fit_vectors_finds_the_linear_map_the_data_needs():
    P, Q, gold, Q_new, gold_new = _rotated_task(0)
    result = ef.fit_vectors(P, Q, [[int(g)] for g in gold], methods=("query",), folds=3, temperatures=(0.05,))
    assert result.helped and result.chosen.method == "query"
    raw, adapted = _mrr(Q_new, P, gold_new), _mrr(result.adapter.project_queries(Q_new), P, gold_new)
    # measured: 0.53 -> 0.61 (the default schedule is conservative: weight decay pulls toward the identity)
    assert raw < 0.7 and adapted > raw + 0.05, (raw, adapted)
    assert "query **chosen**" in result.table


def test_fit_vectors_keeps_the_identity_when_raw_is_already_right(tmp_path):
    rng = np.random.default_rng(1)
    P = _unit(rng.normal(size=(80, 12)))
    gold = rng.integers(0, 80, size=60)
    ids = [f"doc-{i}" for i in range(80)]
    result = ef.fit_vectors(P, P[gold] + 0.01 * rng.normal(size=(60, 12)), [[ids[g]] for g in gold],
                            passage_ids=ids, folds=3, epochs=3, temperatures=(0.05,))
    assert not result.helped and result.adapter.is_identity
    assert "identity **chosen**" in result.table
    result.save(tmp_path / "ad")  # no store: the folder alone
    assert ef.load_adapter(tmp_path / "ad").is_identity
    out = ef.export(result.adapter, "numpy", tmp_path / "np")
    assert json.loads((out / "export.json").read_text())["source"] is None


@pytest.mark.parametrize("call, message", [
    (lambda P, Q: ef.fit_vectors(P, Q[:, :4], [[0]] * 20), "passages are 8-d but queries 4-d"),
    (lambda P, Q: ef.fit_vectors(P, np.where(np.eye(20, 8) > 0, np.nan, Q), [[0]] * 20), "row 0 holds NaN"),
    (lambda P, Q: ef.fit_vectors(P, Q, [[0]] * 19), "19 entries for 20 queries"),
    (lambda P, Q: ef.fit_vectors(P, Q, [[0]] * 19 + [[]]), "query 19 has no positive"),
    (lambda P, Q: ef.fit_vectors(P, Q, [[0]] * 19 + [["nope"]]), "'nope' is not among the passage ids"),
    (lambda P, Q: ef.fit_vectors(P, Q, [[0]] * 19 + [[30]]), "neither a passage id nor a row"),
    (lambda P, Q: ef.fit_vectors(P, Q[:5], [[0]] * 5), "needs at least 10"),
    (lambda P, Q: ef.fit_vectors(P, Q, [[0]] * 20, epochz=3), "unknown fit option(s) epochz"),
])
def test_fit_vectors_refuses_bad_input_in_one_line(call, message):
    rng = np.random.default_rng(2)
    P, Q = rng.normal(size=(30, 8)), rng.normal(size=(20, 8))
    with pytest.raises(InputError, match=None) as exc:
        call(P, Q)
    assert message in str(exc.value)


# -- the store calls, against the command line ------------------------------------------------------------

def test_fit_evaluate_retrieve_export_match_the_commands(small_store, tmp_path):
    cfg, _ = small_store
    options = dict(methods=("memory", "query"), folds=3, epochs=4, max_epochs=4, temperatures=(0.05,),
                   alphas=(0.5, 1.0))
    result = ef.fit(cfg.store, MODEL, **options)
    assert result.store is not None and result.table.startswith("dev MRR@10")
    # the command runs the same selection: the same choice and the same dev numbers
    argv = ["train", "--store", str(cfg.store), "--out", str(tmp_path / "cli"), "--no-project", "--methods", "memory",
            "query", "--folds", "3", "--epochs", "4", "--max-epochs", "4", "--temperatures", "0.05", "--alphas",
            "0.5", "1.0"]
    assert adapter_main(argv) == 0
    cli = ef.load_adapter(tmp_path / "cli")
    assert cli.config.selection["chosen"] == result.adapter.config.selection["chosen"]
    assert cli.config.dev_metrics["selected"] == pytest.approx(result.adapter.config.dev_metrics["selected"])

    with pytest.raises(InputError, match="unknown fit option"):
        ef.fit(cfg.store, MODEL, fold=3)

    # evaluate an in-memory adapter: the same numbers as `embedfit eval` on the saved folder
    if result.adapter.moves_passages:  # its collection is written by save (or the numbers skip HNSW)
        result.save(tmp_path / "api")
    ev = ef.evaluate(cfg.store, [result.adapter], mse_baseline=False, plots=False, hnsw=False, bootstrap_resamples=200)
    assert "all-MiniLM-L6-v2: test split" in ev.summary() and "| raw |" in ev.summary()
    assert not (tmp_path / "report").exists()  # computing wrote nothing
    ev.write(tmp_path / "report")
    if not result.adapter.moves_passages:
        result.save(tmp_path / "api")
    assert eval_main(["--store", str(cfg.store), "--out", str(tmp_path / "cli-report"), "--adapter",
                      str(tmp_path / "api"), "--no-mse-baseline", "--no-plots", "--no-hnsw",
                      "--bootstrap-resamples", "200"]) == 0
    api_m = json.loads((tmp_path / "report" / "metrics.json").read_text())
    cli_m = json.loads((tmp_path / "cli-report" / "metrics.json").read_text())
    assert api_m["retrieval"]["adapted"] is not None
    # every number, interval and p-value (the same seed); not the measured costs (milliseconds vary run to run)
    assert metrics_without_timings(api_m) == metrics_without_timings(cli_m)
    assert set(api_m["costs"]) == set(cli_m["costs"]) and api_m["costs"]["raw"] == cli_m["costs"]["raw"]
    assert json.loads(json.dumps(ev.metrics)) == api_m
    with pytest.raises(OutputError):  # a folder that is not a report is not replaced
        ev.write(tmp_path / "api")

    # the Retriever from a folder path and an adapter path: the adapted top hit of a store query
    store_queries = ef.Store(cfg.store).load_queries()
    question = next(iter(store_queries.values()))
    found = ef.Retriever(cfg.store, adapter=tmp_path / "api").search(question, k=3)
    assert found.model == MODEL and len(found.raw.hits) == 3 and len(found.adapted.hits) == 3

    out = ef.export(tmp_path / "api", "numpy", tmp_path / "np", query_side_only=True)
    assert (out / "adapter.npz").exists()

