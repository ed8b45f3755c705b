"""`--engine ray`: the passages are embedded on Ray Data actors; the same vectors as the local engine, bit for bit.

Why bit-identical is possible: a float32 vector can depend on the whole batch it was computed in (padding
length, batched matrix products; all-MiniLM-L6-v2 on torch moved by ~1e-7 here when a text was embedded alone
instead of in its batch, paraphrase-MiniLM-L3-v2 on ONNX Runtime happened not to), so the actors must see
exactly the batches `embedfit.embed.cache.embed_cached` forms (sorted by length then key, one cache chunk each)
and run the same method on them (`Embedder.embed_prepared`, the model loaded by the same `load_embedder`). So the batch
plan has one home, `embed_cached`, and this module
drives it twice instead of copying it:

1. plan: `embed_cached` runs with a recording stand-in for the model and a read-only view of the cache; it
   hands over, in order, exactly the batches it would compute (it decides what counts as cached: a partly
   cached batch is recomputed whole). Those go to Ray as a `ray.data.from_items` dataset of one row per
   batch (its index and texts), mapped by `map_batches(EmbedActor, batch_size=1, ...)` on an actor pool.
2. replay: `embed_cached` runs again with the real cache and a stand-in whose `embed_prepared` returns each
   batch's vectors as they stream back from Ray (buffered when they come out of order). So `embed_cached`
   itself writes the cache chunks (on the driver: one writer), counts what was embedded, moves its progress
   bar as batches come back, and returns the vectors in the local engine's order, for the same upsert.

Vectors travel as raw float32 bytes (batches differ in length, and bytes carry the bits exactly); texts
travel as Arrow strings and are read back with `as_py()` (numpy's fixed-width strings would drop trailing NULs).
Thread counts: the actor sets torch's intra-op threads to the driver's (Ray sets OMP_NUM_THREADS from an
actor's CPU booking, which would change torch's default); ONNX Runtime sizes its own pool from the machine's
cores, and its vectors were the same bits with 1, 2 and the default thread count here. Actors book no GPU
(Ray then hides GPUs from them), so they embed on CPUs. Bit-identity also needs the same hardware kind and the
same package versions on every node: other CPUs may run other kernels.

Queries stay on the driver: they are about 1% of the work, short, and the driver has the model loaded anyway
(it needs its id, dimension and `prepare`); sending them to Ray would cost an actor start for seconds of work.

Ray is started here (`ray.init(num_cpus=os.cpu_count())`, no dashboard, usage stats off unless the
environment says otherwise) only when no Ray runs in this process and no address is given (--ray-address or
RAY_ADDRESS); a Ray we started or connected to is shut down (disconnected) at the end, one the caller started
is left alone. An address is checked with a plain TCP connection first: `ray.init` on an address where nothing
listens waited about 200 s here and then exited the process (SystemExit 15).
"""
from __future__ import annotations

import importlib.util
import logging
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from embedfit import procs
from embedfit.embed import EmbeddingCache, embed_cached, load_embedder
from embedfit.embed.base import Embedder, encoder_id
from embedfit.errors import EmbeddingError, InputError, MismatchError
from embedfit.settings import install_hint
from embedfit.types import Kind

if TYPE_CHECKING:
    import pyarrow

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
INSTALL_HINT = f"{install_hint('ray')} (Ray Data; requirements.txt pins ray[data]==2.60.0)"
#: the CPUs each actor books with Ray's scheduler. A booking, not a limit: the model's own thread pool uses
#: the node's cores. Half a CPU lets an actor start even on a small local Ray; Ray Data spreads actors
#: over nodes by default, so one actor per node (the default count) uses the whole cluster
ACTOR_CPUS = 0.5
#: at most this many Ray blocks: one batch per block while there are fewer batches, so results stream back as
#: they are made and the actors share the work finely; the cap bounds the object count for very large corpora
MAX_BLOCKS = 1000
CONNECT_TIMEOUT_S = 5.0


def check_installed() -> None:
    """InputError naming the pip command when Ray Data cannot be imported (checked without importing Ray)."""
    missing = [m for m in ("ray", "pyarrow", "pandas") if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"--engine ray needs Ray Data, which is not installed here (missing: {', '.join(missing)}); "
                         f"run: {INSTALL_HINT}")


