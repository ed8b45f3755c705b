"""Reading JSON-lines files with errors that name the file and line.

Tolerates what real files carry (a UTF-8 BOM, CRLF line ends, blank lines, gzip) and turns everything
else (invalid UTF-8, a truncated line, a line that is not an object, a field of the wrong type) into a
`DataError` pointing at the line, so a bad file never gets half-way into the store.
"""
from __future__ import annotations

import gzip
import json
import unicodedata
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from embedfit.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"


def _sniff(path: Path) -> bool:
    """True when `path` is gzip (by its magic bytes, not its name); DataError when it cannot be read."""
    try:
        with path.open("rb") as raw:
            magic = raw.read(2)
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except IsADirectoryError:
        raise DataError("is a folder, expected a file", path) from None
    except OSError as exc:
        raise DataError(f"cannot read the file ({exc.strerror or exc})", path) from None
    if path.name.endswith(".gz") and magic and magic != _GZIP_MAGIC:
        raise DataError("the name ends in .gz but the file is not gzip-compressed", path)
    return magic == _GZIP_MAGIC


def open_text(path: Path):
    """Open plain or gzip text as UTF-8 with the BOM stripped (for TSV files)."""
    if _sniff(path):
        return gzip.open(path, "rt", encoding="utf-8-sig", newline=None)
    return path.open("r", encoding="utf-8-sig", newline=None)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, JSON object) for each non-blank line; DataError for anything unreadable."""
    path = Path(path)
    is_gzip = _sniff(path)
    opener = gzip.open if is_gzip else open
    line_no = 0
    n_objects = 0
    try:
        with opener(path, "rb") as lines:
            for line_no, line in enumerate(lines, start=1):
                if line_no == 1 and line.startswith(_BOM):
                    line = line[len(_BOM):]
                if not line.strip():
                    continue
                n_objects += 1
                yield line_no, _decode(line, path, line_no)
    except (OSError, EOFError, zlib.error) as exc:
        what = "gzip data is corrupt or truncated" if is_gzip else "cannot read the file"
        raise DataError(f"{what} ({exc})", path, line_no + 1) from None
    if n_objects == 0:
        raise DataError("empty file: no JSON lines", path)


def _decode(line: bytes, path: Path, line_no: int) -> dict:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text (byte {exc.start + 1} of the line)", path, line_no) from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"not valid JSON ({exc.msg} at column {exc.colno}); truncated line?", path, line_no) from None
    except (ValueError, RecursionError) as exc:  # e.g. a 5,000-digit number, absurd nesting
        raise DataError(f"not valid JSON for this loader ({type(exc).__name__}: {exc})", path, line_no) from None
    if not isinstance(record, dict):
        raise DataError(f"expected a JSON object, got {type(record).__name__}", path, line_no)
    return record


def get_str(obj: dict, keys: tuple[str, ...], path: Path, line: int, required: bool = True) -> str | None:
    """The first of `keys` present in `obj`, which must be a string (ints are accepted for ids)."""
    for key in keys:
        if key in obj and obj[key] is not None:
            value = obj[key]
            if isinstance(value, bool) or not isinstance(value, (str, int)):
                raise DataError(f"field {key!r} must be a string, got {type(value).__name__}", path, line)
            return str(value)
    if required:
        raise DataError(f"missing field {' or '.join(repr(k) for k in keys)}", path, line)
    return None


def get_id(obj: dict, keys: tuple[str, ...], path: Path, line: int, required: bool = True) -> str | None:
    """An id field: `get_str`, stripped, not blank, without control or lone surrogate characters.

    Ids become Chroma record ids and keys in the store's files. Chroma refuses an empty id in the middle of
    the upsert and a lone surrogate cannot be written as UTF-8, so such ids would fail only after the store
    had been touched; here they fail while loading, naming the line. Whitespace around an id is dropped
    because qrels.tsv ids are stripped too, so both sides agree. An optional id that is blank counts as absent.
    """
    value = get_str(obj, keys, path, line, required)
    if value is None:
        return None
    value = value.strip()
    if not value:
        if not required:
            return None
        raise DataError(f"empty id in field {' or '.join(repr(k) for k in keys)}", path, line)
    bad = next((ch for ch in value if unicodedata.category(ch) in ("Cc", "Cs")), None)
    if bad is not None:
        raise DataError(f"id {value[:40]!r} contains the control character U+{ord(bad):04X}", path, line)
    return value
