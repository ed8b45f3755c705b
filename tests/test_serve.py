"""`embedfit serve` and the guard against a hand-started `chroma run` (issue 22, case 13).

A `chroma run` takes no lock of ours, so an embedded writer beside it was accepted and reads through the server
then failed (`InternalError: Error finding id`). `embedfit serve` holds the store's lock while its server runs, and
every embedded opener also looks for a `chroma run` serving its folder. Oracles: the embedded store's own
collections (read before the server starts), and /proc for what is left running.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import chromadb
import pytest
from test_server_mode import start_chroma_server

from embedfit.procs import descendants, free_port, running, wait_until_answering

OPEN_EMBEDDED = textwrap.dedent("""
    import sys
    from embedfit.errors import StoreBusyError
    from embedfit.store import chroma_store
    try:
        chroma_store.open_client(chroma_store.resolve_target(sys.argv[1]), write=sys.argv[2] == "write")
        print("OPENED")
    except StoreBusyError as exc:
        print("REFUSED", exc)
""")


def open_embedded(store, write: bool, cwd) -> str:
    """Open the store embedded in a separate process, as another command would: OPENED or REFUSED + message."""
    r = subprocess.run([sys.executable, "-c", OPEN_EMBEDDED, str(store), "write" if write else "read"], cwd=cwd,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout.strip()


@pytest.fixture
def store(small_store, tmp_path):
    """A private copy of the session's small store (the session's own is held open by this test process)."""
    dst = tmp_path / "store"
    shutil.copytree(small_store[0].store, dst, ignore=shutil.ignore_patterns(".store.lock"))
    return dst


def serve(store, port, tmp_path) -> subprocess.Popen:
    env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "embedfit", "serve", "--store", str(store), "--port", str(port)],
                            stdout=open(tmp_path / "serve.out", "w"), stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    wait_until_answering(f"http://127.0.0.1:{port}/api/v2/heartbeat", proc, 90)
    deadline = time.monotonic() + 30  # the heartbeat answers a moment before serve prints its line
    while "serving the store" not in (tmp_path / "serve.out").read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    return proc


def test_serve_holds_the_store_and_dies_with_its_parent(store, tmp_path):
    embedded = chromadb.PersistentClient(path=str(store / "chroma"))
    want = sorted((c.name, c.count()) for c in embedded.list_collections())
    del embedded
    port = free_port()
    proc = serve(store, port, tmp_path)
    try:
        assert f"--chroma-port {port}" in (tmp_path / "serve.out").read_text()
        client = chromadb.HttpClient(host="127.0.0.1", port=port)
        assert sorted((c.name, c.count()) for c in client.list_collections()) == want and want
        for write in (False, True):  # readers and writers alike: the server owns the files now
            got = open_embedded(store, write, tmp_path)
            assert got.startswith("REFUSED") and "--chroma-host" in got, got
        below = descendants(proc.pid)
        assert below
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    deadline = time.monotonic() + 10
    while any(running(p) for p in below) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [p for p in below if running(p)] == []  # the chroma server died with `embedfit serve`
    assert open_embedded(store, True, tmp_path) == "OPENED"  # and the store is free again


@pytest.mark.parametrize("relative", [False, True])
def test_an_embedded_opener_is_refused_beside_a_hand_started_chroma_run(store, tmp_path, relative):
    """The server's --path is resolved against its own working directory: `chroma run --path chroma` started in
    the store folder serves the same files as the absolute path."""
    db = store / "chroma"
    cwd = os.getcwd()
    os.chdir(store if relative else tmp_path)
    try:
        proc, port = start_chroma_server(db.relative_to(store) if relative else db, open(tmp_path / "run.log", "w"))
    finally:
        os.chdir(cwd)
    try:
        got = open_embedded(store, True, tmp_path)
        assert got.startswith("REFUSED") and f"pid {proc.pid}" in got and "embedfit serve" in got, got
        other = tmp_path / "other"
        (other / "chroma").mkdir(parents=True)
        assert open_embedded(other, True, tmp_path) == "OPENED"  # a server on another folder is no reason
    finally:
        proc.kill()
        proc.wait()
    assert open_embedded(store, True, tmp_path) == "OPENED"


def test_serve_refuses_a_taken_port_and_a_folder_without_a_store(store, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "embedfit", "serve", "--store", str(store), "--port", str(port)],
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and f"port {port}" in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "embedfit", "serve", "--store", str(tmp_path / "nothing"), "--port",
                        str(free_port())], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "no Chroma data" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "nothing").exists()
