"""Chroma access: one place that opens clients, guards the local store, and reads/writes collections.

- Embedded mode: a `PersistentClient` on `STORE/chroma`. Chroma's local store is thread-safe but not
  process-safe, so we take an advisory file lock first: writers (ingest, projection) exclusive,
  readers (eval, app) shared. A second writer is refused at once with a clear message instead of
  hanging or corrupting SQLite.
- Server mode: an `HttpClient` to `chroma run` (`--chroma-host/--chroma-port` or `CHROMA_HOST/CHROMA_PORT`);
  the server serialises access. `embedfit serve` (`embedfit.store.server`) starts one that holds the store's lock;
  one started by hand does not, so embedded openers also look for a `chroma run` on their folder and refuse.

Collections always get cosine distance explicitly and never an embedding function (Chroma's default one
downloads a model): we pass our own vectors. Writes are `upsert` in batches no larger than the client's
maximum, so re-running a write changes nothing.
"""
from __future__ import annotations

import fcntl
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from embedfit.errors import MismatchError, StoreBusyError, StoreError
from embedfit.progress import progress

log = logging.getLogger(__name__)

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")  # before chromadb reads it at import

import chromadb  # noqa: E402
from chromadb.config import Settings  # noqa: E402

#: The HNSW settings of every collection we create. Chroma's defaults (max_neighbors 16, ef_construction 100,
#: ef_search 100) gave ANN recall@10 against exact search of 0.996 at 100k text-like vectors but 0.903 at 1M
#: (`make bench`, 2026-11-24). A denser graph built with a wider beam (32 / 200) gave at 1M recall@10 0.970, 0.991
#: and 0.998 with ef_search 100, 200 and 400, at 1.5, 1.9 and 2.0 ms per query (p50; 2026-12-03), for 7% more disk
#: and 14% more peak memory. 200 met the 0.99 target only by the width of its sampling error (200 queries), so the
#: search beam is 400. `ef_search` alone can be changed later (`set_ef_search`); the other two are fixed when a
#: collection is created, so collections made before these settings keep Chroma's defaults until re-created.
HNSW = {"space": "cosine", "max_neighbors": 32, "ef_construction": 200, "ef_search": 400}
COSINE = {"hnsw": HNSW}
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ChromaTarget:
    """Where the vectors live: a local folder, or a server."""

    path: Path | None = None
    host: str | None = None
    port: int | None = None

    @property
    def is_server(self) -> bool:
        return self.host is not None

    def describe(self) -> str:
        return f"chroma server {self.host}:{self.port}" if self.is_server else f"local store {self.path}"


def resolve_target(store_dir: str | Path, host: str | None = None, port: int | None = None) -> ChromaTarget:
    """CLI flags first, then CHROMA_HOST/CHROMA_PORT, else the embedded store under `store_dir/chroma`."""
    host = host or os.environ.get("CHROMA_HOST") or None
    if host:
        port = int(port or os.environ.get("CHROMA_PORT") or 8000)
        return ChromaTarget(host=host, port=port)
    return ChromaTarget(path=Path(store_dir) / "chroma")


# -- process lock for the embedded store ------------------------------------------------------------

_locks: dict[str, tuple[int, str]] = {}
_locks_guard = threading.Lock()


def _acquire(lock_path: Path, exclusive: bool) -> None:
    """Hold an flock on `lock_path` for the rest of the process (re-entrant within the process)."""
    key = str(lock_path.resolve())
    want = "ex" if exclusive else "sh"
    with _locks_guard:
        held = _locks.get(key)
        if held and (held[1] == "ex" or held[1] == want):
            return
        fd = held[0] if held else os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            if not held:
                os.close(fd)
            other = "writing to" if exclusive is False else "using"
            raise StoreBusyError(
                f"another process is {other} the local store {lock_path.parent} "
                "(Chroma's local store is not process-safe). Wait for it to finish, close the app, "
                "or run a Chroma server for it (`embedfit serve --store DIR --port 8000`) and pass --chroma-host/--chroma-port."
            ) from None
        _locks[key] = (fd, want)


def hold_for_server(store_dir: str | Path) -> None:
    """Take the store's exclusive lock for the rest of this process, for a `chroma run` it starts on the store's
    `chroma/` folder: the server takes no lock of its own, so without this an embedded reader or writer would open
    the same files beside it (and read ids the server has not flushed). StoreBusyError when someone holds it."""
    _acquire(Path(store_dir) / ".store.lock", exclusive=True)


