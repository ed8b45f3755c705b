"""Atomic file and folder writes.

A reader (or a rerun after `kill -9`) must see either the old file or the complete new one, never a
half-written one. The recipe: write a temporary file in the same folder, flush and fsync it, then
`os.replace` it over the target and fsync the folder so the rename itself is durable.
"""
from __future__ import annotations

import glob
import hashlib
import json
import math
import numbers
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MB blocks (checksums of what we wrote, checked before it is trusted)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_text(path: str | Path, text: str) -> None:
    """Replace `path` with UTF-8 `text` atomically."""
    write_bytes(path, text.encode("utf-8"))


def json_safe(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, inf: an undefined mean, a fold without unseen queries) as None.

    JSON has no NaN: Python writes a bare `NaN` that strict readers (browsers, jq, other languages) refuse. A numpy
    float or integer becomes a Python one on the way (json cannot write those)."""
    if isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, numbers.Integral) and not isinstance(obj, int):  # a numpy integer
        return int(obj)
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def json_text(obj: Any) -> str:
    """`obj` as indented, strict JSON (non-finite numbers as null; anything else non-finite is an error)."""
    return json.dumps(json_safe(obj), indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    """Replace `path` with `obj` as indented, strict JSON (`json_text`), atomically."""
    write_text(path, json_text(obj))


def fsync_tree(folder: str | Path) -> None:
    """fsync every file under `folder` (and the folders themselves): make a written folder durable before the
    rename that publishes it (`replace_dir`)."""
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            with open(Path(dirpath) / name, "rb") as fh:
                os.fsync(fh.fileno())
        _fsync_dir(Path(dirpath))


def _replace_marker(target: Path) -> Path:
    return target.parent / f".{target.name}.replacing.json"


def replace_dir(tmp_dir: str | Path, target: str | Path) -> None:
    """Move a fully written `tmp_dir` (from `make_temp_dir`) to `target`, replacing the folder there.

    POSIX cannot rename a folder over a non-empty one, so the old folder is renamed aside to a hidden name
    of ours and removed only after the new one is in place. A marker file beside the target, written
    before the first rename and removed after the last step, records that aside name: it is the only
    evidence `recover_dir` acts on, so an unrelated `NAME.old` (or anything else) is never touched.
    The caller decides beforehand whether `target` may be replaced (`embedfit.outputs.check_output`); here a
    target that is not a folder is refused, as a last guard.
    """
    tmp_dir, target = Path(tmp_dir), Path(target)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} is not a folder; refusing to replace it")
    marker = _replace_marker(target)
    aside = None
    if target.exists():
        aside = target.parent / (tmp_dir.name.removesuffix(".tmp") + ".old")  # .NAME.XXXX.old: hidden, ours
        write_json(marker, {"target": target.name, "aside": aside.name, "new": tmp_dir.name})
        os.replace(target, aside)
    os.replace(tmp_dir, target)
    _fsync_dir(target.parent)
    if aside is not None:
        shutil.rmtree(aside)
        marker.unlink(missing_ok=True)
        _fsync_dir(target.parent)


def interrupted_aside(target: str | Path) -> Path | None:
    """The previous folder of an interrupted `replace_dir`, when our marker says one is set aside."""
    target = Path(target)
    info = _read_marker(target)
    if info is None:
        return None
    aside = target.parent / info["aside"]
    return aside if aside.is_dir() else None


def _read_marker(target: Path) -> dict | None:
    marker = _replace_marker(target)
    try:
        info = json.loads(marker.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    aside = info.get("aside") if isinstance(info, dict) else None
    # only a hidden name of ours beside the target is ever acted on, whatever the file says
    if (not isinstance(aside, str) or "/" in aside or not aside.startswith(f".{target.name}.")
            or not aside.endswith(".old")):
        return None
    return info


def recover_dir(target: str | Path) -> None:
    """Finish or undo a `replace_dir` that was interrupted, as its marker records; a writer calls this.

    Previous folder aside and no target: the rename back restores it. Both present: the new folder was in
    place, so the aside copy is removed. No marker of ours: nothing is touched.
    """
    target = Path(target)
    info = _read_marker(target)
    marker = _replace_marker(target)
    if info is None:
        return
    aside = target.parent / info["aside"]
    if aside.is_dir() and not target.exists():
        os.replace(aside, target)
    elif aside.is_dir():
        shutil.rmtree(aside)
    marker.unlink(missing_ok=True)
    _fsync_dir(target.parent)


def remove_stale_temps(target: str | Path) -> int:
    """Delete temporary files/folders of earlier writes to `target` that died before their rename.

    `kill -9` skips every `except`/`finally`, so a killed writer leaves its `.NAME.*.tmp` behind. Only a
    writer may call this (it owns `target`; a reader could delete a live writer's work). Returns how many.
    """
    target = Path(target)
    n = 0
    for tmp in target.parent.glob(f".{glob.escape(target.name)}.*.tmp") if target.parent.exists() else ():
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        n += 1
    return n


def make_temp_dir(target: str | Path) -> Path:
    """A fresh temporary folder beside `target` (same filesystem, so the final rename is atomic)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
