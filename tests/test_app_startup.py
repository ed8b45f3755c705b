"""What the app does before and around a search: missing or unfit adapters, no store, the CLI, the report tab."""
from __future__ import annotations

import json

import pytest
from app_support import ExactOracle, make_adapter, make_report

from embedfit.app.cards import render_column, render_status
from embedfit.app.cli import main, parse_args
from embedfit.app.config import AppConfig
from embedfit.app.report import load_report
from embedfit.app.startup import open_app
from embedfit.app.ui import render, run_search

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def embedder():
    from embedfit.embed import load_embedder

    return load_embedder(MODEL)


def test_without_an_adapter_the_page_serves_raw_and_says_what_to_run(small_store, tmp_path, embedder):
    cfg = AppConfig(store=small_store[0].store, adapter=tmp_path / "nope", report=tmp_path / "report")
    state = open_app(cfg, embedder=embedder)
    assert state.retriever.adapter is None
    assert "embedfit train" in state.retriever.adapter_note and str(tmp_path / "nope") in state.retriever.adapter_note
    result = run_search(state, state.examples[0], 5)
    assert result.adapted is None and result.adapter_note
    exact = ExactOracle(small_store[0].store).ranking(embedder.embed([state.examples[0]], "query"), 5)
    assert [h.id for h in result.raw.hits] == [pid for pid, _ in exact]  # brute-force cosine over the store
    _, raw_html, adapted_html, hybrid_html, timing = render(state, result)
    assert raw_html.count('class="ef-card') == 5 and "★ gold" in raw_html
    assert "ef-card" not in adapted_html and "<code>embedfit train" in adapted_html
    # without an adapter the hybrid column fuses the raw ranking with BM25, as ingest chose on dev
    assert state.retriever.hybrid_label == "Raw + BM25" and "<h3>Raw + BM25</h3>" in hybrid_html
    assert hybrid_html.count('class="ef-card') == 5 and [h.id for h in result.hybrid.hits] == [
        line.split('data-id="')[1].split('"')[0] for line in hybrid_html.split('class="ef-card')[1:]]
    assert "raw search" in timing and "BM25 search" in timing and "adapter" not in timing


def test_an_adapter_without_a_fusion_leaves_the_hybrid_column_with_the_command(small_store, tmp_path, embedder):
    store = small_store[0].store
    make_adapter(tmp_path / "old", store, sides="query", name="old-adapter")  # trained before hybrid search
    state = open_app(AppConfig(store=store, adapter=tmp_path / "old"), embedder=embedder)
    result = run_search(state, "who wrote hamlet", 3)
    assert result.adapted is not None and result.hybrid is None
    _, _, _, hybrid_html, timing = render(state, result)
    assert "<h3>Adapter + BM25</h3>" in hybrid_html and "ef-card" not in hybrid_html
    assert f"<code>embedfit train --store {store} --out {tmp_path / 'old'}</code>" in hybrid_html
    assert "has no BM25 fusion" in state.summary and "BM25 search" not in timing


def test_an_adapter_for_another_model_is_refused_with_the_reason(small_store, tmp_path, embedder):
    store = small_store[0].store
    bad = make_adapter(tmp_path / "bad", store, base_model="paraphrase-MiniLM-L3-v2")
    state = open_app(AppConfig(store=store, adapter=tmp_path / "bad"), embedder=embedder)
    assert state.retriever.adapter is None
    assert "refused" in state.retriever.adapter_note and "paraphrase-MiniLM-L3-v2" in state.retriever.adapter_note
    assert bad.name in state.retriever.adapter_note
    assert run_search(state, "who wrote hamlet", 3).raw.hits


def test_a_both_sides_adapter_without_its_projection_is_refused_with_the_command(small_store, tmp_path, embedder):
    store = small_store[0].store
    make_adapter(tmp_path / "both", store, sides="both")
    state = open_app(AppConfig(store=store, adapter=tmp_path / "both"), embedder=embedder)
    assert state.retriever.adapter is None
    assert f"embedfit project --store {store} --adapter {tmp_path / 'both'}" in state.retriever.adapter_note


def test_an_identity_adapter_is_labelled_honestly(small_store, tmp_path, embedder):
    store = small_store[0].store
    make_adapter(tmp_path / "id", store, scale=0.0)  # then mark it the way training marks "nothing beat raw"
    cfg_path = tmp_path / "id" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg_path.write_text(json.dumps({**cfg, "identity": True}))
    state = open_app(AppConfig(store=store, adapter=tmp_path / "id"), embedder=embedder)
    assert state.retriever.adapter is not None and "identity" in state.retriever.adapter_note


