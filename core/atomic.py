"""Atomic file and folder writes.

A reader (or a rerun after `kill -9`) must see either the old file or the complete new one, never a
half-written one. The recipe: write a temporary file in the same folder, flush and fsync it, then
`os.replace` it over the target and fsync the folder so the rename itself is durable.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any


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


def write_json(path: str | Path, obj: Any) -> None:
    """Replace `path` with `obj` as indented JSON, atomically."""
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def replace_dir(tmp_dir: str | Path, target: str | Path) -> None:
    """Move a fully written `tmp_dir` to `target`, replacing any previous folder.

    POSIX cannot rename a folder over a non-empty one, so the old folder is first renamed aside and
    removed only after the new one is in place: at every instant either the old or the new complete
    folder exists at `target` (or, for one rename, at `target` + ".old", which `recover_dir` restores).
    """
    tmp_dir, target = Path(tmp_dir), Path(target)
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp_dir, target)
    _fsync_dir(target.parent)
    if old.exists():
        shutil.rmtree(old)


def recover_dir(target: str | Path) -> None:
    """Undo a `replace_dir` interrupted between its two renames (only `target.old` exists)."""
    target = Path(target)
    old = target.with_name(target.name + ".old")
    if old.exists() and not target.exists():
        os.replace(old, target)
    elif old.exists():
        shutil.rmtree(old)


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
