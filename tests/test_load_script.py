"""The load script end to end on a small store (a few clients, a few searches), and the app's bounded session state.

scripts/load_test.py found that every `/search` call over Gradio's REST API is a new session whose state Gradio
kept (10,000 by default): memory grew by about 85 KB a search. The app now keeps `state_sessions`; the test
counts the sessions Gradio holds after more API calls than that.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import REPO, build_small_store

from embedfit.app.serve import ANALYTICS_EVENTS, prune_idle_sessions
from embedfit.procs import free_port
from embedfit.store.chroma_store import release_locks
from scripts import load_test

MODEL = "paraphrase-MiniLM-L3-v2"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    cfg, _ = build_small_store(tmp_path_factory.mktemp("load"), model=MODEL, limit=40)
    release_locks()
    return cfg.store


def run_load_script(store, out, clients: int, searches: int, rounds: int, timeout: int):
    """`scripts/load_test.py` as a user runs it; returns (its output, the JSON it wrote)."""
    r = subprocess.run([sys.executable, "scripts/load_test.py", "--store", str(store), "--model", MODEL,
                        "--clients", str(clients), "--searches", str(searches), "--rounds", str(rounds),
                        "--out", str(out)], check=False, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return r, json.loads(out.read_text())


def test_the_script_runs_a_bounded_load_and_reports_its_figures(store, tmp_path):
    r, result = run_load_script(store, tmp_path / "load.json", clients=4, searches=5, rounds=2, timeout=600)
    assert result["errors"] == 0 and result["warmup_errors"] == 0
    for rnd in result["rounds"]:
        assert rnd["requests"] == rnd["ok"] == 20 and rnd["errors"] == 0
        lat = rnd["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert rnd["throughput_per_s"] > 0 and rnd["rss_mb_after"] > 50
    assert result["rss_mb"]["after_warmup"] > 50 and "p95" in r.stdout


@pytest.mark.parametrize("url", ["http://192.0.2.1:7860/", "http://0.0.0.0:7860/"])
def test_the_script_talks_to_loopback_only(url):
    with pytest.raises(SystemExit, match="loopback"):
        load_test.loopback_only(url)
    assert load_test.loopback_only("http://127.0.0.1:7860") == "http://127.0.0.1:7860/"


def test_the_app_keeps_a_bounded_number_of_sessions(store):
    from embedfit.app.config import AppConfig
    from embedfit.app.serve import serve
    from embedfit.app.startup import open_app
    from embedfit.app.ui import build_demo

    cfg = AppConfig(store=store, model=MODEL, port=free_port(), state_sessions=8)
    demo = build_demo(open_app(cfg))
    url = serve(demo, cfg, block=False)
    try:
        figures = load_test.run_round(url, 3, 10, load_test.store_questions(store), 5, 60)
        assert figures["errors"] == 0 and figures["ok"] == 30
        assert demo.state_holder.capacity == 8
        assert 1 <= len(demo.state_holder.session_data) <= 8  # 30 API calls, 30 sessions: only 8 kept
        # Gradio's queue bookkeeping: one entry per API call before IdleSessionPruner (30 here); now only
        # sessions with work in flight, and none once every result was delivered
        # (the pruning runs when a response has been sent, which may be just after the client read it: wait a little)
        q = demo._queue
        deadline = time.monotonic() + 10
        while (q.pending_event_ids_session or q.pending_messages_per_session) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(q.pending_event_ids_session) == 0 and len(q.pending_messages_per_session) == 0
        assert q.ANALYTICS_MAX_EVENTS == ANALYTICS_EVENTS
    finally:
        demo.close()
        release_locks()


def test_prune_drops_only_sessions_with_nothing_pending():
    import asyncio

    from gradio.utils import LRUCache

    class FakeQueue:
        def __init__(self):
            self.pending_event_ids_session = {"idle": set(), "running": {"e1"}, "waiting": set()}
            self.pending_messages_per_session = LRUCache(10)
            for s in ("idle", "running", "waiting", "orphan"):
                self.pending_messages_per_session[s] = asyncio.Queue()
            self.pending_messages_per_session["waiting"].put_nowait("a result not yet read")

    q = FakeQueue()
    assert prune_idle_sessions(q) == 2  # "idle", and "orphan" (a message queue with no ids, empty)
    assert set(q.pending_event_ids_session) == {"running", "waiting"}
    assert set(q.pending_messages_per_session) == {"running", "waiting"}
    assert prune_idle_sessions(object()) == 0  # a Gradio without these attributes: nothing happens


def test_soak_slope_against_hand_computed_values():
    rounds = [{"requests": 1000, "rss_mb_after": m} for m in (700.0, 710.0, 712.0, 714.0)]
    assert load_test.growth_per_1000(rounds) == 2.0  # round 1 left out: 710, 712, 714 at 2k, 3k, 4k searches
    flat = [{"requests": 500, "rss_mb_after": m} for m in (600.0, 650.0, 650.0, 650.0)]
    assert load_test.growth_per_1000(flat) == 0.0
    assert load_test.growth_per_1000(rounds[:2]) is None


#: MB per 1,000 searches. Measured on this 2-core machine (10 clients x 100 searches x 8 rounds, 60-query
#: store): 0.76 with the pruner, 1.98 without it (and the unfixed app's latency rose ~20% over the run, from
#: the linear scan of its session table). 1.5 rejects the unfixed rate and leaves twice the fixed one for noise;
#: it still means under 1.5 GB per million searches, where the unfixed app grew without end.
SOAK_BOUND_MB_PER_1000 = 1.5


@pytest.mark.slow
def test_soak_memory_stays_flat(store, tmp_path):
    _, result = run_load_script(store, tmp_path / "soak.json", clients=10, searches=100, rounds=6, timeout=1800)
    assert result["errors"] == 0 and len(result["rounds"]) == 6
    assert result["rss_mb"]["growth_per_1000_searches"] < SOAK_BOUND_MB_PER_1000, result["rss_mb"]
