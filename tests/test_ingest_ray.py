"""`--engine ray` on a real local Ray (2 CPUs) and real NQ rows: the store equals the local engine's bit for bit.

Oracle: the same ingest with `--engine local` (same model, texts, batch size), read back from Chroma. Ray
starts in ~10 s here, so one Ray (started by the module fixture, as a caller's Ray) serves the later tests;
the first test lets the ingest start and stop its own. The warm-cache test and the torch-model test are
`slow` (about 30 s each).
"""
from __future__ import annotations

import os
import shutil
import socket
import time

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before ray is imported anywhere

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import nq_data_dir  # noqa: E402

from embedfit.embed import EmbeddingCache, embed_cached, load_embedder  # noqa: E402
from embedfit.errors import InputError  # noqa: E402
from embedfit.pipeline import ray_engine  # noqa: E402
from embedfit.pipeline.cli import main  # noqa: E402
from embedfit.pipeline.config import IngestConfig  # noqa: E402
from embedfit.pipeline.ingest import run_ingest  # noqa: E402
from embedfit.store import chroma_store, query_vectors  # noqa: E402
from embedfit.store.store import Store  # noqa: E402

MODEL = "paraphrase-MiniLM-L3-v2"
LIMIT = 100
BATCH = 16  # small batches: several per actor, so results can come back out of order


def ingest(root, engine: str, cache=None, **kw) -> dict:
    cfg = IngestConfig(data=str(nq_data_dir()), store=root / "store", model=MODEL, limit=LIMIT, batch_size=BATCH,
                       cache_dir=cache, engine=engine, **kw)
    return run_ingest(cfg)


def vectors(store_root):
    """(passage ids, passage vectors, query ids, query vectors) exactly as the store holds them."""
    store = Store(store_root)
    dump = chroma_store.fetch_all(store.raw_collection(MODEL))
    qids, qvecs = query_vectors.load(store_root, MODEL)
    return dump.ids, dump.embeddings, qids, qvecs


def assert_same_vectors(a, b):
    pids_a, pv_a, qids_a, qv_a = a
    pids_b, pv_b, qids_b, qv_b = b
    assert pids_a == pids_b and qids_a == qids_b
    assert pv_a.dtype == pv_b.dtype == np.float32 and np.array_equal(pv_a, pv_b)  # bit for bit
    assert np.array_equal(qv_a, qv_b)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The oracle: a local-engine store and its (warm) embedding cache."""
    root = tmp_path_factory.mktemp("local")
    summary = ingest(root, "local", cache=root / "cache")
    return root, summary, vectors(root / "store")


@pytest.fixture(scope="module")
def ray_running():
    """A local Ray as a caller would start it (2 CPUs, no dashboard); ingest must reuse it and leave it running."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


