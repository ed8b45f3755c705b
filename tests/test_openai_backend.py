"""The OpenAI backend against a real local HTTP server (tests/fake_openai_server.py) and the real client.

Oracles that do not come from the code under test: the server's hash-seeded vectors (recomputed
here from the texts), what the server recorded it received, tiktoken itself for token counts (a small
byte-level `tiktoken.Encoding` built here with cl100k's split pattern, since cl100k's file cannot be
downloaded offline), and plain properties (prefix, byte counts) for truncation.
"""
from __future__ import annotations

import base64
import email.utils
import json
import logging
import random
import socket
import time

import numpy as np
import pytest
import tiktoken
from fake_openai_server import DIM, FakeOpenAIServer, Reply, oracle_vector
from hypothesis import given, settings
from hypothesis import strategies as st

from embedfit.embed.openai_api import (
    HTTP_LOGGERS,
    MAX_INPUT_TOKENS,
    OpenAIEmbedder,
    backoff_delay,
    parse_embeddings,
    plan_requests,
    public_url,
    retry_after_seconds,
    truncate_to_bytes,
    truncate_to_tokens,
)
from embedfit.embed.registry import load_embedder
from embedfit.errors import EmbeddingError, EmbedfitError, InputError, UnknownModelError

KEY = "sk-test-SENTINEL-123"
CL100K_PAT = (r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|"""
              r"""\s++$|\s*[\r\n]|\s+(?!\S)|\s""")
EDGE_TEXTS = ["what is the capital of france", "\x00nul and \x07 bell", "\u200fright-to-left \u05e9\u05dc\u05d5\u05dd",
              "emoji 😀🎉", "one", "| a | table |\n| 1 | 2 |"]


def tiny_encoding() -> tiktoken.Encoding:
    """A real tiktoken BPE: the 256 bytes plus a few merges, cl100k's pattern, one special token."""
    ranks = {bytes([i]): i for i in range(256)}
    for merge in [b"th", b"he", b"the", b" t", b" the", b"in", b"an", b"er", b"on", b"  ", b"    ", b"\xc3\xa9"]:
        ranks[merge] = len(ranks)
    return tiktoken.Encoding(name="tiny-cl100k-pattern", pat_str=CL100K_PAT, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": len(ranks)})


TINY = tiny_encoding()


def offline_loader() -> tiktoken.Encoding:
    raise OSError("cannot download cl100k_base: no internet")


def expected(texts: list[str]) -> np.ndarray:
    """The server's vectors for `texts`, unit length (what the backend must return)."""
    vectors = np.stack([oracle_vector(t) for t in texts]).astype(np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def make(model: str = "text-embedding-3-small", **kwargs) -> OpenAIEmbedder:
    """A backend with fast retries and the tiny tokenizer unless a test says otherwise."""
    options = {"encoding": TINY, "max_retries": 3, "base_delay": 0.001, "max_delay": 0.01, "timeout": 5.0}
    return OpenAIEmbedder(model, **{**options, **kwargs})


@pytest.fixture
def server(monkeypatch):
    with FakeOpenAIServer(KEY) as srv:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url)
        yield srv


def free_closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- answers ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["float", "base64"])
def test_vectors_match_the_oracle_in_input_order_even_when_the_server_shuffles(server, fmt):
    server.shuffle = True
    vectors = make(encoding_format=fmt).embed(EDGE_TEXTS, "passage")
    np.testing.assert_allclose(vectors, expected(EDGE_TEXTS), atol=1e-6)
    assert vectors.dtype == np.float32
    (request,) = server.received
    assert request.inputs == EDGE_TEXTS
    assert request.encoding_format == fmt
    assert request.body["model"] == "text-embedding-3-small"
    assert request.headers["authorization"] == f"Bearer {KEY}"


def test_base64_is_the_default_and_ada_002_is_served(server):
    emb = make("text-embedding-ada-002")
    assert (emb.model_id, emb.dim) == ("openai:text-embedding-ada-002", 1536)
    np.testing.assert_allclose(emb.embed(["x"], "query"), expected(["x"]), atol=1e-6)
    assert server.received[0].encoding_format == "base64"
    assert server.received[0].body["model"] == "text-embedding-ada-002"


# --- retries ------------------------------------------------------------------------------------------

def test_429_then_success_takes_exactly_two_requests(server):
    server.script(Reply.error(429, "Rate limit reached", {"Retry-After": "0"}))
    sleeps: list[float] = []
    vectors = make(sleep=sleeps.append).embed(["a", "b"], "query")
    np.testing.assert_allclose(vectors, expected(["a", "b"]), atol=1e-6)
    assert len(server.received) == 2
    assert sleeps == [0.0]


@pytest.mark.parametrize(("headers", "max_delay", "wait"), [
    ({"Retry-After": "7"}, 60.0, 7.0),
    ({"retry-after-ms": "250"}, 60.0, 0.25),
    ({"Retry-After": "7"}, 2.0, 2.0),  # capped by max_delay
])
def test_retry_after_is_honoured(server, headers, max_delay, wait):
    server.script(Reply.error(429, "slow down", headers))
    sleeps: list[float] = []
    make(sleep=sleeps.append, max_delay=max_delay).embed(["a"], "query")
    assert sleeps == [pytest.approx(wait)]


@pytest.mark.parametrize("status", [500, 503, 408])
def test_persistent_server_error_gives_up_after_max_retries(server, status):
    server.default = Reply.error(status, "The server had an error")
    with pytest.raises(EmbeddingError) as info:
        make(max_retries=3).embed(["a"], "query")  # real time.sleep, tiny delays
    assert len(server.received) == 4
    assert f"HTTP {status}" in str(info.value) and "4 attempts" in str(info.value)


def test_backoff_grows_exponentially_with_jitter(server):
    server.default = Reply.error(502, "Bad gateway")
    sleeps: list[float] = []
    with pytest.raises(EmbeddingError):
        make(max_retries=5, base_delay=1.0, max_delay=100.0, sleep=sleeps.append, seed=1).embed(["a"], "query")
    assert len(sleeps) == 5
    for k, slept in enumerate(sleeps):
        assert 2**k / 2 <= slept <= 2**k


@pytest.mark.parametrize("status", [400, 403, 422])
def test_other_client_errors_fail_at_once(server, status):
    server.script(Reply.error(status, "Invalid request"))
    with pytest.raises(EmbeddingError, match=f"HTTP {status}.*not retried"):
        make().embed(["a"], "query")
    assert len(server.received) == 1


def test_wrong_key_401_fails_at_once_with_a_hint(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong-key")
    with pytest.raises(EmbeddingError) as info:
        make().embed(["a"], "query")
    assert len(server.received) == 1
    assert "HTTP 401" in str(info.value) and "OPENAI_API_KEY" in str(info.value)
    assert "sk-wrong-key" not in str(info.value)  # the fake echoes the key it was given


def test_connection_refused_is_retried_then_raises(monkeypatch):
    port = free_closed_port()
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    sleeps: list[float] = []
    with pytest.raises(EmbeddingError, match=r"3 attempts.*connection error") as info:
        make(max_retries=2, sleep=sleeps.append).embed(["a"], "query")
    assert len(sleeps) == 2
    assert f"127.0.0.1:{port}" in str(info.value)


def test_timeout_is_retried_then_raises(server):
    server.default = Reply(delay=1.0)
    started = time.monotonic()
    with pytest.raises(EmbeddingError, match=r"2 attempts.*no response within 0.2 s"):
        make(max_retries=1, timeout=0.2).embed(["a"], "query")
    assert len(server.received) == 2
    assert time.monotonic() - started < 1.5


# --- malformed bodies ---------------------------------------------------------------------------------

def _drop_last(payload: dict) -> dict:
    payload["data"] = sorted(payload["data"], key=lambda d: d["index"])[:-1]
    return payload


def _short_vector(payload: dict) -> dict:
    payload["data"][0]["embedding"] = payload["data"][0]["embedding"][:100]
    return payload


def _repeat_index(payload: dict) -> dict:
    for item in payload["data"]:
        item["index"] = 0
    return payload


def _nan(payload: dict) -> dict:
    payload["data"][0]["embedding"][3] = float("nan")
    return payload


def _string_index(payload: dict) -> dict:
    payload["data"][0]["index"] = str(payload["data"][0]["index"])
    return payload


def _short_base64(payload: dict) -> dict:
    payload["data"][0]["embedding"] = base64.b64encode(b"\0" * 4 * 1535).decode()
    return payload


@pytest.mark.parametrize(("reply", "fmt", "problem"), [
    (Reply(body=b"<html>502 Bad Gateway</html>"), "float", "not JSON"),
    (Reply(body=b"{}"), "float", "no 'data' list"),
    (Reply(body=b'{"data": "nope"}'), "float", "no 'data' list"),
    (Reply(edit=_drop_last), "float", "1 embeddings for 2 inputs"),
    (Reply(edit=_short_vector), "float", "100 dimensions, expected 1536"),
    (Reply(edit=_short_base64), "base64", "1535 dimensions, expected 1536"),
    (Reply(edit=_repeat_index), "float", "repeated index"),
    (Reply(edit=_string_index), "float", "bad or repeated index"),
    (Reply(edit=_nan), "float", "non-finite"),
], ids=["html", "empty-object", "data-not-list", "count", "dim-float", "dim-base64", "dup-index", "str-index", "nan"])
def test_malformed_body_raises_without_retry(server, reply, fmt, problem):
    server.script(reply)
    with pytest.raises(EmbeddingError, match="malformed") as info:
        make(encoding_format=fmt).embed(["a", "b"], "query")
    assert problem in str(info.value)
    assert len(server.received) == 1


@pytest.mark.parametrize(("body", "problem"), [
    (b"\xff\xfe", "not JSON"),
    (b"[1, 2]", "no 'data' list"),
    (json.dumps({"data": [{"index": 0, "embedding": "!!not base64!!"}]}).encode(), "not valid base64"),
    (json.dumps({"data": [{"index": 0, "embedding": ["x", "y"]}]}).encode(), "not a list of numbers"),
    (json.dumps({"data": [{"index": 0, "embedding": None}]}).encode(), "neither"),
    (json.dumps({"data": [{"index": 1, "embedding": [0.0, 1.0]}]}).encode(), "bad or repeated index 1"),
])
def test_parse_embeddings_rejects(body, problem):
    with pytest.raises(ValueError, match=problem):
        parse_embeddings(body, 1, 2)


def test_parse_embeddings_orders_by_index_and_decodes_little_endian():
    rows = np.array([[1.5, -2.0], [0.25, 8.0]], dtype=np.float32)
    body = json.dumps({"data": [
        {"index": 1, "embedding": base64.b64encode(rows[1].astype("<f4").tobytes()).decode()},
        {"index": 0, "embedding": rows[0].tolist()},
    ]}).encode()
    np.testing.assert_array_equal(parse_embeddings(body, 2, 2), rows)


# --- request limits ------------------------------------------------------------------------------------

def test_5000_inputs_go_in_requests_of_at_most_2048(server):
    texts = [f"question {i}" for i in range(5000)]
    vectors = make().embed(texts, "passage")
    assert [len(r.inputs) for r in server.received] == [2048, 2048, 904]
    assert [t for r in server.received for t in r.inputs] == texts
    np.testing.assert_allclose(vectors, expected(texts), atol=1e-6)


def test_the_request_itself_never_carries_more_than_2048_inputs(server):
    texts = [f"p{i}" for i in range(2100)]
    raw = make()._embed_batch(texts)  # called directly, bypassing embed()'s slicing
    assert [len(r.inputs) for r in server.received] == [2048, 52]
    assert raw.shape == (2100, DIM)


def test_requests_stay_under_the_token_budget(server):
    texts = [f"the answer number {i} is in the text" for i in range(40)]
    make(max_tokens_per_request=60).embed(texts, "passage")
    assert len(server.received) > 1
    for request in server.received:
        assert sum(len(TINY.encode(t)) for t in request.inputs) <= 60


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 100), max_size=60), st.integers(1, 10), st.integers(1, 200))
def test_plan_requests_covers_everything_in_order_within_limits(counts, max_inputs, max_tokens):
    plan = plan_requests(counts, max_inputs, max_tokens)
    assert [i for part in plan for i in part] == list(range(len(counts)))
    for part in plan:
        assert 1 <= len(part) <= max_inputs
        assert len(part) == 1 or sum(counts[i] for i in part) <= max_tokens