def test_no_store_exits_with_the_command_that_builds_it(tmp_path, capsys):
    assert main(["--store", str(tmp_path / "missing"), "--port", "7999"]) == 2
    err = capsys.readouterr().err
    assert "no store at" in err and "embedfit ingest" in err


def test_cli_defaults_are_safe():
    cfg = parse_args([])
    assert cfg.host == "127.0.0.1" and cfg.port == 7860 and cfg.queue_size > 0 and cfg.concurrency >= 1
    assert str(cfg.adapter_dir()) == f".data/adapters/{MODEL}"
    with pytest.raises(SystemExit):
        parse_args(["--port", "0"])


def test_examples_are_test_split_questions_with_gold(small_store, tmp_path, embedder):
    """Against the store's own files, read here: test-split ids with a relevant passage in qrels.tsv, sorted,
    taken evenly (every len/n-th) as the docstring of `example_questions` says."""
    import csv

    store = small_store[0].store
    splits = json.loads((store / "splits.json").read_text("utf-8"))["splits"]
    with (store / "dataset" / "queries.jsonl").open(encoding="utf-8") as fh:
        queries = {row["_id"]: row["text"] for row in map(json.loads, fh)}
    with (store / "dataset" / "qrels.tsv").open(encoding="utf-8", newline="") as fh:
        with_gold = {row["query-id"] for row in csv.DictReader(fh, delimiter="\t") if int(row["score"]) > 0}
    test_ids = sorted(q for q, split in splits.items() if split == "test" and q in with_gold and q in queries)
    state = open_app(AppConfig(store=store, adapter=tmp_path / "none"), embedder=embedder)
    n = state.cfg.n_examples
    assert len(test_ids) >= n
    assert state.examples == [queries[q] for q in test_ids[:: len(test_ids) // n][:n]]


def test_untrusted_text_is_escaped_in_cards(small_store, tmp_path, embedder):
    from embedfit.search.retriever import Hit, Side

    hit = Hit(rank=1, id='p"1', title="<script>alert(1)</script>", text="<img src=x onerror=alert(1)>", score=0.5,
              gold=True, raw_rank=1, adapted_rank=2, movement="↓1")
    html = render_column("Raw <b>", Side(label="x", collection="c", hits=[hit], ms=1.0, gold_rank=1), 50)
    assert "<script>" not in html and "<img" not in html and "Raw &lt;b&gt;" in html and 'data-id="p&quot;1"' in html
    fused = Side(label="x", collection="c <i>", hits=[hit], ms=1.0, fusion={"method": "zscore", "weight": 0.4, "n": 100})
    html = render_column("Adapter + BM25", fused, 50, hybrid=True)
    assert "<script>" not in html and "<i>" not in html and "BM25 weight 0.4" in html and "fused score" in html


# -- report tab -----------------------------------------------------------------------------------------------

def _block(model: str, label: str = "query adapter") -> dict:
    """A metrics.json object by hand: raw 0.5, the adapter 0.6 (+0.1, significant), its interval and test."""
    return {"model": model, "n_queries": 30, "retrieval": {"raw": {"MRR@10": 0.5, "nDCG@10": 0.55},
                                                            "adapted": {"MRR@10": 0.6, "nDCG@10": 0.62}},
            "ci95": {"raw": {"MRR@10": [0.4, 0.6]}, "adapted": {"MRR@10": [0.5, 0.7]}},
            "vs_raw": {"adapted": {"MRR@10": {"delta": 0.1, "ci95": [0.05, 0.15], "p": 0.002},
                                   "nDCG@10": {"delta": 0.07, "ci95": [0.01, 0.12], "p": 0.03}}},
            "labels": {"raw": "raw", "adapted": label}}


def test_report_tab_puts_the_decision_first_and_raw_beside_every_change():
    from embedfit.report.render import body_html

    html = body_html(_block(MODEL), {}, {})
    assert html.index("ef-decision") < html.index("Every system on the same queries")
    assert "Deploy: <b class=\"ef-rec-label\">query adapter</b>" in html
    assert "0.500 → " in html or "0.500</span> → " in html
    assert "+0.100 [+0.050, +0.150], p=0.002" in html and "0.600 [0.500, 0.700]" in html


def test_report_tab_escapes_what_the_files_say():
    from embedfit.report.render import body_html

    html = body_html(_block(MODEL, label="<script>alert(1)</script>"), {"models": {MODEL: {"notes": ["<img src=x>"]}}}, {})
    assert "<script>" not in html and "<img src=x>" not in html and "&lt;script&gt;" in html


@pytest.fixture(scope="module")
def real_report(small_store, tmp_path_factory):
    """The report `embedfit eval` writes for the small store and a query-side adapter."""
    work = tmp_path_factory.mktemp("report")
    adapter_dir = work / "adapter"
    make_adapter(adapter_dir, small_store[0].store, sides="query", scale=0.02, seed=1, name="test-query-1")
    return make_report(work / "report", small_store[0].store, adapter_dir)


def test_report_shows_every_figure_eval_made_inline(real_report, tmp_path):
    import json
    import re

    details = json.loads((real_report / "details.json").read_text("utf-8"))
    pngs = [rel for rel in details["figures"].values()] + [
        rel for rel in details["models"][MODEL]["figures"].values() if rel.endswith(".png")]
    assert len(pngs) >= 4  # the forest plot, histograms, Recall@k, latent space (+ training curves, selection)
    view = load_report(real_report, MODEL, tmp_path, tmp_path)
    assert view.found and list(view.images) == pngs
    assert all(view.images[rel] == (real_report / rel).read_bytes() for rel in pngs)
    srcs = re.findall(r'<img[^>]* src="([^"]*)"', view.html)
    assert len(srcs) == len(pngs) and all(src.startswith("data:image/png;base64,") for src in srcs)
    metrics = json.loads((real_report / "metrics.json").read_text("utf-8"))
    assert f"{metrics['retrieval']['raw']['MRR@10']:.3f}" in view.html  # the table is eval's own numbers
    assert "Recall@k" in view.html and "forest plot" in view.html


def test_report_skips_broken_images_and_paths_outside_the_folder(real_report, tmp_path):
    import json
    import shutil

    folder = tmp_path / "r"
    shutil.copytree(real_report, folder)
    details = json.loads((folder / "details.json").read_text("utf-8"))
    figures = details["models"][MODEL]["figures"]
    n_good = sum(rel.endswith(".png") for rel in figures.values()) + len(details["figures"])
    (folder / "broken.png").write_bytes(b"not a png at all")
    (tmp_path / "secret.png").write_bytes((folder / figures["recall_at_k"]).read_bytes())
    figures.update({"broken": "broken.png", "escape": "../secret.png", "abs": str(tmp_path / "secret.png")})
    (folder / "details.json").write_text(json.dumps(details), encoding="utf-8")
    view = load_report(folder, MODEL, tmp_path, tmp_path)
    assert len(view.images) == n_good  # the broken one and both outside the folder are left out
    assert "secret" not in "".join(view.images)


def test_report_with_several_models_shows_ours_first():
    from embedfit.report.render import body_html

    html = body_html({"models": {"aaa": _block("aaa"), MODEL: _block(MODEL)}}, {}, {}, first_model=MODEL)
    assert html.index(f'data-model="{MODEL}"') < html.index('data-model="aaa"')


def test_missing_report_says_which_command_makes_it(tmp_path):
    view = load_report(tmp_path / "none", MODEL, tmp_path / "store", tmp_path / "adapter")
    assert not view.found and not view.images
    assert f"embedfit eval --store {tmp_path / 'store'} --adapter {tmp_path / 'adapter'} --out {tmp_path / 'none'}" in view.html


def test_status_mentions_train_split_leakage():
    from embedfit.search.retriever import QueryMatch, SearchResult, Side

    res = SearchResult(question="q", k=1, model=MODEL, adapter="a", adapter_note=None,
                       match=QueryMatch("q1", "train", ("p1",)),
                       raw=Side("r", "c", [], 1.0, gold_rank=3), adapted=Side("a", "c", [], 1.0, gold_rank=None))
    status = render_status(res)
    assert "raw #3" in status and "adapted: not in the top" in status and "train split" in status


def test_report_tab_from_a_report_without_a_card_decides_from_its_numbers(real_report, tmp_path):
    """A report with its paired tests but no "decision" key still gets its card, from the same numbers; one from
    before both gets no card (rather than a wrong "keep the raw embeddings") and says so."""
    import json
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(real_report, folder)
    metrics = json.loads((folder / "metrics.json").read_text("utf-8"))
    card = metrics.pop("decision")
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    html = load_report(folder, MODEL, tmp_path, tmp_path).html
    assert f'data-system="{card["recommended"]}"' in html
    del metrics["vs_raw"]
    (folder / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
    html = load_report(folder, MODEL, tmp_path, tmp_path).html
    assert "written before decision cards" in html and "Keep the raw embeddings" not in html
    assert "Every system on the same queries" in html  # the tables still show