def check_address(address: str) -> None:
    """InputError unless `address` is a form this engine can use: `HOST:PORT` (the cluster's GCS, from a node of
    the cluster) or `auto` (the cluster `ray start` recorded on this machine). Ray Client (`ray://`) is refused:
    Ray Data's executor needs a full Ray worker in the driver and fails through the client (ray-project/ray#48682);
    run the ingest on a node of the cluster, or submit it as a Ray job, instead."""
    if address.startswith("ray://"):
        raise InputError(f"--ray-address {address}: Ray Data does not run through Ray Client (ray://). Run the ingest "
                         "on a node of the cluster with --ray-address auto (or the head's HOST:6379), or submit it with "
                         "`ray job submit`")
    if address == "auto":
        return
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InputError(f"--ray-address {address!r}: expected HOST:PORT (the head node's, e.g. 10.0.0.5:6379) or auto")


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """InputError unless something accepts a TCP connection at the address (`auto`: the one it resolves to)."""
    check_address(address)
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address  # what ray.init does with "auto"

        try:
            address = canonicalize_bootstrap_address("auto")
        except ConnectionError as exc:
            raise InputError(f"--ray-address auto: no Ray cluster runs on this machine ({exc}); start one with "
                             "`ray start --head`, or leave --ray-address out to run Ray inside this process") from exc
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
            # a cluster with TLS (RAY_USE_TLS) answers a TLS handshake, not a plain preface: TCP is all we check there
            speaks_grpc = os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true") or _answers_http2(conn, timeout)
    except OSError as exc:
        raise InputError(f"--ray-address {address}: nothing answers at {host}:{port} within {timeout:g} s ({exc}). "
                         "Start the cluster first (`ray start --head` on the head node), or leave --ray-address out "
                         "to run Ray on this machine") from exc
    if not speaks_grpc:  # ray.init would retry for minutes, printing "Failed to connect to GCS"
        raise InputError(f"--ray-address {address}: something listens at {host}:{port}, but it is not a Ray cluster's "
                         "GCS (it does not answer as a gRPC server). Give the head node's GCS port (6379 unless "
                         "`ray start --head --port` said otherwise)")


#: the HTTP/2 client preface and an empty SETTINGS frame: what a gRPC client sends first
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


def _answers_http2(conn: socket.socket, timeout: float) -> bool:
    """True when the peer answers an HTTP/2 preface with an HTTP/2 SETTINGS frame, as every gRPC server (Ray's GCS
    included) does; an HTTP/1 server, another protocol or silence is False."""
    conn.settimeout(timeout)
    try:
        conn.sendall(_H2_PREFACE)
        head = b""
        while len(head) < 9:
            chunk = conn.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except OSError:
        return False
    return head[3] == 0x04  # frame type SETTINGS (after the 3-byte length)


@contextmanager
def ray_session(model: str, device: str = "auto", address: str | None = None,
                actors: int | None = None) -> Iterator[RayEngine]:
    """A Ray to embed on, and the engine that does: the one this process already runs (left running), else the
    cluster at `address` or RAY_ADDRESS (disconnected at the end), else one started here (shut down at the end)."""
    check_installed()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # read when ray is imported
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address:
        check_reachable(address)
    t0 = time.perf_counter()
    reaper = None
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise InputError(f"--engine ray: Ray Data does not import ({exc}); run: {INSTALL_HINT}") from exc
    if ray.is_initialized():
        ray_from = "already running"
        log.info("using the Ray this process already runs")
    elif address:
        ray_from = "connected"
        log.info("connecting to the Ray cluster at %s", address)
        # the actors import our code from this upload; the nodes need requirements.txt installed
        code = [str(Path(sys.modules["embedfit"].__file__).parent)]  # the whole package: any layer imports
        try:
            ray.init(address=address, runtime_env={"py_modules": code}, logging_level=logging.WARNING)
        except ConnectionError as exc:
            raise InputError(f"--ray-address {address}: {exc}. If the cluster uses token authentication, set "
                             "RAY_AUTH_MODE=token here and give its token (`ray get-auth-token` on the head node) in "
                             "RAY_AUTH_TOKEN or ~/.ray/auth_token") from exc
    else:
        ray_from = "started here"
        log.info("starting Ray on this machine (%d CPUs)", os.cpu_count() or 1)
        # Ray's agents outlive a driver killed with -9 by minutes (its raylet does not): the reaper ends them
        reaper = procs.start_reaper()
        # "local": a new Ray even when `ray start` left a cluster address on this machine (join it with auto)
        try:
            ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING)
        except BaseException:
            procs.stop_reaper(reaper)
            raise
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False  # embed_cached shows ours
        n_actors = actors or _cpu_nodes(ray)
        engine = RayEngine(model=model, device=device, actors=n_actors, address=address or "local", ray_from=ray_from,
                           start_seconds=round(time.perf_counter() - t0, 3))
        log.info("Ray ready in %.1f s: %d actor(s) for %s", engine.start_seconds, n_actors, model)
        yield engine
    finally:
        if ray_from != "already running":
            ray.shutdown()
        procs.stop_reaper(reaper)