def test_ray_engine_store_equals_local_engine_bit_for_bit(local_run, tmp_path):
    import ray

    root, local_summary, local_vectors = local_run
    was_running = ray.is_initialized()
    s = ingest(tmp_path, "ray", cache=tmp_path / "cache", ray_actors=2)
    assert_same_vectors(vectors(tmp_path / "store"), local_vectors)
    assert s["engine"] == "ray" and local_summary["engine"] == "local" and "ray" not in local_summary
    assert s["ray"]["ray_from"] == ("already running" if was_running else "started here") and s["ray"]["actors"] == 2
    assert s["ray"]["batches_sent"] == -(-s["passages"] // BATCH) > 2  # every passage batch went to Ray
    assert s["passages_embedded_now"] == s["passages"] == local_summary["passages"]
    assert ray.is_initialized() is was_running  # a Ray the ingest started is shut down again
    # the driver wrote the cache: the same chunks (same batches), the same bytes of vectors
    ray_cache = EmbeddingCache(tmp_path / "cache", MODEL, 384)
    local_cache = EmbeddingCache(root / "cache", MODEL, 384)
    assert sorted(p.name for p in ray_cache.dir.glob("*.npz")) == sorted(p.name for p in local_cache.dir.glob("*.npz"))
    keys = sorted(local_cache._vectors)
    assert np.array_equal(ray_cache.get(keys), local_cache.get(keys))


@pytest.mark.slow
def test_warm_cache_sends_nothing_to_ray_and_one_lost_chunk_one_batch(local_run, ray_running, tmp_path):
    root, _, local_vectors = local_run
    cache = tmp_path / "cache"
    shutil.copytree(root / "cache", cache)
    s = ingest(tmp_path / "warm", "ray", cache=cache)
    assert s["ray"]["batches_sent"] == 0 and s["passages_embedded_now"] == 0 and s["queries_embedded_now"] == 0
    assert s["ray"]["ray_from"] == "already running" and ray_running.is_initialized()  # the caller's Ray is left running
    assert_same_vectors(vectors(tmp_path / "warm" / "store"), local_vectors)

    # one passage chunk lost: exactly that batch goes to Ray, and the store is still the same bits
    passage_keys = _passage_keys(s)
    chunks = {p: _chunk_keys(p) for p in sorted(EmbeddingCache(cache, MODEL, 384).dir.glob("*.npz"))}
    chunk = next(p for p, keys in chunks.items() if keys <= passage_keys)
    lost = len(chunks[chunk])
    chunk.unlink()
    s2 = ingest(tmp_path / "partial", "ray", cache=cache)
    assert s2["ray"]["batches_sent"] == 1 and s2["passages_embedded_now"] == lost
    assert_same_vectors(vectors(tmp_path / "partial" / "store"), local_vectors)


def _chunk_keys(path) -> set[str]:
    with np.load(path) as z:
        return set(z["keys"].tolist())


def _passage_keys(summary: dict) -> set[str]:
    from embedfit.embed.cache import cache_key

    store = Store(summary["store"])
    return {cache_key(MODEL, p.embedding_text()) for p in store.load_corpus().values()}


EDGE_TEXTS = ["", " ", "\x00", "a\x00", "trailing nul\x00\x00", "\u200fשלום עולם\u200f", "emoji 🙂🚀 text", "word",
              "| a | table |\n| --- | --- |\n| 1 | 2 |", "x " * 50_000, "word", "Ünïcödé ß ﬁ", "tab\tand\nnewline"]


@pytest.mark.parametrize("model, actors", [
    (MODEL, 2),
    # ONNX Runtime gave L3 the same bits whatever the batch, so only a torch model catches an actor that
    # embeds other batches than the plan's (checked: one text per call fails here, 8e-8 off)
    pytest.param("all-MiniLM-L6-v2", 1, marks=pytest.mark.slow),
])
def test_edge_texts_cross_ray_unchanged(ray_running, model, actors):
    """Texts travel to the actors as Arrow strings: NULs (numpy's fixed-width strings would drop trailing ones),
    RTL marks, emoji, a 100,000-character text, duplicates all come back as the local engine's vectors."""
    embedder = load_embedder(model)
    want, want_stats = embed_cached(embedder, EDGE_TEXTS, "passage", None, batch_size=3)
    with ray_engine.ray_session(model, actors=actors) as engine:
        got, stats = engine.embed_cached(embedder, EDGE_TEXTS, "passage", None, batch_size=3)
    assert np.array_equal(got, want) and got.shape == (len(EDGE_TEXTS), 384)
    assert stats["ray_batches"] == -(-want_stats["unique"] // 3) and stats["embedded"] == want_stats["embedded"]
    assert engine.ray_from == "already running" and ray_running.is_initialized()


@pytest.mark.parametrize("kw, message", [
    ({"ray_address": "127.0.0.1:6379"}, "--ray-address needs --engine ray"),
    ({"ray_actors": 2}, "--ray-actors needs --engine ray"),
    ({"engine": "spark"}, "--engine must be one of local, ray"),
    ({"engine": "ray", "ray_actors": 0}, "--ray-actors must be positive"),
    ({"engine": "ray", "ray_address": "ray://head:10001"}, "does not run through Ray Client"),
    ({"engine": "ray", "ray_address": "head"}, "expected HOST:PORT"),
])
def test_config_refuses_ray_options_out_of_place(tmp_path, kw, message):
    cfg = IngestConfig(data=str(nq_data_dir()), store=tmp_path / "store", **kw)
    with pytest.raises(InputError, match=message):
        cfg.validate()
    assert not (tmp_path / "store").exists()


def test_cli_refuses_ray_address_without_ray_engine(tmp_path, capsys):
    assert main(["--data", str(nq_data_dir()), "--store", str(tmp_path / "s"), "--ray-address", "auto"]) == 2
    assert "--ray-address needs --engine ray" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_missing_ray_names_the_pip_command(tmp_path, monkeypatch):
    real = ray_engine.importlib.util.find_spec
    monkeypatch.setattr(ray_engine.importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    with pytest.raises(InputError, match=r'missing: ray\).*pip install "embedfit\[ray\]"'):
        IngestConfig(data=str(nq_data_dir()), store=tmp_path / "store", engine="ray").validate()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_ray_address_fails_fast_before_the_store_is_touched(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"nothing answers at 127\.0\.0\.1:\d+.*ray start --head"):
        ingest(tmp_path, "ray", ray_address=f"127.0.0.1:{_closed_port()}")
    assert time.perf_counter() - t0 < 30  # ray.init itself would wait ~200 s and then exit the process
    assert not (tmp_path / "store").exists()
    with pytest.raises(InputError, match="nothing answers"):
        ray_engine.check_reachable(f"localhost:{_closed_port()}", timeout=1)


@pytest.mark.parametrize("address", ["nonsense", "host:", ":6379", "host:port", "local"])
def test_malformed_ray_address_is_refused(address):
    with pytest.raises(InputError, match="expected HOST:PORT"):
        ray_engine.check_address(address)


def test_an_address_where_no_ray_listens_is_refused_in_seconds_not_minutes(tmp_path):
    """Issue 22, case 20: `--ray-address HOST:PORT` where a non-Ray server listens hung for minutes printing
    "Failed to connect to GCS". The address is now probed as gRPC first: an HTTP/1 server and a silent listener are
    refused at once, and a real gRPC server (what Ray's GCS is) passes."""
    import socket
    import threading
    import time
    from concurrent import futures
    from http.server import BaseHTTPRequestHandler, HTTPServer

    import grpc

    from embedfit.pipeline.ray_engine import check_reachable

    http = HTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        for port in (http.server_address[1], silent.getsockname()[1]):
            t0 = time.monotonic()
            with pytest.raises(InputError, match="not a Ray cluster's GCS"):
                check_reachable(f"127.0.0.1:{port}", timeout=2)
            assert time.monotonic() - t0 < 10
        with pytest.MonkeyPatch.context() as mp:  # a TLS cluster is not probed with a plain preface (TCP only)
            mp.setenv("RAY_USE_TLS", "1")
            check_reachable(f"127.0.0.1:{http.server_address[1]}", timeout=2)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            check_reachable(f"127.0.0.1:{port}")
        finally:
            server.stop(None)
    finally:
        http.shutdown()
        silent.close()
