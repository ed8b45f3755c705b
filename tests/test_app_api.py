"""The real app on a free local port over a real 300-query store, called the way users call it: through
`gradio_client` at the named `/search` endpoint, and over plain HTTP for files it must never serve."""
from __future__ import annotations

import ipaddress
import socket
import urllib.error
import urllib.parse
import urllib.request

import pytest
from app_support import APP_FUSION, ExactOracle, assert_same_ranking, running_app
from conftest import REPO

from embedfit.store.store import Store


@pytest.fixture(scope="module")
def app(small_store, tmp_path_factory):
    return running_app(small_store[0].store, tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def client(app):
    from gradio_client import Client

    return Client(app.url, verbose=False)


def search(client, question, k=10):
    return client.predict(question, k, api_name="/search")


def get_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def other_addresses() -> set[str]:
    """This machine's IPv4 addresses that are not loopback: its hostname's, and the source address of its default
    route (a UDP `connect` sends nothing). May be empty on a machine without a network."""
    found = set()
    try:
        found |= {i[4][0] for i in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    except socket.gaierror:
        pass
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: only picks the route
            found.add(s.getsockname()[0])
        except OSError:
            pass
    return {a for a in found if not ipaddress.ip_address(a).is_loopback and a != "0.0.0.0"}


def test_binds_localhost_with_a_bounded_queue(app):
    assert app.url.startswith("http://127.0.0.1:")
    assert get_status(app.url) == 200
    port = urllib.parse.urlsplit(app.url).port
    for addr in other_addresses():  # the port answers on loopback only
        with pytest.raises(OSError):
            socket.create_connection((addr, port), timeout=2).close()
    assert app.demo._queue.max_size == app.cfg.queue_size
    assert app.demo.share is False


def test_search_is_the_only_public_endpoint(client):
    assert set(client.view_api(print_info=False, return_format="dict")["named_endpoints"]) == {"/search"}


@pytest.fixture(scope="module")
def oracle(app):
    return ExactOracle(app.cfg.store, adapter_dir=app.cfg.adapter_dir())


def expected_movement(raw_rank: int | None, adapted_rank: int) -> str:
    """The arrow the README documents, from the exact rankings: ↑n = n places higher with the adapter."""
    if raw_rank is None:
        return "new"
    d = raw_rank - adapted_rank
    return "=" if d == 0 else f"↑{d}" if d > 0 else f"↓{-d}"


@pytest.mark.parametrize("question", ["who wrote the declaration of independence", "how do volcanoes form"])
def test_results_are_the_exact_cosine_rankings(client, app, oracle, question):
    """Both columns against brute-force cosine over the store's raw vectors (adapted: the query times the
    adapter's matrix): ids, order, scores, passage text, and the rank arrows."""
    r = search(client, question, 5)
    assert r["message"] is None and r["match"] is None and r["notices"] == []
    qvec = app.state.retriever.embedder.embed([question], "query")
    raw, adapted = oracle.ranking(qvec, 5), oracle.ranking(qvec, 5, adapted=True)
    assert [h["id"] for h in r["raw"]["hits"]] == [pid for pid, _ in raw]
    assert [h["id"] for h in r["adapted"]["hits"]] == [pid for pid, _ in adapted]
    assert raw != adapted or [s for _, s in raw] != [s for _, s in adapted]  # the adapter changes something
    for side, want in (("raw", raw), ("adapted", adapted)):
        hits = r[side]["hits"]
        assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
        assert [h["score"] for h in hits] == pytest.approx([s for _, s in want], abs=2e-4)
        for h in hits:
            passage = oracle.corpus[h["id"]]
            assert (h["title"], h["text"]) == (passage.title, passage.text)
            assert not h["gold"]  # not a store question: nothing is gold
    deep_raw = [pid for pid, _ in oracle.ranking(qvec, app.state.retriever.depth)]
    for h in r["adapted"]["hits"]:
        raw_rank = deep_raw.index(h["id"]) + 1 if h["id"] in deep_raw else None
        assert h["movement"] == expected_movement(raw_rank, h["rank"]), h["id"]
    assert set(r["timings_ms"]) == {"embed", "raw", "adapted", "lexical", "fuse", "total"}


@pytest.mark.parametrize("question", ["who wrote the declaration of independence", None])
def test_the_hybrid_side_is_the_retrievers(client, app, oracle, question):
    """The API's `hybrid` side: k hits, the ids the service computes for the same question, the fused ranking of
    the oracle (exact adapted cosine + bm25s + the fusion rule), the fusion used, and its timings."""
    if question is None:  # a store question, so gold marks show up too
        question = app.state.examples[2]
    r = search(client, question, 7)
    expected = app.state.retriever.search(question, 7).hybrid
    h = r["hybrid"]
    assert h["label"] == "Adapter + BM25" and len(h["hits"]) == 7
    assert [x["id"] for x in h["hits"]] == [x.id for x in expected.hits]
    assert [(x["gold"], x["movement"], x["raw_rank"], x["hybrid_rank"]) for x in h["hits"]] == [
        (x.gold, x.movement, x.raw_rank, x.hybrid_rank) for x in expected.hits]
    assert {k: h["fusion"][k] for k in APP_FUSION} == APP_FUSION
    qvec = app.state.retriever.embedder.embed([question], "query")
    assert_same_ranking([x["id"] for x in h["hits"]], oracle.hybrid(qvec, question, APP_FUSION, adapted=True))
    for x in h["hits"]:
        assert (x["title"], x["text"]) == (oracle.corpus[x["id"]].title, oracle.corpus[x["id"]].text)
    t = r["timings_ms"]
    assert t["lexical"] > 0 and t["total"] >= t["embed"] + t["raw"] + t["adapted"] + t["lexical"] + t["fuse"]


def test_nq_question_has_its_gold_marked(client, app):
    store = Store(app.cfg.store)
    queries, qrels = store.load_queries(), store.load_qrels()
    qid = next(q for q in store.split_query_ids("test") if queries[q] == app.state.examples[0])
    r = search(client, queries[qid], 10)
    trained = {p for q, s in store.load_splits().items() if s == "train" for p in qrels.get(q, {})}
    assert r["match"] == {"query_id": qid, "split": "test", "gold_ids": sorted(qrels[qid]),
                       "seen": set(qrels[qid]) <= trained}
    assert r["dataset"] == "nq"
    gold_hits = [h for h in r["raw"]["hits"] if h["gold"]]
    assert gold_hits and all(h["id"] in qrels[qid] for h in gold_hits)
    assert r["raw"]["gold_rank"] == gold_hits[0]["rank"]
    assert {h["id"] for h in r["adapted"]["hits"] if h["gold"]} == set(qrels[qid]) & {h["id"] for h in r["adapted"]["hits"]}


@pytest.mark.parametrize("question", ["", "   \t  "])
def test_empty_question_gets_a_friendly_message(client, question):
    r = search(client, question)
    assert r["message"].startswith("Type a question")
    assert r["raw"] is None and r["adapted"] is None and r["hybrid"] is None


def test_100k_characters_are_cut_in_the_handler(client, app):
    r = search(client, "why is the sky blue " * 5_000, 3)  # 100,000 characters
    assert r["question"] == ("why is the sky blue " * 5_000)[: app.cfg.max_chars].strip()
    assert any("100,000 characters" in n for n in r["notices"])
    assert len(r["raw"]["hits"]) == 3


def test_control_characters_are_removed(client):
    r = search(client, "who\x00 wrote\x07 the\x1b[31m declaration\u202e of independence")
    assert r["question"] == "who wrote the[31m declaration of independence"
    assert any("Removed 4 control characters" in n for n in r["notices"])
    assert r["raw"]["hits"]


def test_k_is_bounded_in_the_handler(client, app):
    r = search(client, "who wrote hamlet", 500)
    assert r["k"] == app.cfg.max_k and len(r["raw"]["hits"]) == app.cfg.max_k
    assert any("Top-k" in n for n in r["notices"])


def test_store_repo_and_report_files_are_not_served(app):
    store = Store(app.cfg.store)
    secrets = [store.manifest_path, store.dataset_dir / "qrels.tsv", app.cfg.adapter_dir() / "config.json",
               app.cfg.report / "metrics.json", REPO / "Makefile", REPO / "embedfit" / "app" / "README.md",
               REPO / "embedfit" / "app" / "ui.py", "/etc/passwd"]
    for path in secrets:
        for prefix in ("/gradio_api/file=", "/gradio_api/file/", "/file="):
            status = get_status(app.url.rstrip("/") + prefix + urllib.parse.quote(str(path)))
            assert status in (403, 404), f"{prefix}{path} answered {status}"


def raw_call(url: str, body: dict) -> str:
    """POST to /gradio_api/call/search as a plain HTTP client does, then read the event stream."""
    import json

    req = urllib.request.Request(url.rstrip("/") + "/gradio_api/call/search", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as resp:
        event_id = json.loads(resp.read())["event_id"]
    with urllib.request.urlopen(f"{url.rstrip('/')}/gradio_api/call/search/{event_id}", timeout=30) as resp:
        return resp.read().decode("utf-8")


@pytest.mark.parametrize("data", [[], ["who wrote hamlet"]])
def test_a_missing_argument_over_raw_http_gets_a_clear_message(app, data, capfd):
    stream = raw_call(app.url, {"data": data})
    assert "event: error" in stream
    assert f"/search takes 2 inputs (question, k); got {len(data)}" in stream  # was {"error": null}
    assert "Traceback" not in capfd.readouterr().err


def test_both_arguments_over_raw_http_search(app):
    stream = raw_call(app.url, {"data": ["who wrote hamlet", 3]})
    assert "event: complete" in stream and '"rank": 3' in stream