# --- empty inputs ------------------------------------------------------------------------------------

def test_empty_strings_are_not_sent_and_get_zero_rows(server, caplog):
    texts = ["alpha", "", "   ", "beta", "\n\t", "\u3000"]
    with caplog.at_level(logging.WARNING, logger="embedfit.embed.openai_api"):
        vectors = make().embed(texts, "query")
    assert [r.inputs for r in server.received] == [["alpha", "beta"]]
    assert not vectors[[1, 2, 4, 5]].any()
    np.testing.assert_allclose(vectors[[0, 3]], expected(["alpha", "beta"]), atol=1e-6)
    assert any("4 of 6 inputs are empty" in r.getMessage() for r in caplog.records)


def test_a_batch_of_only_empty_strings_makes_no_request(server):
    vectors = make().embed(["", " ", "\t"], "query")
    assert server.received == []
    assert vectors.shape == (3, DIM) and not vectors.any()


# --- truncation ----------------------------------------------------------------------------------------

def long_text(n_chars: int = 100_000, seed: int = 0) -> str:
    """Words, spaces, accents, emoji and a special-token string: many multi-byte and byte-level tokens."""
    rng = random.Random(seed)
    words = ["the", "answer", "état", "😀", "<|endoftext|>", "in", "on", "\u05e9\u05dc\u05d5\u05dd", "42", "  "]
    parts: list[str] = []
    total = 0
    while total < n_chars:
        parts.append(rng.choice(words))
        total += len(parts[-1]) + 1
    return " ".join(parts)[:n_chars]


