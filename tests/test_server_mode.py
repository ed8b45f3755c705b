"""Every stage through a real Chroma server (`chroma run` on a free local port, `HttpClient`), compared with the
same stages on an embedded store built from the same data: identical ids and ranks.

The stages run through their real CLIs (in this process, to save start-up time): ingest and adapter with
`--chroma-host/--chroma-port`, eval with `CHROMA_HOST/CHROMA_PORT`; the search goes through the app's start-up
(`embedfit.app.startup.open_app`) and `embedfit.search.retriever`. The oracle for the search is the embedded store and a brute-force
cosine ranking of the stored vectors.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from app_support import exact_top, make_adapter
from conftest import REPO, metrics_without_timings, nq_data_dir

from embedfit.adapters.io import load_adapter
from embedfit.procs import free_port, stop_process, wait_until_answering
from embedfit.store import chroma_store
from embedfit.store.store import Store

MODEL = "paraphrase-MiniLM-L3-v2"
LIMIT = 200
CHROMA = REPO / ".venv" / "bin" / "chroma"
QUESTIONS = ["who wrote the declaration of independence", "what is the capital of france", "when did world war 2 end"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real `chroma run` on 127.0.0.1 and a free port, stopped at the end of the module."""
    data = tmp_path_factory.mktemp("chroma-server")
    with (data / "server.log").open("w") as log:
        proc, port = start_chroma_server(data / "db", log)
        yield {"host": "127.0.0.1", "port": port, "path": data / "db"}
        stop_process(proc, timeout=20)


