"""The OpenAI key never leaves the process environment, and the app is reachable only from this machine.

A sentinel key goes through every path that touches it, against the real local HTTP server that plays the
OpenAI API (tests/fake_openai_server.py, which even echoes a wrong key back in its 401 message): ingest,
adapter training, eval and the app's search, with the root logger at DEBUG, plus the CLIs' stderr (`-v`),
their error messages, and every file they write (store, cache, adapter config, eval report). The sentinel
must appear nowhere, not even in part.

The app is started as users start it (`embedfit app`, no `--host`) and the kernel's socket table shows what it
listens on: 127.0.0.1 only. Files of the store and the repository are requested over HTTP and must be refused.
"""
from __future__ import annotations

import logging
import os
import secrets
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from conftest import REPO, nq_data_dir
from fake_openai_server import FakeOpenAIServer
from test_app_api import get_status

from embedfit.procs import free_port
from embedfit.store.chroma_store import release_locks

MODEL = "openai:text-embedding-3-small"
KEY = "sk-proj-SENTINEL-" + secrets.token_hex(16)
FRAGMENTS = [KEY, KEY[-16:], KEY[8:24]]  # a partial echo is a leak too


def leaks(text: str) -> list[str]:
    return [f for f in FRAGMENTS if f in text]


def files_with_key(*roots: Path) -> list[str]:
    found = []
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file() and any(f.encode() in path.read_bytes() for f in FRAGMENTS):
                found.append(str(path))
    return found


@pytest.fixture(scope="module")
def fake_openai():
    with FakeOpenAIServer(KEY) as srv:
        yield srv


@pytest.fixture
def key_env(fake_openai, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.url)
    return {**os.environ, "OPENAI_API_KEY": KEY, "OPENAI_BASE_URL": fake_openai.url, "EMBEDFIT_PROGRESS": "0"}


def test_the_key_reaches_no_log_message_or_file_even_at_debug(tmp_path, key_env, fake_openai, caplog):
    from embedfit.adapters.cli import main as adapter_main
    from embedfit.evaluation.cli import main as eval_main
    from embedfit.pipeline.cli import main as ingest_main

    caplog.set_level(logging.DEBUG)
    store, cache = tmp_path / "store", tmp_path / "cache"
    n_requests = len(fake_openai.received)
    assert ingest_main(["--data", str(nq_data_dir()), "--store", str(store), "--model", MODEL, "--limit", "40",
                        "--cache", str(cache), "-v"]) == 0
    assert len(fake_openai.received) > n_requests  # the embeddings really went through the (fake) API with the key
    assert fake_openai.received[-1].headers["authorization"] == f"Bearer {KEY}"
    assert adapter_main(["train", "--store", str(store), "--model", MODEL, "--sides", "query", "--epochs", "2",
                         "--out", str(tmp_path / "adapter"), "-v"]) == 0
    assert eval_main(["--store", str(store), "--out", str(tmp_path / "report"), "--adapter", str(tmp_path / "adapter"),
                      "--bootstrap-resamples", "100", "--mse-epochs", "1", "--no-plots", "-v"]) == 0
    from embedfit.app.config import AppConfig
    from embedfit.app.startup import open_app

    state = open_app(AppConfig(store=store, model=MODEL, adapter=tmp_path / "adapter", report=tmp_path / "report"))
    result = state.retriever.search("who wrote the declaration of independence", 5)
    assert result.raw.hits and fake_openai.received[-1].inputs == ["who wrote the declaration of independence"]
    release_locks()

    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # debug logging was really on
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
    assert not leaks(logged + caplog.text)
    assert not files_with_key(store, cache, tmp_path / "adapter", tmp_path / "report")
    assert (store / "ingest_summary.json").exists() and (store / "manifest.json").exists()


def test_cli_stderr_and_error_messages_never_show_the_key(tmp_path, key_env, fake_openai):
    args = [sys.executable, "-m", "embedfit", "ingest", "--data", str(nq_data_dir()), "--store", str(tmp_path / "store"),
            "--model", MODEL, "--limit", "20", "--cache", str(tmp_path / "cache"), "-v"]
    ok = subprocess.run(args, check=False, cwd=REPO, env=key_env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "DEBUG" in ok.stderr and not leaks(ok.stdout + ok.stderr)
    # a server that rejects the key answers 401 and echoes the whole key it was given (worse than the real API)
    fake_openai.api_key = "sk-another-key"
    try:
        bad = subprocess.run([*args[:-3], "--no-cache", "-v"], check=False, cwd=REPO, env=key_env, capture_output=True, text=True,
                             timeout=300)
    finally:
        fake_openai.api_key = KEY
    assert bad.returncode == 2 and "401" in bad.stderr and "OPENAI_API_KEY" in bad.stderr, bad.stderr[-2000:]
    assert "Traceback" not in bad.stderr and not leaks(bad.stdout + bad.stderr)
    # the key really was presented, so the server's 401 message carried it: redaction, not luck
    assert fake_openai.received[-1].headers["authorization"] == f"Bearer {KEY}"
    assert not files_with_key(tmp_path)


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket in LISTEN state on `port`, from the kernel's tables."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for row in rows:
            local, state = row.split()[1], row.split()[3]
            addr, p = local.split(":")
            if int(p, 16) == port and state == "0A":  # 0A = LISTEN
                if width == 8:
                    found.add(".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0)))
                else:
                    found.add(addr)
    return found


def test_the_app_listens_on_loopback_only_and_serves_no_store_or_repo_files(tmp_path):
    from conftest import build_small_store

    cfg, _ = build_small_store(tmp_path, model="paraphrase-MiniLM-L3-v2", limit=30)
    release_locks()
    store = cfg.store
    port = free_port()
    env = {**os.environ, "OPENAI_API_KEY": KEY, "GRADIO_ANALYTICS_ENABLED": "False"}
    proc = subprocess.Popen([sys.executable, "-m", "embedfit", "app", "--store", str(store), "--port", str(port),
                             "--model", "paraphrase-MiniLM-L3-v2",
                             "--adapter", str(tmp_path / "no-adapter"), "--report", str(tmp_path / "no-report"), "-v"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 180
        while get_status_or_none(url) != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"app did not start: {proc.stdout.read()[-3000:] if proc.poll() is not None else 'timeout'}")
            time.sleep(0.5)
        assert listening_addresses(port) == {"127.0.0.1"}
        for path in [store / "manifest.json", store / "dataset" / "qrels.tsv", store / ".store.lock",
                     REPO / "Makefile", REPO / "embedfit" / "store" / "store.py", Path("/etc/passwd")]:
            for prefix in ("/gradio_api/file=", "/gradio_api/file/", "/file="):
                status = get_status(url.rstrip("/") + prefix + urllib.parse.quote(str(path)))
                assert status in (403, 404), f"{prefix}{path} answered {status}"
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert not leaks(out)


def get_status_or_none(url: str) -> int | None:
    try:
        return get_status(url)
    except OSError:
        return None
