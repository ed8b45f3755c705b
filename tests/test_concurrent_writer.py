"""Two processes on one embedded store: Chroma's local store is not process-safe, so a second writer (or a writer
while the app reads) must be refused at once with a message that says why and what to do, never hang or
interleave writes. Real processes throughout: a real `embedfit ingest`, and holders that open the store exactly
as ingest (exclusive) and the app/eval (shared) do.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO, nq_data_dir

from embedfit.errors import StoreBusyError
from embedfit.store.chroma_store import ChromaTarget, open_client, release_locks

MODEL = "paraphrase-MiniLM-L3-v2"
REFUSE_WITHIN_S = 60  # generous for a loaded 2-core machine; measured about 5 s (imports and data loading)

HOLDER = textwrap.dedent("""
    import sys, time
    from embedfit.store.store import Store
    store = Store(sys.argv[1], write=sys.argv[2] == "write")
    store.client  # takes the lock the way ingest (write) or the app and eval (read) do
    print("holding", flush=True)
    time.sleep(300)
""")


def env() -> dict[str, str]:
    e = {**os.environ, "EMBEDFIT_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
    e.pop("CHROMA_HOST", None)
    return e


def start_holder(store, mode: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(store), mode], cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if line.strip() != "holding":
        proc.kill()
        pytest.fail(f"holder did not start: {line} {proc.stderr.read()}")
    return proc


def ingest(store, limit: int = 30, cache=None) -> list[str]:
    return [sys.executable, "-m", "embedfit", "ingest", "--data", str(nq_data_dir()), "--store", str(store), "--model", MODEL,
            "--limit", str(limit), *(["--cache", str(cache)] if cache else ["--no-cache"])]


def run_ingest_cli(store, **kw) -> tuple[subprocess.CompletedProcess, float]:
    t0 = time.perf_counter()
    r = subprocess.run(ingest(store, **kw), check=False, cwd=REPO, env=env(), capture_output=True, text=True, timeout=REFUSE_WITHIN_S * 3)
    return r, time.perf_counter() - t0


def kill9(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def assert_refused(r: subprocess.CompletedProcess, seconds: float, doing: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    assert f"another process is {doing} the local store" in r.stderr
    assert "not process-safe" in r.stderr and "embedfit serve" in r.stderr  # why, and the way out
    assert seconds < REFUSE_WITHIN_S


def test_a_second_ingest_is_refused_while_a_writer_holds_the_store_and_a_killed_writer_frees_it(tmp_path):
    store = tmp_path / "store"
    holder = start_holder(store, "write")
    try:
        r, seconds = run_ingest_cli(store)
        assert_refused(r, seconds, "using")
        assert sorted(p.name for p in store.iterdir()) == [".store.lock", "chroma"]  # nothing written
        with pytest.raises(StoreBusyError, match="another process is writing to the local store"):
            open_client(ChromaTarget(path=store / "chroma"), write=False)  # a reader (eval, app) is refused too
    finally:
        kill9(holder)
    # the kernel drops an flock with its process: a writer killed with -9 leaves no stale lock behind
    open_client(ChromaTarget(path=store / "chroma"), write=True).close()
    release_locks()


def test_a_second_real_ingest_is_refused_while_the_first_runs_and_the_first_finishes(tmp_path):
    store = tmp_path / "store"
    first = subprocess.Popen(ingest(store, limit=400, cache=tmp_path / "cache"), cwd=REPO, env=env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in first.stderr:  # the lock is held from before `save_dataset` to the end
            if "step: embed_passages" in line:
                break
        else:
            pytest.fail(f"first ingest ended early: {first.wait()}")
        r, seconds = run_ingest_cli(store, cache=tmp_path / "cache2")
        still_running = first.poll() is None
        assert_refused(r, seconds, "using")
        out, err = first.communicate(timeout=300)
    finally:
        kill9(first)
    assert still_running, "the first ingest finished before the second was refused; the test proved nothing"
    assert first.returncode == 0, err[-2000:]
    assert "Ingested" in out and (store / "manifest.json").exists()


def test_a_writer_is_refused_while_the_app_reads_but_readers_share(tmp_path):
    store = tmp_path / "store"
    open_client(ChromaTarget(path=store / "chroma"), write=True).close()
    release_locks()
    reader = start_holder(store, "read")
    try:
        open_client(ChromaTarget(path=store / "chroma"), write=False).close()  # eval next to the app: fine
        release_locks()
        r, seconds = run_ingest_cli(store)
        assert_refused(r, seconds, "using")
        assert "close the app" in r.stderr
    finally:
        kill9(reader)
