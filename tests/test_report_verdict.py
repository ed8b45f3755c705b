"""The verdict at a glance (issue 20): the decision card's rule on hand-made numbers, the names systems get, the
true seen / unseen reason, the forest plot against metrics.json, the measured costs against the files they
count, and report.html as one self-contained file.

The eval-run checks use the report `embedfit eval` really writes for a small real store (NQ sample) with a
query-only adapter (`app_support.make_report`)."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest
from app_support import make_adapter, make_report

from embedfit.adapters.adapter import Adapter, AdapterConfig, PassageMemory
from embedfit.adapters.modules import build_module
from embedfit.evaluation import plots
from embedfit.evaluation.evaluate import _why_seen
from embedfit.evaluation.names import adapter_name, fusion_name, unique
from embedfit.report.decision import decide
from embedfit.report.render import card_html, card_markdown

MODEL = "all-MiniLM-L6-v2"


# -- the decision rule, by hand ----------------------------------------------------------------------------

def _obj(changes: dict[str, tuple[float, float]], unseen: dict[str, tuple[float, float]] | None = None,
         vs_plain: dict[str, tuple[str, float, float]] | None = None) -> dict:
    """A metrics object: raw at 0.5, each system at 0.5 + delta with the given p; optional unseen changes and
    comparisons with the best system without an adapter."""
    retrieval = {"raw": {"MRR@10": 0.5}}
    vs_raw = {}
    for k, (d, p) in changes.items():
        retrieval[k] = {"MRR@10": 0.5 + d}
        vs_raw[k] = {"MRR@10": {"delta": d, "ci95": [d - 0.02, d + 0.02], "p": p}}
    su = {"n": {"seen": 10, "unseen": 20}}
    for k, (d, p) in (unseen or {}).items():
        su[k] = {"unseen": {"means": {"MRR@10": 0.5 + d}, "ci95": {"MRR@10": [0, 1]},
                            "vs_raw": {"MRR@10": {"delta": d, "ci95": [d - 0.01, d + 0.01], "p": p}}}}
    fusion = {k: {"method": "zscore", "weight": 0.5, "n": 100} for k in retrieval if k.endswith(("_bm25", "_rrf"))}
    return {"model": "m", "n_queries": 30, "retrieval": retrieval, "vs_raw": vs_raw, "seen_unseen": su, "fusion": fusion,
            "labels": {k: f"label of {k}" for k in retrieval},
            "vs_best_non_adapter": {k: {"system": s, "MRR@10": {"delta": d, "p": p}}
                                    for k, (s, d, p) in (vs_plain or {}).items()},
            "costs": {k: {"fit_seconds": 3.0, "query_ms": 0.2, "storage_bytes": 2048, "storage": "x"} for k in retrieval}}


def test_a_significant_adapter_that_spares_new_queries_is_recommended_with_its_steps():
    obj = _obj({"raw_bm25": (0.04, 0.01), "adapted": (0.05, 0.001), "adapted_bm25": (0.09, 0.0001)},
               unseen={"adapted_bm25": (0.01, 0.4)}, vs_plain={"adapted_bm25": ("raw_bm25", 0.05, 0.002)})
    d = decide(obj)
    assert d["recommended"] == "adapted_bm25" and not d["keep_raw"]
    assert d["gain"]["delta"] == pytest.approx(0.09) and d["gain"]["p"] == 0.0001
    assert [(s["step"], round(s["delta"], 6)) for s in d["steps"]] == [("BM25 fusion", 0.04), ("customization", 0.05)]
    assert d["for_whom"]["unseen"]["n"] == 20 and d["cost"]["storage_bytes"] == 2048
    md = card_markdown(d)
    assert "**Deploy: label of adapted_bm25.**" in md and "**+0.090**" in md and "p<0.001" in md
    assert "+ BM25 fusion (label of raw_bm25): +0.040" in md and "2.0 KB stored" in md


def test_an_adapter_that_costs_new_queries_is_not_recommended_and_the_card_says_why():
    obj = _obj({"raw_bm25": (0.03, 0.02), "adapted": (0.08, 0.001)}, unseen={"adapted": (-0.04, 0.01)})
    d = decide(obj)
    assert d["recommended"] == "raw_bm25"
    why = {o["system"]: o["why"] for o in d["others"]}
    assert "hurts queries about new documents" in why["adapted"] and "-0.040" in why["adapted"]


def test_a_customization_must_beat_the_best_system_without_one():
    obj = _obj({"raw_bm25": (0.06, 0.001), "adapted_bm25": (0.07, 0.001)},
               vs_plain={"adapted_bm25": ("raw_bm25", 0.01, 0.3)})
    d = decide(obj)
    assert d["recommended"] == "raw_bm25"
    assert "not significantly better than label of raw_bm25" in {o["system"]: o["why"] for o in d["others"]}["adapted_bm25"]


def test_nothing_significant_means_keep_the_raw_embeddings():
    d = decide(_obj({"adapted": (0.02, 0.3), "raw_bm25": (-0.01, 0.5), "bm25": (-0.2, 0.001)}))
    assert d["keep_raw"] and d["recommended"] == "raw" and d["gain"] is None and d["steps"] == []
    assert "worse than raw" in {o["system"]: o["why"] for o in d["others"]}["bm25"]
    html = card_html(d)
    assert "Keep the raw embeddings." in html and 'data-system="raw"' in html


def test_the_card_in_html_carries_the_numbers_it_was_given_and_escapes_what_a_file_says():
    obj = _obj({"raw_bm25": (0.04, 0.01), "adapted": (0.05, 0.001), "adapted_bm25": (0.09, 0.0001)},
               vs_plain={"adapted_bm25": ("raw_bm25", 0.05, 0.002)})
    html = card_html(decide(obj))
    assert 'data-system="adapted_bm25"' in html and '<b class="ef-rec-label">label of adapted_bm25</b>' in html
    assert '<span class="ef-raw" data-value="0.5">0.500</span>' in html and '<span class="ef-mean"' in html
    assert '<b class="ef-gain" data-value="0.09">+0.090</b>' in html and '<span class="ef-ci">[+0.070, +0.110]</span>' in html
    hostile = {**decide(obj), "raw_mean": '"><img src=x onerror=alert(1)>', "label": "<script>x</script>",
               "model": '"><b>', "others": [{"label": "<i>", "why": "<u>"}]}
    html = card_html(hostile)
    assert "<img" not in html and "<script>" not in html and "<i>" not in html
    assert 'data-model="&quot;&gt;&lt;b&gt;"' in html and 'data-value="None">n/a' in html


def test_unusable_numbers_in_a_file_refuse_a_step_instead_of_crashing():
    obj = _obj({"adapted": (0.08, 0.001)}, unseen={"adapted": (-0.04, 0.01)},
               vs_plain={"adapted": ("raw", 0.08, 0.001)})
    obj["seen_unseen"]["adapted"]["unseen"]["vs_raw"]["MRR@10"]["p"] = None  # NaN is written as null
    obj["vs_best_non_adapter"]["adapted"]["MRR@10"]["p"] = None
    assert decide(obj)["recommended"] == "adapted"  # no usable test against it: not held against it
    obj["vs_raw"]["adapted"]["MRR@10"]["p"] = None
    assert decide(obj)["recommended"] == "raw"  # no usable test for it: not recommended


def test_a_hybrid_is_known_by_its_fusion_not_by_its_name():
    obj = _obj({"adapted:x_rrf": (0.06, 0.001)})  # an adapter named "x_rrf": no BM25 in it
    d = decide(obj)
    assert d["recommended"] == "adapted:x_rrf" and [s["step"] for s in d["steps"]] == ["customization"]


def test_the_best_system_without_a_customization_is_never_a_fitted_baseline():
    """Rule 3 compares an adapter with raw, BM25 and their fusions, never with NUDGE or the MSE baseline (those are
    fitted on the labels too)."""
    from embedfit.evaluation.config import EvalConfig
    from embedfit.evaluation.evaluate import _best_plain_comparison

    qids = [f"q{i}" for i in range(12)]
    level = {"raw": 0.4, "raw_bm25": 0.5, "nudge_n": 0.9, "mse_baseline": 0.95, "adapted": 0.7}
    scores = {k: {"per_query": {m: {q: v + 0.01 * (i % 3) for i, q in enumerate(qids)} for m in ("MRR@10", "nDCG@10")},
                  "means": {m: v + 0.01 for m in ("MRR@10", "nDCG@10")}} for k, v in level.items()}
    out = _best_plain_comparison(dict.fromkeys(level), scores, EvalConfig(bootstrap_resamples=100))
    assert set(out) == {"adapted"} and out["adapted"]["system"] == "raw_bm25"
    assert out["adapted"]["MRR@10"]["delta"] == pytest.approx(0.2)


def test_published_baselines_are_reported_never_recommended():
    d = decide(_obj({"nudge_n": (0.2, 0.0001), "mse_baseline": (0.3, 0.0001), "adapted": (0.01, 0.6)}))
    assert d["recommended"] == "raw"


# -- names ------------------------------------------------------------------------------------------------

def _adapter(identity=False, sides="query", memory=None, kind="linear") -> Adapter:
    cfg = AdapterConfig(name="folder-name", kind=kind, sides=sides, dim_in=4, dim_out=4, base_model="m",
                        data_fingerprint="f", raw_collection="c", identity=identity, memory=memory)
    vectors = PassageMemory(("p1",), np.zeros((1, 4), dtype=np.float32)) if memory else None
    return Adapter(cfg, build_module(kind, 4, 4), vectors)


def test_names_say_what_a_system_is_not_where_it_was_saved():
    assert adapter_name(_adapter()) == "query adapter"
    assert adapter_name(_adapter(memory={"alpha": 1.0, "n_passages": 3})) == "query adapter + memory (α 1)"
    assert adapter_name(_adapter(identity=True, memory={"alpha": 0.5, "n_passages": 3})) == "query memory (α 0.5)"
    assert adapter_name(_adapter(identity=True, memory={"alpha": 1.0, "method": "nudge-n", "gamma": 0.1,
                                                        "n_passages": 3})) == "NUDGE-N passage move (γ 0.1)"
    assert adapter_name(_adapter(sides="both")) == "two-sided adapter"
    assert adapter_name(_adapter(identity=True)) == "identity (nothing beat raw on dev)"
    assert fusion_name({"method": "zscore", "weight": 0.5, "n": 100}) == "BM25 (z-score, w 0.5)"
    assert fusion_name({"method": "rrf", "weight": 0.5, "rrf_k": 60}) == "BM25 (RRF, k 60)"
    assert unique({"a": "query adapter", "b": "query adapter", "c": "raw"}, {"a": "x", "b": "y", "c": None}) == \
        {"a": "query adapter [x]", "b": "query adapter [y]", "c": "raw"}


# -- the seen / unseen reason -----------------------------------------------------------------------------

def test_the_seen_reason_is_the_true_one_for_each_kind_of_split():
    grouped = _why_seen({"seen": 0, "unseen": 40}, "test", {"by": "grouped"})
    assert "grouped" in grouped and "none of the test split's queries can be seen" in grouped
    random0 = _why_seen({"seen": 0, "unseen": 40}, "test", {"by": "random"})
    assert "split at random" in random0 and "grouped" not in random0
    random5 = _why_seen({"seen": 5, "unseen": 35}, "test", {"by": "random"})
    assert "5 of these queries ask about passages that training queries also had" in random5
    held = _why_seen({"seen": 0, "unseen": 12}, None, {"by": "random"})
    assert "held-out" in held and "so none is seen" in held and "grouped" not in held
    assert _why_seen({}, "test", {"by": "random"}) == ""


# -- the eval run -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def report(small_store, tmp_path_factory):
    work = tmp_path_factory.mktemp("verdict")
    adapter_dir = work / "adapter"
    make_adapter(adapter_dir, small_store[0].store, sides="query", scale=0.02, seed=1, name="test-query-1")
    folder = make_report(work / "report", small_store[0].store, adapter_dir)
    return {"folder": folder, "metrics": json.loads((folder / "metrics.json").read_text("utf-8")),
            "details": json.loads((folder / "details.json").read_text("utf-8")), "adapter": adapter_dir,
            "store": small_store[0].store}


def _panels_from_metrics(m: dict) -> list[dict]:
    """The forest plot's rows, read by this test from metrics.json alone."""
    rows = []
    for k, label in m["labels"].items():
        if k == "raw":
            continue
        row = {"system": k, "label": label, "overall": m["vs_raw"][k]["MRR@10"]}
        for part in ("seen", "unseen"):
            sub = m["seen_unseen"].get(k, {}).get(part)
            row[part] = sub["vs_raw"]["MRR@10"] if sub and sub.get("vs_raw") else None
        rows.append(row)
    return [{"model": m["model"], "n": {"overall": m["n_queries"], **m["seen_unseen"]["n"]}, "rows": rows}]


