"""Files we build from installed models, cached and checked: `cached_build` (used by `embedfit.embed.int8` for the
int8 graphs and by `embedfit.embed.onnx_export` for the fp32 export of all-MiniLM-L6-v2).

An entry is `NAME-<digest of its key>.onnx` in the model cache (`embedfit.settings.default_model_cache()`, env
EMBEDFIT_MODEL_CACHE) plus a sidecar `.json` holding the key, size and sha256. The file is written atomically and the
sidecar after it, so the sidecar is the commit mark; on every load the file is checked against it (about 0.2 s for
90 MB). A missing sidecar, a truncated or garbled file, or a sidecar of another key is rebuilt, never used.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from embedfit import atomic
from embedfit.errors import InputError
from embedfit.settings import default_model_cache

log = logging.getLogger(__name__)

SIDECAR_FORMAT = "embedfit.built-model/2"


def key_digest(obj: dict) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def check_built(path: Path, key: dict) -> str | None:
    """None when `path` is a complete build of `key` (its sidecar agrees on key, size and sha256), else why not."""
    try:
        meta = json.loads(_sidecar(path).read_text("utf-8"))
    except FileNotFoundError:
        return "no sidecar (an interrupted build?)" if path.exists() else "not built yet"
    except (OSError, ValueError) as exc:
        return f"unreadable sidecar ({exc})"
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT or meta.get("key") != key:
        return "sidecar describes another build"
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "file missing"
    if size != meta.get("size"):
        return f"size {size} != {meta.get('size')} (truncated?)"
    if atomic.sha256_file(path) != meta.get("sha256"):
        return "sha256 mismatch (garbled?)"
    return None


def built_sha256(path: Path) -> str:
    """The sha256 of a file `cached_build` made, as its sidecar records it (checked when it was returned)."""
    return json.loads(_sidecar(path).read_text("utf-8"))["sha256"]


def _usable_folder(folder: Path) -> Path:
    """The model cache folder, created; InputError (naming EMBEDFIT_MODEL_CACHE) when it is a file or cannot be
    made or written (e.g. under /proc), instead of a traceback from deep inside a build."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"the model cache {folder} is not a writable folder ({type(exc).__name__}: {exc.strerror}); "
                         "point EMBEDFIT_MODEL_CACHE at a folder you can write") from exc
    return folder


@contextmanager
def _building(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path`'s build for the block (blocking: a second builder waits its turn)."""
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def cached_build(name: str, key: dict, build: Callable[[Path], None], cache_dir: Path | None = None) -> Path:
    """The file `name-<digest of key>.onnx` in the model cache, built by `build(tmp_path)` when absent or damaged.

    `build` writes a complete file at the path it is given (a temporary folder beside the cache); the result
    is then published atomically, and the sidecar after it. A damaged entry is logged and rebuilt.
    """
    folder = _usable_folder(Path(cache_dir) if cache_dir is not None else default_model_cache())
    path = folder / f"{name}-{key_digest(key)}.onnx"
    problem = check_built(path, key)
    if problem is None:
        log.debug("using cached %s", path)
        return path
    with _building(path):  # one builder per entry: another process building it is waited for, then reused
        problem = check_built(path, key)
        if problem is None:
            log.info("using %s, built meanwhile by another process", path)
            return path
        if problem != "not built yet":
            log.warning("rebuilding %s: %s", path, problem)
        atomic.remove_stale_temps(path)  # only a crashed build's: a live one holds the lock
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.", suffix=".tmp", dir=folder) as tmp:
            out = Path(tmp) / "model.onnx"
            build(out)
            data = out.read_bytes()
        _sidecar(path).unlink(missing_ok=True)  # the old mark goes first: a crash below leaves "no sidecar"
        atomic.write_bytes(path, data)
        atomic.write_json(_sidecar(path), {"format": SIDECAR_FORMAT, "key": key, "size": len(data),
                                           "sha256": hashlib.sha256(data).hexdigest()})
    log.info("built %s (%.1f MB)", path, len(data) / 1e6)
    return path
