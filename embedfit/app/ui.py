"""The page (`build_demo`): a question box, top-k, three result columns (raw, adapted, hybrid: the right-hand dense
side fused with BM25), examples, and the eval report tab.

Two ways in, one search: the page's own events (not part of the public API) and the named API
endpoint `/search` (`gr.api`, typed, returns `SearchResult.to_json()`). Both go through `run_search`,
which turns our errors into a message instead of an error page.
"""
from __future__ import annotations

import logging
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr

from embedfit.app import cards
from embedfit.app.report import load_report
from embedfit.app.startup import AppState
from embedfit.errors import EmbedfitError
from embedfit.search.retriever import EMPTY_QUESTION, SearchResult

log = logging.getLogger(__name__)

HOW_TO_READ = (
    "**How to read it:** each column ranks passages by cosine similarity to your question. "
    "**★ gold** marks the passage the dataset's annotators judged relevant (only for questions from the dataset). "
    "Arrows say how the adapter moved a passage: **↑3** three places higher with the adapter, **↓1** one lower, "
    "**new** not in the raw top {depth}, **out** not in the adapted top {depth}. "
    "The third column fuses the dense ranking next to it with BM25 (keyword search) as chosen on the dev split; "
    "its score is the fused score and its arrows compare it with the raw ranking. Click a card for the full passage."
)


#: what the page (and its API) says for an empty question, instead of the search layer's plain EMPTY_QUESTION
EMPTY_MESSAGE = "Type a question first, for example one of the examples below the results."


def run_search(state: AppState, question: str | None, k: float | None) -> SearchResult:
    """The search behind both the page and the API; an EmbedfitError becomes the result's message."""
    r = state.retriever
    try:
        result = r.search(question, state.cfg.default_k if k is None else k)
        if result.message == EMPTY_QUESTION:
            result.message = EMPTY_MESSAGE
        return result
    except EmbedfitError as exc:
        log.warning("search failed: %s", exc)
        return SearchResult(question="", k=0, model=r.model_id, adapter=r.adapter.name if r.adapter else None,
                            adapter_note=r.adapter_note, message=f"Search failed: {exc}")


def render(state: AppState, result: SearchResult) -> tuple[str, str, str, str, str]:
    """(status markdown, raw column html, adapted column html, hybrid column html, timing markdown)."""
    r = state.retriever
    depth = r.depth
    raw = cards.render_column(r.raw_label, result.raw, depth, empty="Results appear here.")
    adapted = cards.render_column(r.adapted_label, result.adapted, depth, note=r.adapter_note,
                                  empty="Results appear here.")
    hybrid = cards.render_column(r.hybrid_label, result.hybrid, depth, note=r.hybrid_note,
                                 empty="Results appear here.", hybrid=True)
    return cards.render_status(result), raw, adapted, hybrid, cards.render_timing(result)


def _report(state: AppState) -> str:
    """The eval report folder drawn as report.html draws it, read now (so *Reload report* shows a newer run)."""
    cfg = state.cfg
    return load_report(cfg.report, cfg.model, cfg.store, cfg.adapter_dir()).html


def build_demo(state: AppState) -> gr.Blocks:
    cfg, r = state.cfg, state.retriever

    def search(question: str, k: int = cfg.default_k) -> dict:
        """Search the raw collection, the adapted one and their hybrid with BM25 for `question`; returns the
        rankings as JSON.

        Keys: question (as searched), k, model, adapter, adapter_note, notices, message (set when nothing was
        searched), nq (query_id, split, gold_ids, when the question is from the store), raw, adapted and hybrid
        (label, collection, ms, gold_rank, fusion (hybrid: method, weight, n, rrf_k), hits: rank, id, title, text,
        score, gold, raw_rank, adapted_rank, hybrid_rank, movement), depth, timings_ms (embed, raw, adapted,
        lexical, fuse, total).
        """
        return run_search(state, question, k).to_json()

    def on_search(question: str, k: float) -> tuple[str, str, str, str, str]:
        return render(state, run_search(state, question, k))

    initial = render(state, SearchResult(question="", k=cfg.default_k, model=r.model_id, adapter=None,
                                         adapter_note=r.adapter_note))
    report_html = _report(state)

    with gr.Blocks(title="embedfit: raw vs customized retrieval", analytics_enabled=False) as demo:
        gr.Markdown(f"## embedfit · retrieval on `{state.retriever.dataset}`: raw embeddings vs. customized")
        gr.Markdown(state.summary)
        with gr.Tab("Search"):
            with gr.Row(equal_height=True):
                question = gr.Textbox(label="Question", placeholder="e.g. who wrote the declaration of independence",
                                      max_length=cfg.max_chars, lines=1, max_lines=1, scale=5, elem_id="question",
                                      submit_btn=False, autofocus=True)
                k = gr.Slider(1, cfg.max_k, value=cfg.default_k, step=1, label="Top k", scale=2, elem_id="topk")
                button = gr.Button("Search", variant="primary", scale=1, elem_id="search-btn")
            examples = None
            if state.examples:
                examples = gr.Examples([[q] for q in state.examples], inputs=[question],
                                       label="Try a question from the test split (click one)",
                                       cache_examples=False, api_visibility="private", examples_per_page=10)
            status = gr.Markdown(initial[0], elem_id="status")
            with gr.Row(equal_height=False):
                raw_col = gr.HTML(initial[1], elem_id="raw-col", js_on_load=None)
                adapted_col = gr.HTML(initial[2], elem_id="adapted-col", js_on_load=None)
                hybrid_col = gr.HTML(initial[3], elem_id="hybrid-col", js_on_load=None)
            timing = gr.Markdown(initial[4], elem_id="timing")
            outputs = [status, raw_col, adapted_col, hybrid_col, timing]
            button.click(on_search, [question, k], outputs, api_visibility="private", concurrency_id="search")
            question.submit(on_search, [question, k], outputs, api_visibility="private", concurrency_id="search")
            if examples is not None:
                examples.load_input_event.then(on_search, [question, k], outputs, api_visibility="private",
                                               concurrency_id="search")
            gr.Markdown(HOW_TO_READ.format(depth=r.depth))
        with gr.Tab("Eval report"):
            report_view = gr.HTML(report_html, elem_id="report", js_on_load=None)
            reload = gr.Button("Reload report", size="sm")
            reload.click(lambda: _report(state), None, [report_view], api_visibility="private")
        gr.api(search, api_name="search", concurrency_id="search")
    return demo