def test_the_forest_plot_draws_the_paired_deltas_of_metrics_json(report):
    m = report["metrics"]
    panels = _panels_from_metrics(m)
    # the PNG eval wrote is the drawing of exactly these numbers ...
    assert (report["folder"] / "figures" / "forest.png").read_bytes() == plots.forest_png(panels, "MRR@10")
    # ... and the drawing puts each point at its delta, with its interval, in its panel
    fig = plots.forest_figure(panels, "MRR@10")
    drawn = {}
    for ax in fig.axes:
        part = ax.get_title().split(": ", 1)[1].split(" ")[0]
        for c in ax.containers:
            x = float(c.lines[0].get_xdata()[0])
            seg = c.lines[2][0].get_segments()[0]
            drawn[(c.get_label(), part)] = (x, float(seg[0][0]), float(seg[1][0]))
    expected = {}
    for k in m["labels"]:
        if k == "raw":
            continue
        expected[(k, "overall")] = m["vs_raw"][k]["MRR@10"]
        for part in ("seen", "unseen"):
            sub = m["seen_unseen"].get(k, {}).get(part)
            if sub and sub.get("vs_raw"):
                expected[(k, part)] = sub["vs_raw"]["MRR@10"]
    assert set(drawn) == set(expected) and len(drawn) >= 8
    for key, v in expected.items():
        x, lo, hi = drawn[key]
        assert x == pytest.approx(v["delta"]) and lo == pytest.approx(min(v["ci95"][0], v["delta"]))
        assert hi == pytest.approx(max(v["ci95"][1], v["delta"]))


