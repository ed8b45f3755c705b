"""HTML for the result columns (raw, adapted, hybrid), the status line and the timing line (pure functions of a
SearchResult).

Every piece of text that comes from the store or the user is escaped here: passages are Wikipedia
text and questions are typed by anyone, and neither may become markup in the page.
"""
from __future__ import annotations

import html

from embedfit.retrieval.fusion import FusionSpec
from embedfit.search.retriever import Hit, SearchResult, Side

SNIPPET_CHARS = 240

CSS = """
.ef-col h3 { margin: 0 0 .5em 0; font-size: 1.05em; }
.ef-card { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: .45em .7em; margin: 0 0 .45em 0; }
.ef-card.gold { border: 2px solid #d4a106; background: rgba(212, 161, 6, .08); }
.ef-card summary { cursor: pointer; list-style: none; }
.ef-card summary::-webkit-details-marker { display: none; }
.ef-meta { display: flex; gap: .6em; align-items: baseline; flex-wrap: wrap; font-size: .9em; }
.ef-rank { font-weight: 700; }
.ef-score { font-family: ui-monospace, monospace; }
.ef-title { font-weight: 600; }
.ef-gold { color: #8a6400; font-weight: 700; }
.ef-move { font-family: ui-monospace, monospace; padding: 0 .3em; border-radius: 4px; }
.ef-move.up { color: #11702a; background: rgba(17, 112, 42, .1); }
.ef-move.down { color: #a11d1d; background: rgba(161, 29, 29, .1); }
.ef-move.new { color: #1d4fa1; background: rgba(29, 79, 161, .1); }
.ef-move.out, .ef-move.same { color: #666; }
.ef-snippet { margin-top: .25em; font-size: .92em; }
.ef-full { margin-top: .25em; font-size: .92em; white-space: pre-wrap; }
.ef-card details[open] .ef-snippet.cut { display: none; }
.ef-sub { font-size: .85em; color: var(--body-text-color-subdued); margin: -.3em 0 .5em 0; }
.ef-plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr)); gap: 1em; }
.ef-plot { margin: 0; }
.ef-plot img { max-width: 100%; height: auto; border: 1px solid var(--border-color-primary); }
.ef-plot figcaption { font-size: .9em; }
.ef-note { padding: .6em .8em; border-radius: 8px; background: var(--background-fill-secondary); }
"""

_MOVE_HELP = {
    "=": ("same", "same rank with and without the {by}"),
    "new": ("new", "not in the raw top {depth}: the {by} brought it in"),
    "out": ("out", "not in the {to} top {depth}: the {by} pushed it out"),
}