def start_chroma_server(db: Path, log) -> tuple[subprocess.Popen, int]:
    """A real `chroma run` over `db` on 127.0.0.1 and a free port, answering its heartbeat: (process, port)."""
    exe = CHROMA if CHROMA.exists() else shutil.which("chroma")
    if exe is None:
        pytest.fail("the `chroma` CLI (from the chromadb package) is not installed; run `make setup`")
    port = free_port()
    proc = subprocess.Popen([str(exe), "run", "--path", str(db), "--host", "127.0.0.1", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_answering(f"http://127.0.0.1:{port}/api/v2/heartbeat", proc, 60)
    except (ChildProcessError, TimeoutError) as exc:
        proc.kill()
        pytest.fail(f"chroma run did not start: {exc}")
    return proc, port


def run_stages(root: Path, server: dict | None, cache: Path, monkeypatch) -> dict:
    """ingest -> adapter train (both sides, projected) -> a second adapter projected by `adapter project` -> eval."""
    from embedfit.adapters.cli import main as adapter_main
    from embedfit.evaluation.cli import main as eval_main
    from embedfit.pipeline.cli import main as ingest_main

    flags = ["--chroma-host", server["host"], "--chroma-port", str(server["port"])] if server else []
    store = root / "store"
    assert ingest_main(["--data", str(nq_data_dir()), "--store", str(store), "--model", MODEL, "--limit", str(LIMIT),
                        "--cache", str(cache), *flags]) == 0
    trained = root / "adapters" / "trained"
    assert adapter_main(["train", "--fixed", "--store", str(store), "--model", MODEL, "--sides", "both", "--epochs", "3",
                         "--out", str(trained), *flags]) == 0
    perturbed = root / "adapters" / "perturbed"
    make_adapter(perturbed, store, model=MODEL, sides="both", scale=0.05, seed=3, name="perturbed")
    assert adapter_main(["project", "--store", str(store), "--adapter", str(perturbed), *flags]) == 0
    with monkeypatch.context() as m:  # eval finds the server through the environment
        if server:
            m.setenv("CHROMA_HOST", server["host"])
            m.setenv("CHROMA_PORT", str(server["port"]))
        assert eval_main(["--store", str(store), "--out", str(root / "report"), "--adapter", str(perturbed),
                          "--adapter", str(trained), "--bootstrap-resamples", "200", "--mse-epochs", "2",
                          "--no-plots"]) == 0
    chroma_store.release_locks()
    return {"store": store, "trained": trained, "perturbed": perturbed, "report": root / "report", "server": server}


@pytest.fixture(scope="module")
def both(server, tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("server-mode")
    try:
        # the same embedding cache for both: the comparison is about where the vectors live, not the model
        yield {"server": run_stages(root / "server", server, root / "cache", monkeypatch),
               "embedded": run_stages(root / "embedded", None, root / "cache", monkeypatch)}
    finally:
        monkeypatch.undo()
        chroma_store.release_locks()


def open_store(run: dict) -> Store:
    s = run["server"]
    return Store(run["store"], s["host"], s["port"]) if s else Store(run["store"])


def test_server_mode_keeps_vectors_on_the_server_only(both, server):
    assert not (both["server"]["store"] / "chroma").exists()
    assert (both["embedded"]["store"] / "chroma").exists()
    assert any(server["path"].iterdir())
    summary = json.loads((both["server"]["store"] / "ingest_summary.json").read_text())
    assert summary["chroma"] == f"chroma server 127.0.0.1:{server['port']}"


def test_collections_are_identical_through_the_server(both):
    srv, emb = open_store(both["server"]), open_store(both["embedded"])
    def names(run: dict) -> list[str]:  # each adapter projects into a collection named by its own uid
        return ["raw-paraphrase-minilm-l3-v2", *(load_adapter(run[side]).collection_name for side in ("trained", "perturbed"))]

    def text_part(metas: list[dict]) -> list[dict]:  # projection_key = adapter_sha:text_sha; the sha covers the uid
        return [{**m, "projection_key": m["projection_key"].split(":")[1]} if "projection_key" in m else m for m in metas]

    for name, other in zip(names(both["server"]), names(both["embedded"])):
        a = chroma_store.fetch_all(srv.collection(name), with_documents=True, with_metadatas=True)
        b = chroma_store.fetch_all(emb.collection(other), with_documents=True, with_metadatas=True)
        assert a.ids == b.ids and len(set(a.ids)) == len(a.ids), name
        assert a.documents == b.documents and text_part(a.metadatas) == text_part(b.metadatas), name
        assert (a.embeddings == b.embeddings).all(), name
        assert srv.collection(name).configuration["hnsw"]["space"] == "cosine"
    for side in ("trained", "perturbed"):  # training read the same vectors through the server: same weights
        assert (both["server"][side] / "model.safetensors").read_bytes() == \
               (both["embedded"][side] / "model.safetensors").read_bytes()


def test_eval_through_the_server_gives_the_same_report(both):
    a = json.loads((both["server"]["report"] / "metrics.json").read_text())
    b = json.loads((both["embedded"]["report"] / "metrics.json").read_text())
    assert metrics_without_timings(a) == metrics_without_timings(b)
    da = json.loads((both["server"]["report"] / "details.json").read_text())["models"][MODEL]["systems"]
    db = json.loads((both["embedded"]["report"] / "details.json").read_text())["models"][MODEL]["systems"]
    assert set(da) == set(db) and {"raw", "adapted"} <= set(da)
    for system in da:  # the HNSW check queried the server's collections (named by each adapter's own uid)
        ha, hb = da[system].get("hnsw") or {}, db[system].get("hnsw") or {}
        assert {k: v for k, v in ha.items() if k != "collection"} == {k: v for k, v in hb.items() if k != "collection"}
        assert ha.get("collection", "").rsplit("-", 1)[0] == hb.get("collection", "").rsplit("-", 1)[0], system
    assert "collection" in da["raw"]["hnsw"]


def test_search_through_the_app_gives_identical_ids_and_ranks(both):
    from embedfit.app.config import AppConfig
    from embedfit.app.startup import open_app
    from embedfit.embed import load_embedder

    embedder = load_embedder(MODEL)
    states = {}
    for kind, run in both.items():
        s = run["server"] or {}
        cfg = AppConfig(store=run["store"], model=MODEL, adapter=run["perturbed"], report=run["report"],
                        chroma_host=s.get("host"), chroma_port=s.get("port"))
        states[kind] = open_app(cfg, embedder=embedder)
    srv, emb = states["server"].retriever, states["embedded"].retriever
    assert srv.adapter is not None and srv.adapter_note is None  # the projection was accepted through the server
    questions = QUESTIONS + states["embedded"].examples[:5]
    assert states["server"].examples == states["embedded"].examples
    raw_dump = chroma_store.fetch_all(srv.store.raw_collection(MODEL))
    for q in questions:
        a, b = srv.search(q, 10), emb.search(q, 10)
        for side in ("raw", "adapted"):
            ha, hb = getattr(a, side).hits, getattr(b, side).hits
            assert [(h.id, h.rank, h.movement, h.gold) for h in ha] == [(h.id, h.rank, h.movement, h.gold) for h in hb], q
            assert [h.score for h in ha] == [h.score for h in hb], q
        assert a.match == b.match
        assert [h.id for h in a.raw.hits] == exact_top(srv.embed(q), raw_dump.ids, raw_dump.embeddings, 10), q
    chroma_store.release_locks()


def test_an_unreachable_server_is_one_clear_error(tmp_path, capsys):
    from embedfit.pipeline.cli import main as ingest_main

    port = free_port()  # nothing listens there
    rc = ingest_main(["--data", str(nq_data_dir()), "--store", str(tmp_path / "s"), "--model", MODEL, "--limit", "5",
                      "--no-cache", "--chroma-host", "127.0.0.1", "--chroma-port", str(port)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"cannot reach the Chroma server at 127.0.0.1:{port}" in err and "embedfit serve" in err
    assert "Traceback" not in err
    assert not (tmp_path / "s").exists()  # refused before anything was written


def test_a_server_killed_during_an_upsert_is_one_message(tmp_path):
    """Issue 22, case 20: killing the Chroma server during a server-mode upsert gave an httpx traceback."""
    import numpy as np

    from embedfit.errors import StoreError
    from embedfit.store import chroma_store

    proc, port = start_chroma_server(tmp_path / "db", subprocess.DEVNULL)
    try:
        client = chroma_store.open_client(chroma_store.ChromaTarget(host="127.0.0.1", port=port), write=True)
        col = chroma_store.ensure_collection(client, "raw-x", {"kind": "raw"}, check_keys=("kind",))
        chroma_store.upsert_batched(col, client, ["a"], np.ones((1, 4), np.float32))
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(StoreError, match="lost the Chroma server while writing to raw-x"):
        chroma_store.upsert_batched(col, client, ["b"], np.ones((1, 4), np.float32))
    with pytest.raises(StoreError, match="lost the Chroma server while reading raw-x"):
        chroma_store.fetch_all(col)