def release_locks() -> None:
    """Drop every store lock this process holds (tests that simulate separate processes use it)."""
    with _locks_guard:
        for fd, _ in _locks.values():
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        _locks.clear()


def _argv(pid: str) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def chroma_servers_on(chroma_dir: str | Path) -> list[int]:
    """Pids of `chroma run` processes (of users whose processes we can read) serving `chroma_dir`: a server
    started by hand takes no lock of ours, so the lock alone would let an embedded opener in beside it. Read
    from /proc (Linux; elsewhere nothing is found): the `--path` argument (or `--path=`, default `./chroma`),
    resolved against the server's working directory."""
    if not os.path.isdir("/proc/self"):
        return []
    want = Path(chroma_dir).resolve()
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        argv = _argv(pid)
        at = next((i for i, a in enumerate(argv[:3]) if Path(a).name == "chroma"), None)
        if at is None or argv[at + 1:at + 2] != ["run"]:
            continue
        rest, path = argv[at + 2:], "./chroma"
        for i, a in enumerate(rest):
            if a == "--path" and i + 1 < len(rest):
                path = rest[i + 1]
            elif a.startswith("--path="):
                path = a.split("=", 1)[1]
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if (Path(cwd) / path).resolve() == want:
            found.append(int(pid))
    return found


def open_client(target: ChromaTarget, write: bool) -> Any:
    """A Chroma client for `target`; embedded stores are locked (exclusive when `write`)."""
    settings = Settings(anonymized_telemetry=False)
    if target.is_server:
        try:  # chromadb >= 1.x already contacts the server in the constructor (ValueError when it is down)
            client = chromadb.HttpClient(host=target.host, port=target.port, settings=settings)
            client.heartbeat()
        except Exception as exc:  # chromadb/httpx raise many types for "not there"; the cause stays chained (-v)
            raise StoreError(
                f"cannot reach the Chroma server at {target.host}:{target.port} ({type(exc).__name__}). "
                f"Start one with: embedfit serve --store DIR --host {target.host} --port {target.port}"
            ) from exc
        return client
    assert target.path is not None
    if not write and not target.path.exists():
        raise StoreError(f"no Chroma data at {target.path}")
    target.path.mkdir(parents=True, exist_ok=True)
    servers = chroma_servers_on(target.path)
    if servers:
        raise StoreBusyError(
            f"a Chroma server (pid {servers[0]}) serves {target.path}: opening the same files here beside it "
            "breaks both (Chroma's local store is not process-safe). Go through it with --chroma-host/--chroma-port "
            "(or CHROMA_HOST/CHROMA_PORT), or stop it. `embedfit serve` starts a server that also holds the store's "
            "lock")
    _acquire(target.path.parent / ".store.lock", exclusive=write)
    return chromadb.PersistentClient(path=str(target.path), settings=settings)


# -- collections -------------------------------------------------------------------------------------

def get_collection(client: Any, name: str) -> Any | None:
    """The collection called `name`, or None when it does not exist."""
    try:
        return client.get_collection(name, embedding_function=None)
    except Exception as exc:  # chromadb raises NotFoundError / ValueError depending on version and mode
        if "does not exist" in str(exc) or "not found" in str(exc).lower():
            return None
        raise


def ensure_collection(client: Any, name: str, metadata: dict[str, Any], check_keys: Sequence[str]) -> Any:
    """Get or create `name` (cosine); an existing one must agree with `metadata` on `check_keys`."""
    col = get_collection(client, name)
    if col is None:
        meta = {**metadata, "schema_version": SCHEMA_VERSION}
        return client.get_or_create_collection(name, configuration=COSINE, metadata=meta, embedding_function=None)
    have = col.metadata or {}
    for key in check_keys:
        if have.get(key) != metadata.get(key):
            raise MismatchError(
                f"collection {name!r} holds {key}={have.get(key)!r} but this run has {key}={metadata.get(key)!r}; "
                "refusing to mix them (use another --store, or delete the collection)"
            )
    return col


def set_ef_search(col: Any, ef_search: int) -> None:
    """Change a collection's HNSW search beam (the recall/latency knob; the graph itself stays as built).

    Chroma applies it when the index is next loaded: in a process that has not queried the collection yet, or after
    a restart of the server or app. A process that has already searched keeps the beam it loaded with."""
    if int(ef_search) < 1:
        raise ValueError(f"ef_search must be a positive integer, got {ef_search!r}")
    col.modify(configuration={"hnsw": {"ef_search": int(ef_search)}})


