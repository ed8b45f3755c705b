"""Turn source text into readable text, the same way for every source (BEIR folder, pairs, simplified NQ).

Why: NQ text is token-spaced (`Röntgen , of Germany ( 1963 ) -- `, `` `` quoted '' ``, `is n't`),
scraped text carries HTML entities, invisible marks and control characters, and the same passage
reaches us in several spellings. Cleaning every passage, title and query with one function makes
them read naturally (what an embedding model was trained on) and keeps equal text equal.

What `clean_text` does, in order:
1. HTML entities written with their `;` are unescaped (`&amp;` -> `&`, `&#233;` -> `é`), repeatedly,
   so doubly escaped text ends up plain; a bare `&` (`AT&T`, `a=1&copy=2`) is left alone.
2. Line breaks of every kind (`\\r\\n`, `\\r`, `\\v`, `\\f`, U+0085, U+2028, U+2029 ...) become `\\n`,
   which is kept as a line separator (table rows from `html_text` are lines); tabs become spaces.
3. Control characters (C0 and C1, NUL included), lone surrogates, U+FFFE/U+FFFF and invisible
   format marks (zero-width space/joiners and LRM/RLM U+200B..U+200F, bidi embeddings U+202A..U+202E,
   word joiner, invisible operators and isolates U+2060..U+206F, Arabic letter mark U+061C, Mongolian
   vowel separator U+180E, soft hyphen U+00AD, the BOM U+FEFF) are removed. They carry no words; left
   in, they split or glue tokens invisibly (the shared corpus has 588 stray BOMs). The price: emoji
   joined by U+200D fall apart into their parts (a family emoji becomes three faces).
4. NFC normalisation (composed accents). Deliberately not NFKC: that would turn `²` into `2` and
   `ﬁ` into `fi`, changing meaning; `embedfit.types.normalise_for_id` applies NFKC for ids anyway.
5. Whitespace inside a line collapses to one space; lines are stripped; empty lines are dropped.
6. NQ's token spacing is undone (the rules below only ever delete a space or shorten a sequence):
   - `` `` `` and `''` become `"` (`` `` x '' `` -> `"x"`); `''` after a number (`35 ''`, seconds of
     arc) becomes `"` too, which is the usual ASCII spelling.
   - no space before `, . ; : ! ? % ) ]`, none after `( [`; `11 : 00` -> `11:00` (digits on both sides);
     `Spouse ( s )` -> `Spouse(s)`.
   - clitics rejoin: `fund 's` -> `fund's`, `is n't` -> `isn't`, `don 't` -> `don't`,
     `'re 'll 've 'd 'm` likewise; plural possessives `Varys ' loyalty` -> `Varys' loyalty`.
   - a hyphen token between word characters joins them: `in - state` -> `in-state`,
     `2017 - 07 - 16` -> `2017-07-16`. A hyphen next to anything else (`; - 98.5`, `% - 4`) is kept.
   - `--` (NQ's spelling of a dash) becomes an en dash: `1 -- 5` -> `1–5` between digits, otherwise a
     spaced en dash `not – as some wanted –`, the form Wikipedia's style guide allows. Only a
     free-standing `--` token is changed; `--` inside a word (`foo--bar`, command-line flags) is kept.
   - `(. 583 )` and `$. 9` (NQ's split of `.583`, `$.9`) -> `(.583)`, `$.9`.
7. Steps 1-6 are repeated until a pass changes nothing (at most 16 passes; real text needs two:
   one to clean, one to confirm). After the first pass has normalised line breaks, NFC and spaces, a
   pass can only shorten the text (a rule created by an earlier rule, or `&amp;amp;`), so it settles
   fast and `clean_text(clean_text(x)) == clean_text(x)`; tests check this with hypothesis.

Deliberately untouched: letters, digits and their order (numbers such as `$734,000` and `53.7`
keep their form), case, `/` (`km / h` could be a ratio or an alternative), `...`, single `'` tokens
that are not a clitic or plural possessive (`That ' 70s Show`, `Comin ' to`), other punctuation,
emoji and every script. For real text without HTML entities the letters and digits of the output
equal those of the input, in order (tested on all 8,551 shared passages), so `embedfit.types.stable_id`
gives the same id before and after cleaning. (Contrived exception: an invisible mark wedged between a
letter and its combining accent; removing it lets NFC compose the two.)
"""
from __future__ import annotations

