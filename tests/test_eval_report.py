"""The report layer on hand-built evaluations (no store): metrics.json contract, verdict words, formatting.

Also the small pure helpers eval uses: HNSW recall against exact search, balanced threshold pairs, and
the synthetic text-like vectors of the benchmark.
"""
from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import embedfit
from embedfit import atomic
from embedfit.adapters.adapter import Adapter, AdapterConfig
from embedfit.adapters.modules import build_module
from embedfit.evaluation.config import EvalConfig
from embedfit.evaluation.evaluate import _pairs
from embedfit.evaluation.report import (
    describe_change,
    main_table,
    metrics_json,
    report_md,
    verdict,
    write_reports,
)
from embedfit.evaluation.results import EvalOutcome, ModelEvaluation, SystemRun
from embedfit.evaluation.synthetic import TextLikeGenerator, TextLikeSpec, neighbour_stats
from embedfit.search.chroma_ann import recall_against_exact
from embedfit.types import TrainingExample

METRICS = ["Recall@1", "Recall@5", "Recall@10", "Recall@100", "MRR@10", "nDCG@10"]


def _adapter(name: str, identity: bool = False) -> Adapter:
    cfg = AdapterConfig(name=name, kind="linear", sides="query", dim_in=4, dim_out=4, base_model="m",
                        data_fingerprint="f", raw_collection="raw-m", identity=identity)
    return Adapter(cfg, build_module("linear", 4, 4))


def _system(key: str, level: float, delta: float = 0.0, p: float = 1.0, adapter: Adapter | None = None) -> SystemRun:
    vs_raw = {} if key == "raw" else {m: {"delta": delta, "ci95": (delta - 0.01, delta + 0.01), "p": p}
                                      for m in ("MRR@10", "nDCG@10", "Recall@10", "Recall@100")}
    return SystemRun(
        key=key, label=key, results={}, adapter=adapter, means={m: level + delta for m in METRICS},
        ci95={m: (level + delta - 0.05, level + delta + 0.05) for m in ("MRR@10", "nDCG@10", "Recall@10")},
        vs_raw=vs_raw,
        threshold={k: {"threshold": 0.5, "accuracy": 0.8, "se": 0.01, "dev_accuracy": 0.81, "n_pos": 10, "n_neg": 10}
                   for k in ("weak", "hard")})


def _evaluation(model: str = "m", adapters: int = 1) -> ModelEvaluation:
    systems = {"raw": _system("raw", 0.5)}
    for i in range(adapters):
        key = "adapted" if i == 0 else f"adapted:a{i}"
        systems[key] = _system(key, 0.5, 0.03, 0.004, _adapter(f"a{i}"))
    systems["mse_baseline"] = _system("mse_baseline", 0.5, -0.2, 0.0001)
    systems["bm25"] = replace(_system("bm25", 0.5, -0.1, 0.001), threshold={})
    return ModelEvaluation(model=model, dim=4, scope="test split", query_ids=["q1", "q2", "q3"], systems=systems)


def _outcome(*evs: ModelEvaluation, out: Path = Path("/nonexistent")) -> EvalOutcome:
    return EvalOutcome(config=EvalConfig(out=out), models=list(evs), seconds=1.0)