def set_metadata(col: Any, updates: dict[str, Any]) -> None:
    """Merge `updates` into the collection metadata (Chroma replaces metadata as a whole)."""
    meta = dict(col.metadata or {})
    meta.update(updates)
    meta.pop("hnsw:space", None)
    col.modify(metadata=meta)


@contextmanager
def server_errors(what: str) -> Iterator[None]:
    """Turn a Chroma server that went away mid-call (httpx's transport errors: refused, reset, closed) into one
    StoreError saying what was under way; the rows written before stay (every write here is resumable). httpx is
    chromadb's HTTP client, not a dependency of ours: its TransportError is recognised by name, not imported."""
    try:
        yield
    except Exception as exc:
        if not any(c.__name__ == "TransportError" and c.__module__.startswith("httpx") for c in type(exc).__mro__):
            raise
        raise StoreError(f"lost the Chroma server while {what} ({type(exc).__name__}); what was written so far is "
                         "kept: start the server again and rerun the same command to finish") from exc


def upsert_batched(col: Any, client: Any, ids: Sequence[str], embeddings: np.ndarray,
                   documents: Sequence[str] | None = None, metadatas: Sequence[dict] | None = None,
                   desc: str = "upsert") -> int:
    """Upsert in batches of at most the client's max batch size; returns how many rows were written."""
    if len(ids) == 0:
        return 0
    batch = max(1, min(int(client.get_max_batch_size()), 5000))
    with progress(total=len(ids), desc=desc, unit="vec") as bar:
        for start in range(0, len(ids), batch):
            end = start + batch
            with server_errors(f"writing to {col.name}"):
                col.upsert(
                    ids=list(ids[start:end]),
                    embeddings=np.ascontiguousarray(embeddings[start:end], dtype=np.float32),
                    documents=None if documents is None else list(documents[start:end]),
                    metadatas=None if metadatas is None else list(metadatas[start:end]),
                )
            bar.update(min(end, len(ids)) - start)
    return len(ids)


def iter_pages(col: Any, include: list[str], page: int = 2000) -> Iterable[dict]:
    """Every record of `col`, page by page (a single `get()` of a large collection is slow and memory-hungry)."""
    offset = 0
    while True:
        with server_errors(f"reading {col.name}"):
            got = col.get(include=include, limit=page, offset=offset)
        if not got["ids"]:
            return
        yield got
        offset += len(got["ids"])


@dataclass
class CollectionDump:
    """All of a collection's records, sorted by id."""

    ids: list[str]
    embeddings: np.ndarray
    documents: list[str] | None
    metadatas: list[dict] | None


def fetch_all(col: Any, with_documents: bool = False, with_metadatas: bool = False) -> CollectionDump:
    """Ids and float32 embeddings (plus documents/metadata on request), sorted by id for determinism."""
    include = ["embeddings"] + (["documents"] if with_documents else []) + (["metadatas"] if with_metadatas else [])
    ids: list[str] = []
    vecs: list[np.ndarray] = []
    docs: list[str] = []
    metas: list[dict] = []
    for got in iter_pages(col, include):
        ids.extend(got["ids"])
        vecs.append(np.asarray(got["embeddings"], dtype=np.float32))
        if with_documents:
            docs.extend(got["documents"])
        if with_metadatas:
            metas.extend(got["metadatas"])
    order = np.argsort(np.array(ids, dtype=object)) if ids else np.array([], dtype=int)
    emb = np.concatenate(vecs)[order] if vecs else np.zeros((0, 0), np.float32)
    return CollectionDump(
        ids=[ids[i] for i in order],
        embeddings=emb,
        documents=[docs[i] for i in order] if with_documents else None,
        metadatas=[metas[i] for i in order] if with_metadatas else None,
    )


def existing_ids(col: Any, meta_key: str | None = None) -> dict[str, Any]:
    """Id -> value of `meta_key` (or None) for every record: lets a rerun skip what is already stored."""
    out: dict[str, Any] = {}
    include = ["metadatas"] if meta_key else []
    for got in iter_pages(col, include, page=5000):
        metas = got.get("metadatas") if meta_key else None
        for i, rid in enumerate(got["ids"]):
            out[rid] = (metas[i] or {}).get(meta_key) if metas else None
    return out


def delete_collection(client: Any, name: str) -> bool:
    """Delete the collection called `name`; False when there was none."""
    if get_collection(client, name) is None:
        return False
    client.delete_collection(name)
    return True


def delete_ids(col: Any, client: Any, ids: Sequence[str]) -> None:
    batch = max(1, int(client.get_max_batch_size()))
    for start in range(0, len(ids), batch):
        col.delete(ids=list(ids[start : start + batch]))
