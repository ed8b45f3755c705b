"""Turn whatever a person (or an API caller) typed into a question we can embed: `clean_query`.

Why a pure function of its own: the app's textbox limit is enforced only in the browser, so the
handler must apply the same rules to text that arrives through the API, and the rules deserve
tests of their own (`""`, whitespace, `\\x00`, right-to-left marks, emoji, 100,000 characters).

The rules, in order:
1. `None` is the empty question; anything else that is not a string is refused (`InputError`).
2. Very long input is first trimmed to a generous prefix so that the work below stays bounded.
3. NFC normalisation (a composed "é" and "e + combining accent" embed alike).
4. Control characters (Unicode category Cc), lone surrogates (Cs), the byte-order mark and the
   bidirectional *embedding/override/isolate* controls are removed. Tabs and newlines become spaces.
   The bidi controls can make displayed text read differently from what is searched ("Trojan Source");
   the harmless direction marks (LRM, RLM) and joiners (ZWJ in emoji, ZWNJ in Persian) are kept.
5. Runs of whitespace collapse to one space; leading/trailing whitespace goes.
6. The result is cut to `max_chars` characters.

Every change a person might not expect (removed characters, the cut) is reported as a notice.
"""
from __future__ import annotations

import unicodedata

from embedfit.errors import InputError

#: bidi embedding/override (U+202A..U+202E), bidi isolates (U+2066..U+2069), byte-order mark
_INVISIBLE_CONTROLS = frozenset([*map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A)), "\ufeff"])
#: how much of an over-long input is looked at, as a multiple of `max_chars` (cleaning can only shorten)
_PRECUT_FACTOR = 4


def _is_removed(ch: str) -> bool:
    return ch in _INVISIBLE_CONTROLS or unicodedata.category(ch) in ("Cc", "Cs")


def clean_query(text: str | None, max_chars: int) -> tuple[str, list[str]]:
    """(the question to search, notices about what was changed). An empty result means "do not search"."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be positive, got {max_chars}")
    if text is None:
        return "", []
    if not isinstance(text, str):
        raise InputError(f"the question must be text, got {type(text).__name__}")
    notices: list[str] = []
    original_length = len(text)
    precut = max_chars * _PRECUT_FACTOR + 64
    if original_length > precut:
        text = text[:precut]
    text = unicodedata.normalize("NFC", text)

    kept: list[str] = []
    removed = 0
    for ch in text:
        if ch.isspace():
            kept.append(" ")
        elif _is_removed(ch):
            removed += 1
        else:
            kept.append(ch)
    if removed:
        notices.append(f"Removed {removed} control character{'s' if removed != 1 else ''} from the question.")
    text = " ".join("".join(kept).split())

    if len(text) > max_chars or original_length > precut:
        text = text[:max_chars].rstrip()
        notices.append(f"The question was {original_length:,} characters long; only the first {max_chars:,} were used.")
    return text, notices