def test_costs_count_what_is_really_stored(report):
    from safetensors.numpy import load_file

    from embedfit.store.store import Store

    m = report["metrics"]
    weights = load_file(str(report["adapter"] / "model.safetensors"))
    saved = sum(int(t.nbytes) for t in weights.values())
    assert m["costs"]["adapted"]["storage_bytes"] == saved  # query-only: no projected collection
    lexical = report["store"] / "lexical"
    on_disk = sum(f.stat().st_size for f in lexical.rglob("*") if f.is_file())
    assert m["costs"]["raw_bm25"]["storage_bytes"] == on_disk > 0
    assert m["costs"]["adapted_bm25"]["storage_bytes"] == on_disk + saved
    assert m["costs"]["raw"] == {"fit_seconds": 0.0, "query_ms": 0.0, "storage_bytes": 0, "storage": "nothing"}
    assert m["costs"]["adapted"]["query_ms"] > 0 and m["costs"]["raw_bm25"]["query_ms"] > 0  # measured, not assumed
    assert m["costs"]["nudge_n"]["query_ms"] == 0.0  # queries unchanged: nothing added per query ...
    assert m["costs"]["nudge_n"]["storage_bytes"] == 4 * len(Store(report["store"]).load_corpus()) * 384  # ... moved vectors


