"""Where a command may write: it replaces only what it made.

Every output the product writes (the store folder, an adapter folder, the eval report folder, a bench or
reliability JSON file, export folders) is checked here *before* the work starts, so that a mistyped path
costs a message, not a user's folder or an hour of work thrown away at the end:

- a path that must be a folder and is a file (or the other way round) is refused;
- an existing, non-empty folder is overwritten only when it is recognisably ours (each `OutputKind` knows
  the file that says so, e.g. an adapter's `config.json` naming our format), or when the user passed
  `--force`; otherwise the command stops with a message that names the folder and changes nothing;
- the place must be writable: the parent folders are created and a probe file is written and removed
  beside the target, so "permission denied" or a path under /proc is reported in the first second;
- some paths are never an output, `--force` or not, because replacing them loses work nobody asked to lose:
  an empty path or `.` (an unset shell variable), the current folder or one above it, the home folder, the
  command's own inputs (`protect`: the adapter being exported, the store being read) or a folder holding
  them, a folder holding a git repository, a store or an adapter of ours, and a symbolic link (replacing
  it would swap the link for a folder and leave its target behind; the message names the real path).

Reading never goes through here and never changes anything on disk.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from embedfit.errors import OutputError


@dataclass(frozen=True)
class OutputKind:
    """One kind of output: what to call it in messages and how to recognise one of ours."""

    name: str
    #: True when the existing path (a folder, or a file for file kinds) was written by this product
    recognise: Callable[[Path], bool]
    is_dir: bool = True
    #: True when writing replaces the whole folder (its other contents are lost), False when files are
    #: written into it (other files stay)
    replaces: bool = True

    def force_hint(self) -> str:
        return ("pass --force to replace it (what it holds now is deleted)" if self.replaces and self.is_dir
                else "pass --force to write into it anyway" if self.is_dir else "pass --force to overwrite it")


def read_json_object(path: Path) -> dict | None:
    """The JSON object in `path`, or None when it is missing, unreadable or not an object (never raises)."""
    try:
        obj = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def json_file_with(keys: tuple[str, ...]) -> Callable[[Path], bool]:
    """A recogniser for a JSON file of ours: an object holding every one of `keys`."""
    def recognise(path: Path) -> bool:
        obj = read_json_object(path)
        return obj is not None and all(k in obj for k in keys)
    return recognise


def _describe_contents(folder: Path, limit: int = 3) -> str:
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
    return f"{len(names)} entr{'y' if len(names) == 1 else 'ies'}: {shown}"


def _is_empty_dir(folder: Path) -> bool:
    return not any(folder.iterdir())


#: entries that mark a folder as holding somebody's work: a repository, a store of ours (its marker or lock)
WORK_MARKERS = (".git", ".embedfit-store", ".nq-store", ".store.lock")


def _holds_work(folder: Path, depth: int = 3) -> Path | None:
    """The first repository, store or adapter/export of ours found within `depth` levels of `folder`, or None."""
    try:
        entries = list(folder.iterdir())
    except OSError:
        return None
    for e in entries:
        if e.name in WORK_MARKERS:
            return folder
        if e.name in ("config.json", "export.json") and (read_json_object(e) or {}).get("format"):
            return folder
    for e in entries:
        if depth > 1 and e.is_dir() and not e.is_symlink() and (found := _holds_work(e, depth - 1)) is not None:
            return found
    return None


def _never_an_output(path: Path, kind: OutputKind, option: str, protect: Mapping[str, str | Path]) -> None:
    """Refuse the paths no command may replace, whatever `--force` says (see the module docstring)."""
    if kind.replaces and (not str(path).strip() or str(path) == "."):  # Path("") is "." too
        raise OutputError(f"{option} is empty or '.' (an unset variable?): it would replace the current folder. "
                          f"Nothing was changed; give {option} a folder name of its own")
    if path.is_symlink():
        raise OutputError(f"{option} {path} is a symbolic link (to {os.path.realpath(path)}); replacing it would "
                          f"replace the link, not its target. Nothing was changed; pass the real path")
    where = Path(os.path.abspath(path))
    real = where.resolve()
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if kind.replaces and (real == cwd or real in cwd.parents or real == home or real == Path(real.anchor)):
        what = "the home folder" if real == home else "the current folder" if real == cwd else "a folder above the current one"
        raise OutputError(f"{option} {path} is {what}; {kind.name} is written by replacing its folder whole. "
                          f"Nothing was changed; give {option} a folder of its own")
    for what, src in protect.items():
        s = Path(src).resolve()
        if real == s or real in s.parents:
            raise OutputError(f"{option} {path} is {what} ({s}){'' if real == s else ' or a folder holding it'}; "
                              f"writing there would delete it, --force or not. Nothing was changed; choose another "
                              f"{option}")


def check_output(path: str | Path, kind: OutputKind, force: bool = False, option: str = "--out",
                 protect: Mapping[str, str | Path] | None = None) -> Path:
    """Refuse (OutputError) unless `path` may be written as `kind`; make sure its place is writable.

    `protect`: the command's inputs, by what to call them ({"the adapter being exported": dir}): never replaced,
    nor a folder holding one. Returns the path. Nothing is
    changed when it refuses; when it accepts, the parent folders exist.
    """
    path = Path(path)
    hint = f"choose another {option}, or {kind.force_hint()}"
    _never_an_output(path, kind, option, protect or {})
    try:
        exists = path.exists() or path.is_symlink()
        if exists and kind.is_dir and not path.is_dir():
            raise OutputError(f"{option} {path} is a file, not a folder; {kind.name} is a folder. Nothing was "
                              f"changed; choose another {option}")
        if exists and not kind.is_dir and path.is_dir():
            raise OutputError(f"{option} {path} is a folder; {kind.name} is a file. Nothing was changed; "
                              f"choose another {option} (a file name)")
        if exists and not force:
            ours = kind.recognise(path)
            if kind.is_dir and not ours and not _is_empty_dir(path):
                raise OutputError(f"{option} {path} already exists and is not {kind.name} "
                                  f"({_describe_contents(path)}); refusing to write into it. Nothing was changed; "
                                  f"{hint}")
            if not kind.is_dir and not ours:
                raise OutputError(f"{option} {path} already exists and is not {kind.name}; refusing to overwrite "
                                  f"it. Nothing was changed; {hint}")
        if exists and force and kind.is_dir and kind.replaces and not kind.recognise(path) \
                and (held := _holds_work(path)) is not None:
            raise OutputError(f"{option} {path} holds a repository, a store or an adapter ({held}); --force "
                              f"replaces only folders of plain files. Nothing was changed; choose another {option}")
    except PermissionError as exc:
        raise OutputError(f"{option} {path}: cannot look at it ({exc.strerror})") from exc
    _check_writable(path, kind, option)
    return path


def _check_writable(path: Path, kind: OutputKind, option: str) -> None:
    """Create the parent folders and write + remove a probe file where the output's files will go."""
    where = path if kind.is_dir and path.is_dir() else path.parent
    blocker = next((p for p in [where, *where.parents] if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise OutputError(f"{option} {path}: {blocker} is a file, so no folder can be made there; choose another {option}")
    try:
        where.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=where)
        os.close(fd)
        os.unlink(probe)
        if where != path.parent and path.parent.exists():
            # replacing a folder renames it aside and the new one in: its parent must be writable too
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{option} {path}: cannot write there ({exc.strerror or exc}); choose a writable "
                          f"place") from exc
