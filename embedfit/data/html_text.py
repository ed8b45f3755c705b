"""Readable text from a span of NQ simplified-format `document_text` tokens.

Why: in the simplified format a Wikipedia page is one string of space-separated tokens in which
each HTML tag is a single token (`<P>`, `</Td>`, `<Th_colspan="2">`). An annotated long answer is a
token span of it: a paragraph, a table or a list. Dropping the tags and gluing the words together
would turn a table into an unreadable run of cells, so the structure is kept as plain text:

- each table row (`<Tr>`) becomes one line, its cells (`<Td>`, `<Th>`, with or without attributes)
  joined by " | "; cells that are empty (after cleaning) are dropped;
- list items (`<Li>`, `<Dd>`, `<Dt>`), paragraphs, headings and other block tags start a new line;
- every other tag (`<A>`, `<B>`, `<Span>` ...) is dropped and its words run on.

No tag has to be closed and nothing has to nest (a table without rows gives one line of cells, an
unclosed `<P>` simply ends where the span ends), so any token list converts without error. A token
is a tag only if it looks like one (`<`, optional `/`, a letter, no spaces, `>`); a lone `<` or `>`
in the text is a word. The result goes through `clean_text`, so NQ's token spacing is undone too.
"""
from __future__ import annotations

import re
from collections.abc import Iterable

from embedfit.data.clean import clean_text

CELL_SEPARATOR = " | "

_TAG = re.compile(r"</?([A-Za-z][A-Za-z0-9]*)[^<>\s]*>")
_CELL_TAGS = frozenset({"td", "th"})
_BLOCK_TAGS = frozenset({
    "p", "div", "br", "hr", "table", "tr", "caption", "thead", "tbody", "tfoot",
    "ul", "ol", "li", "dl", "dd", "dt", "blockquote", "pre", "center", "section",
    "h1", "h2", "h3", "h4", "h5", "h6",
})


def tag_name(token: str) -> str | None:
    """The lower-case tag name if `token` is an HTML tag token (`<Th_colspan="2">` -> `th`), else None."""
    match = _TAG.fullmatch(token)
    return match.group(1).lower() if match else None


def html_to_text(tokens: Iterable[str] | str) -> str:
    """Readable text of a token span (a list of tokens, or the span as one space-separated string)."""
    if isinstance(tokens, str):
        tokens = tokens.split(" ")
    lines: list[list[list[str]]] = [[[]]]  # lines -> cells -> words

    def new_line() -> None:
        if any(lines[-1]):
            lines.append([[]])

    def new_cell() -> None:
        if lines[-1][-1]:
            lines[-1].append([])

    for token in tokens:
        name = tag_name(token)
        if name is None:
            if token:
                lines[-1][-1].append(token)
        elif name in _CELL_TAGS:
            new_cell()
        elif name in _BLOCK_TAGS:
            new_line()
    rows = []
    for line in lines:
        cells = (clean_text(" ".join(cell)) for cell in line if cell)
        rows.append(CELL_SEPARATOR.join(cell for cell in cells if cell))
    return clean_text("\n".join(rows))
