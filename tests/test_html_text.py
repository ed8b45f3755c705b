"""`html_to_text` on real NQ simplified spans (tables, lists, paragraphs), broken HTML and any tokens.

The oracle for real spans is a deliberately different, naive reading of the same tokens: split the
span at `<Tr>` / `<Li>` and their closing tags, strip anything tag-shaped with a regex, and compare
the letters and digits of each piece with the corresponding output line.
"""
from __future__ import annotations

import json
import logging
import re
import time
import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedfit.data.clean import clean_text
from embedfit.data.html_text import CELL_SEPARATOR, html_to_text, tag_name

logger = logging.getLogger(__name__)

NAIVE_TAG = re.compile(r"^<[^<>\s]+>$")


def alnum(text: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKC", text).lower() if c.isalnum())


def naive_pieces(tokens: list[str], tag: str) -> list[str]:
    """The span's text cut at every `<tag>` and `</tag>`, tags removed, pieces without words dropped."""
    pieces, current = [], []
    for token in tokens:
        if token in (f"<{tag}>", f"</{tag}>"):
            pieces.append(current)
            current = []
        elif not NAIVE_TAG.match(token):
            current.append(token)
    pieces.append(current)
    return [" ".join(p) for p in pieces if alnum(" ".join(p))]


@pytest.fixture(scope="module")
def documents(nq_dir) -> list[tuple[list[str], list[dict]]]:
    """(tokens, top-level candidates) of both real simplified records."""
    with (nq_dir / "simplified_sample.jsonl").open(encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return [
        (r["document_text"].split(" "), [c for c in r["long_answer_candidates"] if c["top_level"]])
        for r in records
    ]


def spans_starting_with(documents, first: str) -> list[list[str]]:
    return [
        tokens[c["start_token"]:c["end_token"]]
        for tokens, candidates in documents
        for c in candidates
        if tokens[c["start_token"]] == first
    ]


def test_real_tables_one_line_per_row(documents) -> None:
    tables = spans_starting_with(documents, "<Table>")
    assert len(tables) >= 6
    for span in tables:
        start = time.perf_counter()
        out = html_to_text(span)
        assert time.perf_counter() - start < 5.0
        lines = out.split("\n") if out else []
        rows = naive_pieces(span, "Tr")
        assert [alnum(line) for line in lines] == [alnum(row) for row in rows]
        assert "<" not in out.replace("< ", "")  # no tag survives (a lone "<" in the text may)


def test_real_infobox_reads_as_label_value_lines(documents) -> None:
    """The infobox of 'The Mother (How I Met Your Mother)', checked against the page itself."""
    tokens, candidates = documents[1]
    span = tokens[candidates[0]["start_token"]:candidates[0]["end_token"]]
    lines = html_to_text(span).split("\n")
    assert lines[0] == "Tracy McConnell"
    assert "Portrayed by | Cristin Milioti" in lines
    assert "Created by | Carter Bays Craig Thomas" in lines
    assert 'The Mother appearing in "The Locket"' in lines
    assert "Spouse(s) | Ted Mosby" in lines
    # Each line has one cell per non-empty <Td>/<Th> of its row.
    row_cells = [
        sum(1 for cell in re.split(r"<T[dh][^>]*>", row) if alnum(cell))
        for row in " ".join(span).split("<Tr>")[1:]
    ]
    assert [line.count(CELL_SEPARATOR) + 1 for line in lines] == row_cells


def test_real_lists_one_line_per_item(documents) -> None:
    """Every `<Ul>` ... `</Ul>` of both pages (lists are not top-level candidates there)."""
    lists = []
    for tokens, _ in documents:
        for start, token in enumerate(tokens):
            if token == "<Ul>":
                lists.append(tokens[start:tokens.index("</Ul>", start) + 1])
    assert len(lists) >= 40
    for span in lists:
        out = html_to_text(span)
        lines = out.split("\n") if out else []
        items = naive_pieces(span, "Li")
        assert [alnum(line) for line in lines] == [alnum(item) for item in items]


def test_real_paragraphs_are_one_clean_line(documents) -> None:
    paragraphs = spans_starting_with(documents, "<P>")
    assert len(paragraphs) >= 25
    for span in paragraphs:
        out = html_to_text(span)
        assert "\n" not in out and "<" not in out
        assert alnum(out) == alnum(" ".join(t for t in span if not NAIVE_TAG.match(t)))
        assert out == clean_text(out)


@pytest.mark.parametrize(
    "tokens,expected",
    [
        ([], ""),
        ([""], ""),
        (["<P>"], ""),
        (["<P>", "</P>", "<Table>", "</Table>"], ""),
        (["<P>", "Hello", ",", "world"], "Hello, world"),  # never closed
        (["</P>", "Hello", "</Td>", "</Tr>"], "Hello"),  # closed, never opened
        (["<Table>", "<Td>", "a", "</Td>", "<Td>", "b", "</Td>", "</Table>"], "a | b"),  # table without rows
        (["<Tr>", "<Td>", "a", "<Td>", "b"], "a | b"),  # cells never closed
        (["<Tr>", "<Th>", "Name", "</Th>", "<Th>", "</Th>", "<Th>", "Years", "</Th>", "</Tr>"], "Name | Years"),
        (['<Th_colspan="2">', "Tracy", "McConnell", "</Th>"], "Tracy McConnell"),
        (["<Tr>", "<Td>", "\u200f", "</Td>", "<Td>", "x", "</Td>"], "x"),  # a cell that cleans to nothing
        (["<Ul>", "<Li>", "one", "<Li>", "two", "<Ul>", "<Li>", "nested"], "one\ntwo\nnested"),
        (["<Dl>", "<Dt>", "Term", "</Dt>", "<Dd>", "Meaning", "</Dd>", "</Dl>"], "Term\nMeaning"),
        (["<H2>", "History", "</H2>", "<P>", "Founded", "in", "1963", ".", "</P>"], "History\nFounded in 1963."),
        (["<P>", "a", "<B>", "bold", "</B>", "<A_href=\"x\">", "link", "</A>", "</P>"], "a bold link"),
        (["<Tr>", "<Td>", "<Table>", "<Tr>", "<Td>", "inner", "</Td>", "</Tr>", "</Table>", "</Td>", "</Tr>"], "inner"),
        (["<", "3", ">", "</", "<>", "<1>", "a<P>b"], "< 3 > </ <> <1> a<P>b"),  # not tags: words
        (["<p>", "lower", "case", "</p>"], "lower case"),
        (["<P>", "\x00", "Tab\there", "</P>"], "Tab here"),
    ],
    ids=lambda v: repr(v)[:50],
)
def test_edge_spans(tokens: list[str], expected: str) -> None:
    assert html_to_text(tokens) == expected


def test_string_input_is_split_on_spaces() -> None:
    assert html_to_text("<P> R\u00f6ntgen , of Germany ( 1963 ) </P>") == "R\u00f6ntgen, of Germany (1963)"
    assert html_to_text("") == ""


def test_tag_name() -> None:
    assert tag_name('<Th_colspan="2">') == "th"
    assert tag_name("</Table>") == "table"
    assert tag_name("<H1>") == "h1"
    for word in ("<", ">", "</", "<>", "<1>", "a<P>", "<P", "<P >"):
        assert tag_name(word) is None


TAGS = ["<P>", "</P>", "<Table>", "</Table>", "<Tr>", "</Tr>", "<Td>", "</Td>", "<Th>", "</Th>",
        '<Th_colspan="2">', '<Td_colspan="2">', "<Ul>", "</Ul>", "<Ol>", "<Li>", "</Li>", "<H1>",
        "</H1>", "<H3>", "<Dl>", "<Dd>", "<Dt>", "<Br>", "<A>", "</A>", "<Span_x=\"1\">"]
WORDS = st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True)


def test_any_tokens_never_raise() -> None:
    tried = 0

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.one_of(st.sampled_from(TAGS), st.text(max_size=12)), max_size=60))
    def check(tokens: list[str]) -> None:
        nonlocal tried
        tried += 1
        out = html_to_text(tokens)
        assert out == clean_text(out)

    check()
    logger.info("html_to_text on arbitrary tokens: %d examples", tried)
    assert tried >= 300


def test_tags_and_words_keep_every_word_in_order() -> None:
    """With plain words between (unclosed, unbalanced) tags: no tag left, every word kept in order."""
    tried = 0

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.one_of(st.sampled_from(TAGS), WORDS), max_size=60))
    def check(tokens: list[str]) -> None:
        nonlocal tried
        tried += 1
        out = html_to_text(tokens)
        assert "<" not in out and ">" not in out
        words = [t for t in tokens if t not in TAGS]
        assert out.replace(CELL_SEPARATOR, " ").split() == words

    check()
    logger.info("html_to_text on tags and words: %d examples", tried)
    assert tried >= 300