def _cpu_nodes(ray: Any) -> int:
    """Alive nodes that offer CPUs: the default actor count (one per node, each using its node's cores)."""
    return max(1, sum(1 for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0))


@dataclass
class RayEngine:
    """Embeds like `embed_cached` (same signature, same result) with the model work done by Ray actors."""

    model: str  #: the name `load_embedder` takes (as on the command line)
    device: str
    actors: int
    address: str
    ray_from: str  #: "started here", "connected" or "already running" (in this process, not ours to stop)
    start_seconds: float
    #: batches sent to Ray, per call of `embed_cached` (the summary reports them)
    batches_sent: list[int] = field(default_factory=list)

    def describe(self) -> dict:
        return {"address": self.address, "ray_from": self.ray_from, "actors": self.actors,
                "start_seconds": self.start_seconds, "batches_sent": sum(self.batches_sent)}

    def embed_cached(self, embedder: Embedder, texts: Sequence[str], kind: Kind, cache: EmbeddingCache | None,
                     batch_size: int | None = None, desc: str | None = None) -> tuple[np.ndarray, dict]:
        """`embed_cached(embedder, texts, ...)` with the uncached batches embedded on Ray; stats add `ray_batches`."""
        recorder = _Recorder(embedder)
        embed_cached(recorder, texts, kind, _PlanningCache(cache) if cache is not None else None, batch_size,
                     desc=f"plan {kind} batches")
        todo = recorder.batches
        self.batches_sent.append(len(todo))
        log.info("%s: %d batches go to Ray", desc or kind, len(todo))
        results = self._embed_on_ray(todo, embedder)
        replay = _Replay(embedder, todo, results)
        try:
            vectors, stats = embed_cached(replay, texts, kind, cache, batch_size, desc=desc)
        finally:
            results.close()  # on an error, stops the Ray job instead of leaving it running
        if replay.used != len(todo):
            raise RuntimeError(f"embed_cached asked for {replay.used} of the {len(todo)} batches planned for Ray; "
                               "its batch plan and embedfit.pipeline.ray_engine disagree")
        return vectors, {**stats, "ray_batches": len(todo)}

    def _embed_on_ray(self, batches: list[list[str]], embedder: Embedder) -> Iterator[tuple[int, np.ndarray]]:
        """(batch index, vectors) as the actors finish them (not necessarily in order); nothing starts before
        the first is asked for, so an all-cached run starts no actor."""
        import ray.data
        from ray.exceptions import RayError

        torch_threads = sys.modules["torch"].get_num_threads() if "torch" in sys.modules else None
        ds = ray.data.from_items([{"index": i, "texts": b} for i, b in enumerate(batches)],
                                 override_num_blocks=min(len(batches), MAX_BLOCKS))
        ds = ds.map_batches(EmbedActor, batch_size=1, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=min(self.actors, len(batches))),
                            num_cpus=ACTOR_CPUS,
                            fn_constructor_kwargs={"model": self.model, "device": self.device,
                                                   "model_id": embedder.model_id, "dim": embedder.dim,
                                                   "torch_threads": torch_threads})
        try:
            for row in ds.iter_rows():
                index = int(row["index"])
                vectors = np.frombuffer(row["vectors"], dtype=np.float32).reshape(-1, embedder.dim)
                if len(vectors) != len(batches[index]):
                    raise EmbeddingError(f"Ray returned {len(vectors)} vectors for batch {index} of "
                                         f"{len(batches[index])} texts")
                yield index, vectors
        except RayError as exc:
            raise EmbeddingError(f"embedding on Ray failed: {exc}") from exc


