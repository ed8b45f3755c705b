"""Saving and loading adapters as self-describing folders.

    ADAPTER/
      config.json         AdapterConfig: kind, sides, dimensions, base model, data fingerprint, settings, dev metrics
      model.safetensors   the module's tensors
      memory.safetensors  the query memory's vectors, one per moved passage (adapters with a memory)
      memory.json         those passages' ids, in the same order
      curves.json/.png    training curves (written by training)

Saving writes a temporary folder beside the target and renames it into place, so an interrupted save
leaves the previous adapter intact. It replaces only an adapter folder (config.json naming our format)
or an empty one, unless forced: anything else at the target is refused before any work (`embedfit.outputs`).
Loading never changes anything on disk; it rebuilds the module from config.json and refuses an adapter
whose base model or dimension does not match the store it is used with.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from embedfit import atomic
from embedfit.adapters.adapter import (
    ADAPTER_FORMAT,
    FORMAT_VERSION,
    OLD_ADAPTER_FORMATS,
    Adapter,
    AdapterConfig,
    PassageMemory,
)
from embedfit.adapters.modules import KINDS, build_module
from embedfit.errors import MismatchError, StoreError
from embedfit.outputs import OutputKind, check_output, read_json_object

log = logging.getLogger(__name__)
#: the query memory's files in an adapter folder: vectors, then ids
MEMORY_FILES = ("memory.safetensors", "memory.json")


def is_adapter_dir(path: Path) -> bool:
    """True for a folder whose config.json names our adapter format (this one or an earlier name: an older
    adapter is still ours to replace, and is refused when loaded)."""
    cfg = read_json_object(Path(path) / "config.json")
    return cfg is not None and cfg.get("format") in (ADAPTER_FORMAT, *OLD_ADAPTER_FORMATS)


ADAPTER_OUTPUT = OutputKind("an adapter folder", is_adapter_dir)


def check_adapter_out(out_dir: str | Path, force: bool = False,
                      protect: Mapping[str, str | Path] | None = None) -> Path:
    """Refuse an `--out` that is not ours to replace, before training starts (rules: `embedfit.outputs`;
    `protect`: the store it is trained from)."""
    return check_output(out_dir, ADAPTER_OUTPUT, force, protect=protect)


def save_adapter(adapter: Adapter, out_dir: str | Path, extra_files: dict[str, bytes] | None = None,
                 force: bool = False, before_publish: Callable[[Path], None] | None = None) -> Path:
    """Write `adapter` to `out_dir` (beside, then swapped in). `before_publish(tmp)` runs on the complete folder
    before the swap: work that must succeed before the old adapter is replaced (its projection) goes there,
    and when it raises the old adapter stays as it was."""
    out_dir = check_adapter_out(out_dir, force)
    atomic.recover_dir(out_dir)
    if atomic.remove_stale_temps(out_dir):
        log.info("removed the temporary folder of an interrupted save beside %s", out_dir)
    tmp = atomic.make_temp_dir(out_dir)
    try:
        state = {k: v.detach().contiguous() for k, v in adapter.module.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        if adapter.memory is not None:
            save_file({"vectors": torch.from_numpy(np.ascontiguousarray(adapter.memory.vectors, dtype=np.float32))},
                      str(tmp / MEMORY_FILES[0]))
            (tmp / MEMORY_FILES[1]).write_text(json.dumps(list(adapter.memory.ids)) + "\n", encoding="utf-8")
        (tmp / "config.json").write_text(atomic.json_text(adapter.config.to_json()), encoding="utf-8")
        for name, data in (extra_files or {}).items():
            (tmp / name).write_bytes(data)
        atomic.fsync_tree(tmp)  # make the contents durable before the rename publishes them
        if before_publish is not None:
            before_publish(tmp)
        atomic.replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _readable(path: Path) -> Path:
    """`path`, or where the previous adapter is when a save to `path` was killed between its two renames
    (it is whole, under our hidden name); the repair is left to the next save: a reader changes nothing."""
    if not path.exists() and (aside := atomic.interrupted_aside(path)) is not None:
        log.warning("a save to %s was interrupted; reading the previous adapter from %s", path, aside)
        return aside
    return path


def load_adapter(path: str | Path) -> Adapter:
    """Read an adapter folder (written by `embedfit train` or `FitResult.save`), checked on the way in.

    Args:
        path: the adapter folder.

    Returns:
        The `Adapter`: `project_queries(x)`, `project_passages(x, ids)`, `describe()`, `.config`.

    Raises:
        StoreError: no adapter there, an older format (the message names the command that retrains it), a config
            field of the wrong type or range, damaged weights, or NaN/inf in the weights or the query memory.

    Example:
        >>> adapter = ef.load_adapter("adapters/l6")                       # doctest: +SKIP
        >>> q = adapter.project_queries(my_query_vectors)                  # doctest: +SKIP
    """
    path = _readable(Path(path))
    cfg_path = path / "config.json"
    if not cfg_path.exists():
        raise StoreError(f"no adapter at {path} (no config.json). Train one with:\n"
                         f"  embedfit train --store STORE --out {path}")
    try:
        raw = json.loads(cfg_path.read_text("utf-8"))
        have = (raw.get("format"), raw.get("format_version")) if isinstance(raw, dict) else (None, None)
        if have != (ADAPTER_FORMAT, FORMAT_VERSION):
            raise StoreError(f"adapter {path} has format {have[1]!r} ({have[0]!r}); this version reads format "
                             f"{FORMAT_VERSION} ({ADAPTER_FORMAT}). Train it again: embedfit train --store STORE "
                             f"--model {raw.get('base_model', 'MODEL') if isinstance(raw, dict) else 'MODEL'} "
                             f"--out {path}")
        config = AdapterConfig.from_json(raw)
    except (json.JSONDecodeError, TypeError) as exc:
        raise StoreError(f"{cfg_path} is not a valid adapter config ({exc})") from None
    if problem := config_problem(config):
        raise StoreError(f"{cfg_path} is not a valid adapter config: {problem} (edited by hand or damaged?); train it "
                         f"again: embedfit train --store STORE --out {path}")
    module = build_module(config.kind, config.dim_in, config.dim_out, config.rank, config.hidden)
    try:
        state = load_file(str(path / "model.safetensors"))
        module.load_state_dict(state)
    except (OSError, RuntimeError, SafetensorError) as exc:  # missing/damaged file, or weights of another shape
        raise StoreError(f"cannot read {path / 'model.safetensors'}: {exc}") from exc
    bad = sorted(k for k, v in state.items() if not bool(torch.isfinite(v).all()))
    if bad:  # a diverged training or a damaged file: every search would fail, or rank by NaN, without a word
        raise StoreError(f"adapter {path}: model.safetensors holds non-finite numbers (NaN or inf) in {', '.join(bad)}; "
                         f"train it again: embedfit train --store STORE --model {config.base_model} --out {path}")
    return Adapter(config, module, _load_memory(path, config))


def _is_int(v: object, low: int = 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


def config_problem(c: AdapterConfig) -> str | None:
    """What is wrong with a loaded config (a field of the wrong type or out of range), or None: checked once, on
    load, so a tampered value is one clear message instead of a TypeError deep in projection or export."""
    checks = [
        ("name", isinstance(c.name, str) and c.name.strip() != "", "a non-empty string"),
        ("kind", c.kind in KINDS, f"one of {', '.join(KINDS)}"),
        ("sides", c.sides in ("query", "both"), "query or both"),
        ("dim_in", _is_int(c.dim_in), "a positive integer"),
        ("dim_out", _is_int(c.dim_out), "a positive integer"),
        ("rank", _is_int(c.rank), "a positive integer"),
        ("hidden", _is_int(c.hidden), "a positive integer"),
        ("base_model", isinstance(c.base_model, str) and c.base_model != "", "a non-empty string"),
        ("data_fingerprint", isinstance(c.data_fingerprint, str), "a string"),
        ("raw_collection", isinstance(c.raw_collection, str), "a string"),
        ("identity", isinstance(c.identity, bool), "true or false"),
        ("uid", isinstance(c.uid, str) and c.uid.isalnum(), "letters and digits"),
        ("training", isinstance(c.training, dict), "an object"),
        ("dev_metrics", isinstance(c.dev_metrics, dict), "an object"),
        ("fusion", c.fusion is None or isinstance(c.fusion, dict), "null or an object"),
        ("selection", c.selection is None or isinstance(c.selection, dict), "null or an object"),
        ("memory", c.memory is None or (isinstance(c.memory, dict) and isinstance(c.memory.get("alpha"), (int, float))
                                        and not isinstance(c.memory.get("alpha"), bool)
                                        and math.isfinite(c.memory["alpha"]) and c.memory["alpha"] >= 0),
         "null or an object whose alpha is a number >= 0"),
    ]
    for name, ok, want in checks:
        if not ok:
            return f"{name} must be {want}, got {json.dumps(getattr(c, name), default=str)[:80]}"
    return None


def _load_memory(path: Path, config: AdapterConfig) -> PassageMemory | None:
    if config.memory is None:
        return None
    try:
        vectors = load_file(str(path / MEMORY_FILES[0]))["vectors"].numpy()
        ids = json.loads((path / MEMORY_FILES[1]).read_text("utf-8"))
    except (OSError, KeyError, json.JSONDecodeError, SafetensorError) as exc:
        raise StoreError(f"adapter {path} has a query memory but its files cannot be read: {exc}") from exc
    if not isinstance(ids, list) or len(ids) != len(vectors) or vectors.ndim != 2 or vectors.shape[1] != config.dim_out:
        raise StoreError(f"adapter {path}: the query memory's ids and vectors do not match (damaged save?)")
    if not np.isfinite(vectors).all():
        raise StoreError(f"adapter {path}: the query memory ({MEMORY_FILES[0]}) holds non-finite numbers (NaN or inf); "
                         f"train it again: embedfit train --store STORE --model {config.base_model} --out {path}")
    return PassageMemory(tuple(str(i) for i in ids), vectors.astype(np.float32))


def adapter_sha(path: str | Path) -> str:
    """Hash of the saved weights and config: names a projection so a retrained adapter is re-projected."""
    h = hashlib.sha256()
    path = _readable(Path(path))
    for name in ("config.json", "model.safetensors", *MEMORY_FILES):
        if name in MEMORY_FILES and not (path / name).exists():
            continue
        h.update((path / name).read_bytes())
    return h.hexdigest()[:16]


def check_compatible(adapter: Adapter, model_id: str, dim: int, data_fingerprint: str | None = None) -> None:
    """Refuse an adapter trained for another base model or dimension; warn on other data."""
    c = adapter.config
    if c.base_model != model_id:
        raise MismatchError(f"adapter {c.name!r} was trained on {c.base_model!r} embeddings, but the store's model is "
                            f"{model_id!r}; train one for this model (embedfit train --model {model_id})")
    if c.dim_in != dim:
        raise MismatchError(f"adapter {c.name!r} expects {c.dim_in}-d embeddings, but {model_id!r} has {dim}-d")
    if data_fingerprint and c.data_fingerprint != data_fingerprint:
        log.warning("adapter %r was trained on data %s, the store holds data %s: its numbers on this store may "
                    "include its own training queries", c.name, c.data_fingerprint, data_fingerprint)