def test_long_input_is_cut_to_8191_tokens_with_tiktoken_before_sending(server):
    text = long_text()
    assert len(TINY.encode(text, disallowed_special=())) > MAX_INPUT_TOKENS
    make().embed([text, "short one"], "passage")
    sent, short = server.received[0].inputs
    assert text.startswith(sent) and len(sent) < len(text)
    assert MAX_INPUT_TOKENS - 8 <= len(TINY.encode(sent, disallowed_special=())) <= MAX_INPUT_TOKENS
    assert short == "short one"


def test_without_tiktoken_data_inputs_are_cut_to_8191_bytes_with_one_warning(server, caplog):
    calls = []

    def loader() -> tiktoken.Encoding:
        calls.append(1)
        return offline_loader()

    emb = make(encoding=loader)
    text = long_text(seed=1)
    with caplog.at_level(logging.WARNING, logger="embedfit.embed.openai_api"):
        emb.embed([text], "passage")
        emb.embed([text + "!", "short"], "passage")
    assert len(calls) == 1
    assert sum("tiktoken cannot load" in r.getMessage() for r in caplog.records) == 1
    for request in server.received:
        sent = request.inputs[0]
        assert text.startswith(sent)
        assert MAX_INPUT_TOKENS - 3 <= len(sent.encode("utf-8")) <= MAX_INPUT_TOKENS
        assert len(TINY.encode(sent, disallowed_special=())) <= MAX_INPUT_TOKENS  # bytes bound tokens
    assert server.received[1].inputs[1] == "short"


