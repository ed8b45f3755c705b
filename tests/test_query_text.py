"""`clean_query`: what reaches the embedder from a question box or an API call (the edge inputs a text box can send)."""
from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embedfit.data.query_text import clean_query
from embedfit.errors import InputError

LIMIT = 2000


@pytest.mark.parametrize("text, expected, n_notices", [
    (None, "", 0),
    ("", "", 0),
    ("   ", "", 0),
    ("\t\n\r  \u00a0\u2003", "", 0),                     # every kind of whitespace, incl. no-break and em space
    ("\x00", "", 1),
    ("\x00\x01\x1b\x7f", "", 1),                          # only control characters: nothing left, one notice
    ("who\x00 wrote\x07 hamlet", "who wrote hamlet", 1),
    ("who\twrote\nhamlet\r\n", "who wrote hamlet", 0),   # tabs and newlines are whitespace, not removed controls
    ("  who   wrote  hamlet  ", "who wrote hamlet", 0),
    ("e\u0301te", "\u00e9te", 0),                         # NFC: e + combining acute == é
    ("\ufeffwho wrote hamlet", "who wrote hamlet", 1),     # byte-order mark
    ("abc\u202edcba", "abcdcba", 1),                      # right-to-left override ("Trojan Source") removed
    ("abc\u2066x\u2069", "abcx", 1),                      # bidi isolates removed
    ("\u200fמי כתב את המלט", "\u200fמי כתב את המלט", 0),  # right-to-left mark and Hebrew kept
    ("من كتب هاملت؟", "من كتب هاملت؟", 0),                # Arabic kept
    ("who sings 👨‍👩‍👧 song", "who sings 👨‍👩‍👧 song", 0),  # emoji with zero-width joiners kept whole
    ("\ud800who", "who", 1),                              # lone surrogate (only reachable from Python callers)
    ("a", "a", 0),
])
def test_edge_inputs(text, expected, n_notices):
    out, notices = clean_query(text, LIMIT)
    assert out == expected
    assert len(notices) == n_notices


def test_control_notice_counts_characters():
    _, notices = clean_query("a\x00b\x01c", LIMIT)
    assert notices == ["Removed 2 control characters from the question."]


def test_100k_characters_are_cut_with_a_notice():
    out, notices = clean_query("why " * 25_000, LIMIT)
    assert len(out) <= LIMIT and out.startswith("why why") and not out.endswith(" ")
    assert notices == ["The question was 100,000 characters long; only the first 2,000 were used."]


def test_a_huge_input_is_cut_even_when_its_tail_would_collapse():
    # 10 MB: only a bounded prefix is looked at, and the notice reports the real length
    out, notices = clean_query("a" + " " * 10_000_000, LIMIT)
    assert out == "a"
    assert "10,000,001 characters" in notices[0]


@pytest.mark.parametrize("n, cut", [(LIMIT - 1, False), (LIMIT, False), (LIMIT + 1, True)])
def test_limit_boundary(n, cut):
    out, notices = clean_query("x" * n, LIMIT)
    assert len(out) == min(n, LIMIT)
    assert bool(notices) is cut


def test_the_limit_applies_after_whitespace_collapse():
    out, notices = clean_query("a" + " " * 5000 + "b", LIMIT)  # 5,002 characters typed, 3 meaningful
    assert out == "a b" and notices == []


def test_non_text_is_refused():
    with pytest.raises(InputError, match="must be text"):
        clean_query(123, LIMIT)  # type: ignore[arg-type]


def test_limit_must_be_positive():
    with pytest.raises(ValueError):
        clean_query("a", 0)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8") | st.sampled_from("\x00\x1b\u202e\ufeff\u200f \t\n"), max_size=80),
       st.integers(min_value=1, max_value=50))
def test_invariants(text, limit):
    out, _ = clean_query(text, limit)
    assert len(out) <= limit
    assert out == out.strip() and "  " not in out
    assert not any(unicodedata.category(c) in ("Cc", "Cs") for c in out)
    assert not any(c in out for c in "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff")
    assert unicodedata.is_normalized("NFC", out)
    again, notices = clean_query(out, limit)
    assert again == out and notices == []  # cleaning is idempotent
