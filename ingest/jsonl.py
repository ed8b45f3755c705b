"""Reading JSON-lines files with errors that name the file and line.

Tolerates what real files carry (a UTF-8 BOM, CRLF line ends, blank lines, gzip) and turns everything
else (invalid UTF-8, a truncated line, a line that is not an object, a field of the wrong type) into a
`DataError` pointing at the line, so a bad file never gets half-way into the store.
"""
from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterator

from core.errors import DataError


def open_text(path: Path):
    """Open `.gz` or plain text as UTF-8; BOM stripped ('utf-8-sig')."""
    if not path.exists():
        raise DataError("file not found", path)
    if path.is_dir():
        raise DataError("is a folder, expected a file", path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig", newline=None)
    return path.open("r", encoding="utf-8-sig", newline=None)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (1-based line number, object) for every non-blank line."""
    path = Path(path)
    n_objects = 0
    try:
        with open_text(path) as fh:
            for line_no, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"not valid JSON ({exc.msg} at column {exc.colno}); truncated line?", path, line_no) from None
                except RecursionError:
                    raise DataError("JSON nested too deeply", path, line_no) from None
                if not isinstance(obj, dict):
                    raise DataError(f"expected a JSON object, got {type(obj).__name__}", path, line_no)
                n_objects += 1
                yield line_no, obj
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text ({exc.reason} at byte {exc.start})", path) from None
    except (gzip.BadGzipFile, EOFError, OSError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot read ({type(exc).__name__}: {exc})", path) from None
    if n_objects == 0:
        raise DataError("empty file: no JSON lines", path)


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