def test_report_md_opens_with_the_card_and_the_readable_table(report):
    text = (report["folder"] / "report.md").read_text("utf-8")
    m = report["metrics"]
    assert text.index("## Decision: ") < text.index("### Every system on the same queries") < text.index("## Details: ")
    header = next(line for line in text.splitlines() if line.startswith("| system | MRR@10 [95% CI]"))
    assert header.count("|") - 1 == 5  # a few columns; the full grid is further down
    raw = m["retrieval"]["raw"]["MRR@10"]
    lo, hi = m["ci95"]["raw"]["MRR@10"]
    assert f"| raw | {raw:.3f} [{lo:.3f}, {hi:.3f}] |" in text
    assert "### Threshold accuracy" in text and "weak: raw:" not in text


def test_report_html_is_one_self_contained_file(report, tmp_path):
    copy = tmp_path / "elsewhere"
    copy.mkdir()
    shutil.copy(report["folder"] / "report.html", copy / "report.html")  # alone, without figures/
    page = (copy / "report.html").read_text("utf-8")
    srcs = re.findall(r'\bsrc="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "<script" not in page and "<link" not in page and "http://" not in page and "https://" not in page
    figures = [rel for rel in report["details"]["figures"].values()]
    figures += [r for r in report["details"]["models"][MODEL]["figures"].values() if r.endswith(".png")]
    assert len(srcs) == len(figures)
    assert page.index('class="ef-decision"') < page.index("forest plot") < page.index("Every system on the same queries")
    assert page.index("Every system on the same queries") < page.index("<summary>Every metric</summary>")
    m = report["metrics"]
    assert f'data-system="{m["decision"]["recommended"]}"' in page


def test_selection_figure_marks_the_chosen_and_refused_points():
    selection = {"metric": "MRR@10", "chosen": {"method": "query", "candidates": "corpus", "temperature": 0.05, "epochs": 2},
                 "points": [{"method": "identity", "mean": 0.5, "refused": False},
                            {"method": "query", "candidates": "corpus", "temperature": 0.05, "epochs": 1, "mean": 0.52,
                             "refused": False},
                            {"method": "query", "candidates": "corpus", "temperature": 0.05, "epochs": 2, "mean": 0.55,
                             "refused": False},
                            {"method": "memory", "alpha": 0.5, "mean": 0.6, "refused": True}]}
    fig = plots.selection_figure(selection, "m, query adapter")
    left, right = fig.axes[:2]

    def marks(ax, marker):
        return [(float(x), float(y)) for line in ax.get_lines() if line.get_marker() == marker
                for x, y in zip(line.get_xdata(), line.get_ydata())]

    assert marks(left, "*") == [(2.0, 0.55)]  # the chosen point, by epochs
    assert marks(right, "x") == [(0.5, 0.6)]  # the refused memory point
    assert marks(left, "o") == [(1.0, 0.52), (2.0, 0.55)] and marks(right, "o") == []
    assert [float(v) for v in left.get_lines()[-1].get_ydata()] == [0.5, 0.5]  # identity, dashed
    assert plots.selection_png(selection, "m")[:8] == b"\x89PNG\r\n\x1a\n"
    assert plots.selection_png({"metric": "MRR@10"}, "x") is None


def test_a_study_of_this_data_joins_the_report_and_one_of_other_data_is_left_out(report, tmp_path):
    """A learning curve measured on this store's data (its fingerprint) is drawn into the report; the same file
    claiming other data is left out, and the report says why."""
    import embedfit as ef
    from embedfit.store.store import Store

    fingerprint = Store(report["store"]).model_info(MODEL)["data_fingerprint"]
    curve = {"model": MODEL, "data_fingerprint": fingerprint, "metric": "MRR@10",
             "points": [{"labels": n, "gain": {"mean": g, "ci95": [g - 0.02, g + 0.02]},
                         "seen": None, "unseen": {"mean": g / 2, "ci95": [g / 2 - 0.03, g / 2 + 0.03]}}
                        for n, g in ((25, 0.01), (50, 0.02), (100, 0.03))]}
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for folder, fp in ((ours, fingerprint), (theirs, "another-dataset")):
        folder.mkdir()
        (folder / "learning_curve.json").write_text(json.dumps({**curve, "data_fingerprint": fp}), encoding="utf-8")
    options = {"mse_baseline": False, "nudge": False, "hnsw": False, "bm25": False, "bootstrap_resamples": 200,
               "plot_queries": 0}
    ev = ef.evaluate(report["store"], [report["adapter"]], studies=[ours], **options).outcome.models[0]
    assert ev.figure_files[ev.figures["learning_curve"]] == plots.learning_curve_png(curve)
    other = ef.evaluate(report["store"], [report["adapter"]], studies=[theirs], **options).outcome.models[0]
    assert "learning_curve" not in other.figures
    assert any("learning_curve.json was left out: it measured other data" in n for n in other.notes)