def test_single_model_single_adapter_is_exactly_the_contract():
    m = metrics_json(_outcome(_evaluation()))
    assert list(m) == ["n_queries", "model", "adapter", "retrieval", "ci95", "p_value_adapted_vs_raw", "threshold_accuracy",
                       "p_value_raw_bm25_vs_raw", "p_value_adapted_bm25_vs_raw", "p_value_raw_rrf_vs_raw",
                       "p_value_adapted_rrf_vs_raw", "p_value_nudge_n_vs_raw", "p_value_nudge_m_vs_raw", "fusion",
                       "vs_best_non_adapter", "seen_unseen", "seen_reason", "labels", "vs_raw", "costs", "decision",
                       "embedfit_version"]
    assert m["embedfit_version"] == embedfit.__version__
    assert m["n_queries"] == 3 and m["model"] == "m" and m["adapter"] == "a0"
    # every key always present; what was not computed (no hybrid systems in this evaluation) is null
    assert list(m["retrieval"]) == ["raw", "adapted", "bm25", "mse_baseline", "nudge_n", "nudge_m", "finetune", "raw_bm25",
                                    "adapted_bm25", "raw_rrf", "adapted_rrf"]
    assert all(list(v) == METRICS for k, v in m["retrieval"].items() if k in ("raw", "adapted", "bm25", "mse_baseline"))
    assert m["retrieval"]["raw_bm25"] is None and m["p_value_adapted_rrf_vs_raw"] is None and m["fusion"] == {}
    assert list(m["ci95"]) == list(m["retrieval"])
    assert m["ci95"]["adapted"]["MRR@10"] == [pytest.approx(0.48), pytest.approx(0.58)]
    assert m["p_value_adapted_vs_raw"] == {"MRR@10": 0.004, "nDCG@10": 0.004}
    assert m["threshold_accuracy"]["hard"] == {"raw": 0.8, "adapted": 0.8, "raw_se": 0.01, "adapted_se": 0.01}


def test_further_adapters_get_prefixed_keys():
    m = metrics_json(_outcome(_evaluation(adapters=2)))
    assert "adapted:a1" in m["retrieval"] and "adapted:a1" in m["ci95"]
    assert m["p_value_adapted:a1_vs_raw"] == {"MRR@10": 0.004, "nDCG@10": 0.004}
    assert {"adapted:a1", "adapted:a1_se"} <= set(m["threshold_accuracy"]["weak"])


def test_several_models_are_wrapped_by_name():
    m = metrics_json(_outcome(_evaluation("m1"), _evaluation("m2", adapters=0)))
    assert list(m) == ["models", "embedfit_version"] and list(m["models"]) == ["m1", "m2"]
    assert m["models"]["m2"]["adapter"] is None and m["models"]["m2"]["retrieval"]["adapted"] is None


@pytest.mark.parametrize("delta,p,word", [(0.03, 0.004, "**helped**"), (-0.03, 0.004, "**hurt**"),
                                          (0.03, 0.2, "**no significant difference**"),
                                          (-0.03, 0.06, "**no significant difference**")])
def test_verdict_words(delta, p, word):
    s = _system("adapted", 0.5, delta, p, _adapter("a"))
    assert verdict(s).startswith(word) or word in verdict(s)


def test_identity_adapter_is_said_plainly():
    s = _system("adapted", 0.5, 0.0, 1.0, _adapter("a", identity=True))
    assert "is the identity" in verdict(s) and "equal raw" in verdict(s)


def test_change_is_written_with_raw_beside_it():
    raw, s = _system("raw", 0.512), _system("adapted", 0.512, 0.033, 0.004, _adapter("a"))
    assert describe_change(raw, s, "MRR@10") == "MRR@10 0.512 → 0.545 (+0.033, 95% CI [+0.023, +0.043], p=0.004)"
    s.vs_raw["MRR@10"]["p"] = 0.0001
    assert "p<0.001" in describe_change(raw, s, "MRR@10")


def test_report_never_hides_a_loss():
    text = report_md(_outcome(_evaluation()))
    assert "the MSE cookbook baseline **hurt**: MRR@10 -0.200" in text
    assert "0.300 (-0.200)" in text  # the table shows the loss in place
    assert "**helped**" in text and "test split, 3 queries" in text
    assert "m: test split, 3 queries" in main_table(_evaluation())


def test_multi_model_report_has_a_summary_table():
    text = report_md(_outcome(_evaluation("m1"), _evaluation("m2")))
    assert "| model | queries | raw MRR@10 |" in text and "## Details: m1," in text and "## Details: m2," in text
    assert text.index("## Decision: m1") < text.index("## Decision: m2") < text.index("## Details: m1,")