import html
import re
import unicodedata

_MAX_PASSES = 16

# Line separators that str.splitlines() knows, mapped to "\n" before anything else.
_LINE_BREAKS = re.compile(r"\r\n|[\r\n\v\f\x1c\x1d\x1e\x85\u2028\u2029]")

_INVISIBLE = (
    "\u00ad\u061c\u180e"
    + "".join(map(chr, range(0x200B, 0x2010)))
    + "".join(map(chr, range(0x202A, 0x202F)))
    + "".join(map(chr, range(0x2060, 0x2070)))
    + "\ufeff\ufffe\uffff"
)
# C0 and C1 controls (except "\n", which is the line separator), invisible marks, lone surrogates.
_DROP = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f" + re.escape(_INVISIBLE) + "\ud800-\udfff]"
)
# Only entities with their closing ";" (`&amp;`, `&#233;`, `&#xE9;`): HTML also accepts some without
# it, but then `Q&A`-like text such as `a=1&copy=2` would turn into `a=1©=2`.
_ENTITY = re.compile(r"&(?:#[0-9]{1,8}|#[xX][0-9a-fA-F]{1,8}|[A-Za-z][A-Za-z0-9]{1,31});")
_SPACES = re.compile(r"[^\S\n]+")  # any whitespace except the newline

_BLANK_LINES = re.compile(r" *\n[ \n]*")  # line ends, spaces around them and empty lines

# Token-spacing rules: (pattern, replacement), applied in this order on text whose only
# whitespace is single spaces and "\n". They use a literal space so they never join lines, and each
# starts with a literal (lookbehinds come after it) so that `re` can scan for it quickly.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), r)
    for p, r in (
        (r"`` ?", '"'),                                   # opening quote
        (r" ?''", '"'),                                   # closing quote
        (r" : (?<=\d : )(?=\d)", ":"),                    # 11 : 00 -> 11:00
        (r"\. (?<=[($]\. )(?=\d)", "."),                  # (. 583 -> (.583, $. 9 -> $.9
        (r" (?<=\w )(?=n't\b)", ""),                      # is n't -> isn't
        (r" (?<=\wn )(?='t\b)", ""),                      # don 't -> don't
        (r" (?<=\w )(?='(?:s|re|ll|ve|d|m)\b)", ""),      # fund 's -> fund's
        (r" (?<=\ws )(?='(?: |\n|$))", ""),               # Varys ' loyalty -> Varys' loyalty
        (r" -- (?<=\d -- )(?=\d)", "\u2013"),             # 1 -- 5 -> 1–5
        (r"--(?<![^ \n]--)(?![^ \n])", "\u2013"),         # free-standing -- -> –
        (r" - (?<=\w - )(?=\w)", "-"),                    # in - state -> in-state
        (r" +(?=[,.;:!?%)\]])", ""),                      # no space before closing punctuation
        (r"([(\[]) +", r"\1"),                            # no space after opening brackets
        (r" (?<=\w )(?=\(s\))", ""),                      # Spouse (s) -> Spouse(s)
    )
)


def _one_pass(text: str) -> str:
    if "&" in text:
        text = _ENTITY.sub(lambda m: html.unescape(m.group()), text)
    text = _LINE_BREAKS.sub("\n", text)
    text = _DROP.sub("", text)
    text = unicodedata.normalize("NFC", text)
    text = _BLANK_LINES.sub("\n", _SPACES.sub(" ", text)).strip(" \n")
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


def clean_text(text: str) -> str:
    """Readable, normalised text (see the module docstring); idempotent and never raises on a str."""
    for _ in range(_MAX_PASSES):
        cleaned = _one_pass(text)
        if cleaned == text:
            return cleaned
        text = cleaned
    return text