def snippet(text: str, limit: int = SNIPPET_CHARS) -> str:
    """The first `limit` characters, cut at a word boundary, with an ellipsis when cut."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut).rstrip() + " …"


def _movement_badge(hit: Hit, depth: int, hybrid: bool = False) -> str:
    """The raw -> adapted arrow (raw -> hybrid in the hybrid column), with a tooltip that says what it compares."""
    if not hit.movement:
        return ""
    to, by = ("hybrid", "fusion with BM25") if hybrid else ("adapted", "adapter")
    if hit.movement in _MOVE_HELP:
        cls, tip = _MOVE_HELP[hit.movement]
        tip = tip.format(depth=depth, to=to, by=by)
    else:
        cls = "up" if hit.movement.startswith("↑") else "down"
        tip = f"raw rank {hit.raw_rank} → {to} rank {hit.hybrid_rank if hybrid else hit.adapted_rank}"
    return f'<span class="ef-move {cls}" title="{html.escape(tip)}">{html.escape(hit.movement)}</span>'


def render_card(hit: Hit, depth: int, hybrid: bool = False) -> str:
    """One passage; `hybrid`: a card of the hybrid column (fused score, raw -> hybrid arrow)."""
    e = html.escape
    gold = '<span class="ef-gold" title="a gold (relevant) passage for this question">★ gold</span>' if hit.gold else ""
    short = snippet(hit.text)
    full = f'<div class="ef-full">{e(hit.text)}</div>' if short != hit.text else ""
    score_tip = "fused score (dense and BM25, normalised per query)" if hybrid else "cosine similarity"
    return (
        f'<div class="ef-card{" gold" if hit.gold else ""}" data-rank="{hit.rank}" data-id="{e(hit.id)}" '
        f'data-gold="{str(hit.gold).lower()}" data-move="{e(hit.movement)}">'
        f"<details><summary>"
        f'<div class="ef-meta"><span class="ef-rank">#{hit.rank}</span>'
        f'<span class="ef-score" title="{score_tip}">{hit.score:.3f}</span>'
        f"{_movement_badge(hit, depth, hybrid)}{gold}"
        f'<span class="ef-title">{e(hit.title) or "(untitled)"}</span></div>'
        f'<div class="ef-snippet{" cut" if full else ""}">{e(short)}</div>'
        f"</summary>{full}</details></div>"
    )


def render_column(label: str, side: Side | None, depth: int, note: str | None = None, empty: str = "",
                  hybrid: bool = False) -> str:
    """One column: its heading, then a note (no adapter, refused, no BM25 index, ...) or the ranked cards.
    `hybrid`: the dense + BM25 column (its sub-line names the fusion; its time is the BM25 query and the fusion)."""
    parts = [f'<div class="ef-col"><h3>{html.escape(label)}</h3>']
    if side is not None:
        gold = "" if side.gold_rank is None else f" · gold at #{side.gold_rank}"
        how = f" · {html.escape(FusionSpec.from_json(side.fusion).describe())}" if side.fusion else ""
        ms = f"BM25 + fusion {side.ms:.1f} ms" if hybrid else f"{side.ms:.1f} ms"
        parts.append(f'<div class="ef-sub">{len(side.hits)} results from <code>{html.escape(side.collection)}</code>'
                     f"{how} · {ms}{gold}</div>")
    if note:
        parts.append(f'<div class="ef-note">{_note_html(note)}</div>')
    if side is not None:
        parts.extend(render_card(h, depth, hybrid) for h in side.hits)
        if not side.hits:
            parts.append('<div class="ef-note">No passages in this collection.</div>')
    elif empty and not note:
        parts.append(f'<div class="ef-note">{html.escape(empty)}</div>')
    parts.append("</div>")
    return "".join(parts)


def _note_html(note: str) -> str:
    """Notes may carry commands in backticks; show them as code (everything else escaped)."""
    pieces = html.escape(note).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p.replace("\n", "<br>") for i, p in enumerate(pieces))


def render_status(result: SearchResult) -> str:
    """Markdown above the columns: notices, the friendly message, and what we know about the question."""
    lines = [f"⚠️ {n}" for n in result.notices]
    if result.message:
        lines.append(result.message)
    match = result.match
    if match is not None and result.raw is not None:
        where = [f"raw #{result.raw.gold_rank}" if result.raw.gold_rank else f"raw: not in the top {result.depth}"]
        if result.adapted is not None:
            where.append(f"adapted #{result.adapted.gold_rank}" if result.adapted.gold_rank
                         else f"adapted: not in the top {result.depth}")
        if result.hybrid is not None:
            where.append(f"hybrid #{result.hybrid.gold_rank}" if result.hybrid.gold_rank
                         else f"hybrid: not in the top {result.depth}")
        lines.append(f"This is {result.dataset or 'dataset'} question `{match.query_id}` ({match.split or 'unknown'} "
                     f"split): its gold passage is marked ★ gold. Best gold rank: {', '.join(where)}.")
        if match.split == "train" and result.adapted is not None:
            lines.append("Note: a train-split question was seen by the adapter during training, so this comparison "
                         "flatters the adapter; try a test-split example.")
        elif match.seen and result.adapted is not None:
            lines.append("Seen document: every gold passage of this question answered some training question, so "
                         "the customization was fitted on it. This is where customization helps most (eval's 'seen' "
                         "queries); for a question about a new document expect less.")
    elif result.raw is not None:
        lines.append(f"Not a question from the store's {result.dataset or 'dataset'} set, so no passage is marked gold.")
    return "\n\n".join(lines)


def render_timing(result: SearchResult) -> str:
    t = result.timings_ms
    if "embed" not in t:
        return ""
    parts = [f"embedding the question {t['embed']:.1f} ms (shared by every column)", f"raw search {t['raw']:.1f} ms"]
    if "adapted" in t:
        parts.append(f"adapter projection + search {t['adapted']:.1f} ms")
    if "lexical" in t:
        parts.append(f"BM25 search {t['lexical']:.1f} ms + fusion {t['fuse']:.1f} ms")
    parts.append(f"total {t['total']:.1f} ms")
    return "Time: " + " · ".join(parts)