class EmbedActor:
    """One Ray actor: loads the model once (as the local engine does), then embeds one batch per call."""

    def __init__(self, model: str, device: str, model_id: str, dim: int, torch_threads: int | None) -> None:
        self.embedder = load_embedder(model, device)
        if (self.embedder.model_id, self.embedder.dim) != (model_id, dim):
            raise MismatchError(f"the Ray actor loaded {self.embedder.model_id} ({self.embedder.dim}-d) for {model!r}, "
                                f"the driver has {model_id} ({dim}-d)")
        if torch_threads and "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(torch_threads)

    def __call__(self, rows: pyarrow.Table) -> dict[str, np.ndarray]:
        vectors = [self.embedder.embed_prepared(texts) for texts in rows.column("texts").to_pylist()]
        return {"index": np.asarray(rows.column("index").to_pylist(), dtype=np.int64),
                "vectors": np.array([v.tobytes() for v in vectors], dtype=object)}


class _StandIn(Embedder):
    """Looks like `inner` to `embed_cached` (id, cache id, dimension, batch sizes, `prepare`) without running it."""

    def __init__(self, inner: Embedder):
        self.inner = inner
        self.model_id, self.dim = inner.model_id, inner.dim
        self._cache_id = encoder_id(inner)  # what the cache keys vectors by
        self.default_batch_size, self.max_batch_size = inner.default_batch_size, inner.max_batch_size

    def prepare(self, text: str, kind: Kind) -> str:
        return self.inner.prepare(text, kind)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        raise AssertionError("stand-ins implement embed_prepared")


class _Recorder(_StandIn):
    """Records the batches `embed_cached` computes, in order. Its vectors have no columns (`dim` 0): the
    planning pass then allocates nothing for the corpus-sized matrix it returns."""

    def __init__(self, inner: Embedder):
        super().__init__(inner)
        self.dim = 0
        self.batches: list[list[str]] = []

    def embed_prepared(self, prepared: list[str]) -> np.ndarray:
        self.batches.append(list(prepared))
        return np.zeros((len(prepared), 0), np.float32)


class _PlanningCache:
    """The cache as the planning pass sees it: what it holds, but nothing written and no vectors (`dim` 0, as
    the `_Recorder`'s), so the plan is `embed_cached`'s own decision of what to compute."""

    def __init__(self, cache: EmbeddingCache):
        self.cache = cache
        self.model_id, self.dim = cache.model_id, 0

    def __contains__(self, key: str) -> bool:
        return key in self.cache

    def put(self, keys: Sequence[str], vectors: np.ndarray) -> None:
        pass

    def get(self, keys: Sequence[str]) -> np.ndarray:
        return np.zeros((len(keys), 0), np.float32)


class _Replay(_StandIn):
    """Hands `embed_cached` the Ray vectors of each planned batch, in plan order, as they arrive."""

    def __init__(self, inner: Embedder, planned: list[list[str]], results: Iterator[tuple[int, np.ndarray]]):
        super().__init__(inner)
        self.planned, self.results = planned, results
        self.ready: dict[int, np.ndarray] = {}
        self.used = 0

    def embed_prepared(self, prepared: list[str]) -> np.ndarray:
        i = self.used
        if i >= len(self.planned) or list(prepared) != self.planned[i]:
            raise RuntimeError(f"embed_cached asked for a batch the Ray plan does not hold as number {i}; "
                               "its batch plan and embedfit.pipeline.ray_engine disagree")
        while i not in self.ready:
            try:
                index, vectors = next(self.results)
            except StopIteration:
                raise EmbeddingError(f"Ray finished without batch {i}") from None
            self.ready[index] = vectors
        self.used += 1
        return self.ready.pop(i)