def test_nan_becomes_null_and_files_are_valid_json(tmp_path):
    ev = _evaluation()
    ev.systems["raw"] = replace(ev.systems["raw"], hnsw={"collection": "c", "metrics": {m: 0.5 for m in METRICS},
                                                         "recall@10_vs_exact": float("nan")})
    write_reports(_outcome(ev, out=tmp_path), tmp_path)
    details = json.loads((tmp_path / "details.json").read_text())  # strict JSON has no NaN
    assert details["models"]["m"]["systems"]["raw"]["hnsw"]["recall@10_vs_exact"] is None
    assert json.loads((tmp_path / "metrics.json").read_text())["n_queries"] == 3
    assert atomic.json_safe({"a": [1.0, math.inf], "b": (math.nan,)}) == {"a": [1.0, None], "b": [None]}


# -- helpers ---------------------------------------------------------------------------------------------

def test_hnsw_recall_against_exact_by_hand():
    exact = {"q1": {f"p{i}": 1.0 - i / 100 for i in range(10)}, "q2": {"a": 0.9, "b": 0.8}}
    approx = {"q1": {f"p{i}": 1.0 - i / 100 for i in range(8)} | {"x": 0.1, "y": 0.05}, "q2": {"b": 0.8, "a": 0.9}}
    # q1 finds 8 of 10, q2 both of its 2
    assert recall_against_exact(approx, exact, k=10) == pytest.approx((0.8 + 1.0) / 2)
    assert recall_against_exact({}, exact, k=10) == 0.0


def test_threshold_pairs_are_balanced_per_query():
    ex = [TrainingExample("q1", "test", ("a", "b"), ("w1", "w2", "w3"), ("h1",)),
          TrainingExample("q2", "test", ("c",), ("w4",), ()),
          TrainingExample("q3", "dev", ("d",), ("w5",), ("h2",))]
    qrow = {"q1": 0, "q2": 1, "q3": 2}
    prow = {p: i for i, p in enumerate(["a", "b", "c", "d", "w1", "w2", "w3", "w4", "w5", "h1", "h2"])}
    weak = _pairs(ex, qrow, prow, "test", "weak", balanced=True)
    assert weak.pos_q.tolist() == [0, 0, 1] and weak.neg_p.tolist() == [prow["w1"], prow["w2"], prow["w4"]]
    hard = _pairs(ex, qrow, prow, "test", "hard", balanced=True)  # q2 has no hard negative: left out
    assert hard.pos_q.tolist() == [0] and hard.pos_p.tolist() == [prow["a"]] and hard.neg_p.tolist() == [prow["h1"]]
    every = _pairs(ex, qrow, prow, "test", "weak", balanced=False)
    assert len(every.pos_q) == 3 and len(every.neg_q) == 4


def test_synthetic_vectors_are_deterministic_unit_and_text_like():
    gen = TextLikeGenerator(TextLikeSpec.default(), seed=3)
    a, b = gen.block(2000, 0, 5), gen.block(2000, 0, 5)
    assert np.array_equal(a, b) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert not np.array_equal(a, gen.block(2000, 1, 5))
    stats = neighbour_stats(a)
    uniform = neighbour_stats(np.random.default_rng(0).normal(size=(2000, 384)).astype(np.float32))
    assert stats["mean_nn_cosine"] > uniform["mean_nn_cosine"] + 0.2  # neighbourhoods, unlike random points
    assert 0.0 < stats["mean_random_pair_cosine"] < 0.2


def test_synthetic_spec_fits_real_shape():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3000, 32)) * np.linspace(2, 0.1, 32) + 1.0
    spec = TextLikeSpec.fit(x, rank=8)
    assert spec.basis.shape == (8, 32) and np.allclose(spec.basis @ spec.basis.T, np.eye(8), atol=1e-4)
    assert spec.scales[0] == pytest.approx(2.0, rel=0.1) and np.all(np.diff(spec.scales) <= 1e-6)
    again = TextLikeSpec.from_arrays(spec.to_arrays())
    assert np.array_equal(again.basis, spec.basis) and again.noise == pytest.approx(spec.noise)