def test_default_loader_is_not_called_before_the_first_request(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setattr("embedfit.embed.openai_api.load_cl100k", lambda: pytest.fail("loaded eagerly"))
    OpenAIEmbedder("text-embedding-3-small")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.integers(1, 40))
def test_truncate_to_tokens_gives_a_prefix_within_the_limit(text, limit):
    cut, count = truncate_to_tokens(text, TINY, limit)
    assert text.startswith(cut)
    assert count == len(TINY.encode(cut, disallowed_special=())) <= limit
    if len(TINY.encode(text, disallowed_special=())) <= limit:
        assert cut == text


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200), st.integers(1, 40))
def test_truncate_to_bytes_gives_the_longest_prefix_within_the_limit(text, limit):
    cut, count = truncate_to_bytes(text, limit)
    assert text.startswith(cut)
    assert count == len(cut.encode("utf-8")) <= limit
    if cut != text:
        assert count + len(text[len(cut)].encode("utf-8")) > limit


def test_lone_surrogates_are_replaced_not_crashing(server):
    make().embed(["bad \ud800 half"], "query")
    assert server.received[0].inputs == ["bad \ufffd half"]


# --- the key -------------------------------------------------------------------------------------------

def test_key_never_reaches_logs_or_errors_even_at_debug(server, caplog):
    caplog.set_level(logging.DEBUG)
    for name in HTTP_LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    emb = make(sleep=lambda s: None)
    for name in HTTP_LOGGERS:
        assert logging.getLogger(name).getEffectiveLevel() >= logging.WARNING
    errors: list[str] = []
    server.script(Reply.error(429, f"rate limit for key {KEY}", {"Retry-After": "0"}))
    emb.embed(["hello"], "query")
    server.script(Reply(body=f"<html>proxy error for Authorization: Bearer {KEY}</html>".encode()))
    server.script(Reply.error(400, "x" * 290 + KEY))  # the key straddles the 300-character cut
    server.default = Reply.error(500, f"boom {KEY}")
    for _ in range(3):
        with pytest.raises(EmbeddingError) as info:
            emb.embed(["hello"], "query")
        errors.append(str(info.value))
    server.default, server.api_key = None, "another-key"  # now the server answers 401 echoing our key
    with pytest.raises(EmbeddingError) as info:
        emb.embed(["hello"], "query")
    errors.append(str(info.value))
    assert len(server.received) == 1 + 1 + 1 + 4 + 1 + 1  # the test exercised every path
    assert any(r.levelno == logging.DEBUG and r.name == "embedfit.embed.openai_api" for r in caplog.records)
    logged = caplog.text + "".join(f"{r.getMessage()} {r.args!r}" for r in caplog.records)
    for leak_check in [logged, *errors, repr(emb), json.dumps(emb.describe())]:
        assert KEY not in leak_check
        assert KEY[:12] not in leak_check


