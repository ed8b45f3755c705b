"""`make demo` (scripts/demo.py): the page opens after the app's model alone, the rest finishes while it serves.

The end-to-end test runs the real demo on a slice of the shared NQ data: it must report the page ready before it
starts on the second model, answer a search on that page (through the Chroma server the demo started) while the
second model is being made, then write the report with both models; after Ctrl-C every child is gone and the store
opens embedded with both models in it. Oracles: the demo's own log order, the page's HTTP answers, the store's
manifest and the report file, all read independently of the demo.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from conftest import REPO, nq_data_dir

from embedfit.errors import InputError
from embedfit.procs import descendants, free_port, running
from scripts.demo import DEFAULT_HUB_LIMIT, DemoConfig, parse_args


def test_hub_dataset_is_limited_by_default_and_all_means_all():
    assert parse_args(["--data", "sentence-transformers/natural-questions"]).ingest_limit() == DEFAULT_HUB_LIMIT
    assert parse_args(["--data", "sentence-transformers/natural-questions", "--limit", "all"]).ingest_limit() is None
    assert parse_args(["--data", "sentence-transformers/natural-questions", "--limit", "500"]).ingest_limit() == 500
    # a local folder is used whole unless asked otherwise
    assert parse_args(["--data", str(nq_data_dir())]).ingest_limit() is None
    assert parse_args(["--data", str(nq_data_dir()), "--limit", "50"]).ingest_limit() == 50


def test_bad_settings_are_refused():
    with pytest.raises(InputError, match="--limit"):
        parse_args(["--limit", "lots"])
    with pytest.raises(InputError, match="--limit"):
        DemoConfig(limit=0).validate()
    with pytest.raises(InputError, match="not among --models"):
        DemoConfig(models=("all-MiniLM-L6-v2",), app_model="paraphrase-MiniLM-L3-v2").validate()


def _search(base: str, question: str) -> list:
    req = urllib.request.Request(f"{base}gradio_api/call/search", data=json.dumps({"data": [question, 5]}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        event = json.load(r)["event_id"]
    with urllib.request.urlopen(f"{base}gradio_api/call/search/{event}", timeout=120) as r:
        body = r.read().decode()
    m = re.search(r"event: complete\ndata: (.*)", body)
    assert m, body[-500:]
    return json.loads(m.group(1))


def _start_demo(tmp_path):
    """The real demo on the first 60 shared NQ questions, in its own session, logging to tmp_path/demo.log:
    (page port, log path, environment, process)."""
    port = free_port()
    out = tmp_path / "demo.log"
    env = {**os.environ, "EMBEDFIT_CACHE": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "scripts.demo", "--data", str(nq_data_dir()), "--limit", "60",
           "--store", str(tmp_path / "store"), "--adapters", str(tmp_path / "adapters"), "--report", str(tmp_path / "report"),
           "--port", str(port)]
    with out.open("w") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return port, out, env, proc


def test_page_first_then_the_rest_through_a_server(tmp_path):
    port, out, env, proc = _start_demo(tmp_path)
    base = f"http://127.0.0.1:{port}/"
    answered_while_busy = None
    try:
        deadline = time.monotonic() + 600
        while "FULL REPORT" not in out.read_text():
            assert proc.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, out.read_text()[-3000:]
            text = out.read_text()
            if answered_while_busy is None and "PAGE READY" in text and "ingest all-MiniLM-L6-v2" in text:
                answered_while_busy = _search(base, "who wrote the declaration of independence")
            time.sleep(1)
        text = out.read_text()
        # the page was up before the second model was started, and served a search while it was being made
        assert text.index("PAGE READY") < text.index("ingest all-MiniLM-L6-v2") < text.index("FULL REPORT")
        assert answered_while_busy is not None
        with urllib.request.urlopen(base, timeout=10) as r:
            assert r.status == 200
        assert _search(base, "what is the capital of france")  # and still serves after the report
        report = (tmp_path / "report" / "report.md").read_text()
        assert "all-MiniLM-L6-v2" in report and "paraphrase-MiniLM-L3-v2" in report
        server_port = int(re.search(r"Chroma server on 127\.0\.0\.1:(\d+)", text).group(1))
    finally:
        proc.send_signal(signal.SIGTERM)  # to the demo alone: it must stop its children itself
        proc.wait(timeout=60)
    assert proc.returncode == 130, out.read_text()[-2000:]  # interrupted, not crashed
    for p in (port, server_port):  # the app and the Chroma server are gone
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{p}/", timeout=2)
    from embedfit.store.store import Store

    store = Store(tmp_path / "store")
    assert set(store.manifest()["models"]) == {"all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2"}
    assert store.raw_collection("all-MiniLM-L6-v2").count() > 0  # the server's writes, read embedded


def test_kill_9_of_the_demo_leaves_no_process_and_its_server_holds_the_store(tmp_path):
    """Issue 22, cases 12-13: kill -9 of the demo left its Chroma server, the app and the ingest child running as
    orphans (a rerun then reported PAGE READY from the orphan); an embedded writer was let into the store the demo's
    server serves. Now every child dies with the demo, and the store is locked while the server holds it."""
    port, out, env, proc = _start_demo(tmp_path)
    try:
        deadline = time.monotonic() + 600
        while "PAGE READY" not in out.read_text():
            assert proc.poll() is None, out.read_text()[-3000:]
            assert time.monotonic() < deadline, out.read_text()[-3000:]
            time.sleep(1)
        children = descendants(proc.pid)
        assert len(children) >= 2, children  # the Chroma server and the app at least
        # an embedded writer is refused while the demo's server holds the store
        clean_env = {k: v for k, v in env.items() if k not in ("CHROMA_HOST", "CHROMA_PORT")}
        r = subprocess.run([sys.executable, "-m", "embedfit", "ingest", "--data", str(nq_data_dir()), "--limit", "5",
                            "--store", str(tmp_path / "store"), "--model", "paraphrase-MiniLM-L3-v2"],
                           cwd=REPO, env=clean_env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2 and "a Chroma server (pid" in r.stderr, r.stderr[-2000:]
        children |= descendants(proc.pid)
    finally:
        proc.kill()  # kill -9: no handler runs in the demo
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while any(running(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert [p for p in children if running(p)] == [], out.read_text()[-2000:]
    with pytest.raises(OSError):  # nothing answers on the page's port any more
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)


def test_the_demo_refuses_a_port_someone_else_answers_on(tmp_path):
    """Issue 22, case 12: with an orphan answering on the page's port, the demo reported PAGE READY from it."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "scripts.demo", "--data", str(nq_data_dir()), "--limit", "30",
                            "--store", str(tmp_path / "store"), "--adapters", str(tmp_path / "adapters"),
                            "--report", str(tmp_path / "report"), "--port", str(port), "--page-only"],
                           cwd=REPO, env={**os.environ, "EMBEDFIT_CACHE": str(tmp_path / "cache")},
                           capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and f"port {port} is in use" in r.stdout + r.stderr
    assert "PAGE READY" not in r.stdout + r.stderr