def test_a_stricter_level_on_the_http_loggers_is_kept(server, caplog):
    caplog.set_level(logging.ERROR, logger="openai")
    make()
    assert logging.getLogger("openai").level == logging.ERROR


@pytest.mark.parametrize("value", [None, "", "   "])
def test_missing_key_is_a_clear_user_error(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    else:
        monkeypatch.setenv("OPENAI_API_KEY", value)
    with pytest.raises(InputError, match="set the OPENAI_API_KEY environment variable") as info:
        OpenAIEmbedder("text-embedding-3-small")
    assert isinstance(info.value, EmbedfitError)


def test_a_key_with_control_characters_is_rejected_without_echoing_it(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-pasted\u2019-key\x07")
    with pytest.raises(InputError) as info:
        OpenAIEmbedder("text-embedding-3-small")
    assert "sk-pasted" not in str(info.value)


# --- construction -----------------------------------------------------------------------------------

def test_registry_builds_the_backend_without_exposing_the_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    emb = load_embedder("openai:text-embedding-3-small")
    assert isinstance(emb, OpenAIEmbedder)
    assert (emb.model_id, emb.dim, emb.max_batch_size) == ("openai:text-embedding-3-small", 1536, 2048)
    assert emb.base_url == "https://api.openai.com/v1"
    assert emb.describe() == {"model_id": "openai:text-embedding-3-small", "dim": 1536, "backend": "OpenAIEmbedder"}
    assert KEY not in repr(emb)


@pytest.mark.parametrize("name", ["openai:text-embedding-3-large", "openai:"])
def test_unknown_openai_model_lists_the_supported_ones(monkeypatch, name):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with pytest.raises(UnknownModelError) as info:
        load_embedder(name)
    assert "openai:text-embedding-3-small" in str(info.value)
    assert "openai:text-embedding-ada-002" in str(info.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("https://user:secret@proxy.example:8443/v1", "https://proxy.example:8443/v1"),
    ("http://[::1]:8080/v1", "http://[::1]:8080/v1"),
    ("https://api.openai.com/v1", "https://api.openai.com/v1"),
])
def test_public_url_drops_credentials(url, shown):
    assert public_url(url) == shown


# --- pure retry helpers ------------------------------------------------------------------------------

@pytest.mark.parametrize(("headers", "seconds"), [
    ({"retry-after": "0"}, 0.0),
    ({"retry-after": "2.5"}, 2.5),
    ({"retry-after-ms": "150", "retry-after": "9"}, 0.15),
    ({"retry-after": "-3"}, 0.0),
    ({"retry-after": "soon"}, None),
    ({}, None),
])
def test_retry_after_seconds(headers, seconds):
    assert retry_after_seconds(headers) == (None if seconds is None else pytest.approx(seconds))


def test_retry_after_as_an_http_date():
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds({"retry-after": when}) <= 31


@given(st.integers(0, 12), st.floats(0.001, 5), st.floats(0.01, 100), st.integers(0, 2**32))
def test_backoff_delay_is_capped_jittered_exponential(retry, base, cap, seed):
    step = min(cap, base * 2**retry)
    delay = backoff_delay(retry, base, cap, None, random.Random(seed))
    assert step / 2 <= delay <= step
    assert backoff_delay(retry, base, cap, 3.0, random.Random(seed)) == min(3.0, cap)
