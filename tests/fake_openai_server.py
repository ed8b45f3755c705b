"""A real local HTTP server that answers `POST /v1/embeddings` the way the OpenAI API does.

Why: the OpenAI backend must be tested through a real socket, the real `openai` client and its real
HTTP stack; only the remote model cannot run here. So this server behaves like the API
where the backend depends on it:

- it checks what the API checks: the bearer key (401, echoing the *whole* presented key in the
  message, a worse leak than the real API's masked echo, so tests can prove we redact it), the model
  (404), the input (400 for an empty string or more than 2048 inputs);
- it answers with a deterministic embedding of each received text (`oracle_vector`), so a test
  compares what the backend returns with vectors it computes on its own;
- it honours `encoding_format` ("float", the API default, or "base64": little-endian float32) and
  can return `data` in shuffled order (the API documents `index`, not order);
- it records every request (headers, parsed body) and can be scripted per test: a queue of replies
  (`script`) consumed one per request, then `default` (None = the normal answer) for all later ones.
"""
from __future__ import annotations

import base64
import hashlib
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import numpy as np

DIM = 1536
MODELS = ("text-embedding-3-small", "text-embedding-ada-002")
MAX_INPUTS = 2048


def oracle_vector(text: str, dim: int = DIM) -> np.ndarray:
    """The fake model: a standard-normal float32 vector seeded by sha256 of the text."""
    seed = int.from_bytes(hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


@dataclass(frozen=True)
class Reply:
    """One scripted answer. `body=None` means the normal embeddings payload, passed through `edit`."""

    status: int = 200
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    edit: Callable[[dict], dict] | None = None
    delay: float = 0.0

    @staticmethod
    def error(status: int, message: str, headers: dict[str, str] | None = None) -> Reply:
        """An error in the API's shape: {"error": {"message", "type", "code"}}."""
        payload = {"error": {"message": message, "type": "server_error" if status >= 500 else "invalid_request_error",
                             "param": None, "code": None}}
        return Reply(status=status, body=json.dumps(payload).encode(), headers=headers or {})


@dataclass(frozen=True)
class Received:
    """What one request carried (header names lower-cased)."""

    path: str
    headers: dict[str, str]
    body: Any

    @property
    def inputs(self) -> list[str]:
        return list(self.body.get("input", [])) if isinstance(self.body, dict) else []

    @property
    def encoding_format(self) -> str | None:
        return self.body.get("encoding_format") if isinstance(self.body, dict) else None


class FakeOpenAIServer:
    """ThreadingHTTPServer on 127.0.0.1 and a free port; `url` is the value for OPENAI_BASE_URL."""

    def __init__(self, api_key: str, dim: int = DIM, shuffle: bool = False, seed: int = 0):
        self.api_key = api_key
        self.dim = dim
        self.shuffle = shuffle
        self.default: Reply | None = None
        self.received: list[Received] = []
        self._queue: list[Reply] = []
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with `replies`, in order (after that, `default`)."""
        with self._lock:
            self._queue.extend(replies)

    def start(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the API ---------------------------------------------------------------------------------

    def respond(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, str], bytes, float]:
        """(status, headers, body, delay) for one request; records it first."""
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        request = Received(path=path, headers=headers, body=body)
        with self._lock:
            self.received.append(request)
        problem = self._validate(request)
        if problem is not None:
            return _as_tuple(problem)
        with self._lock:
            reply = self._queue.pop(0) if self._queue else self.default
        reply = reply or Reply()
        if reply.body is not None:
            return _as_tuple(reply)
        payload = self._embeddings_payload(request)
        if reply.edit is not None:
            payload = reply.edit(payload)
        return reply.status, {"Content-Type": "application/json", **reply.headers}, json.dumps(payload).encode(), reply.delay

    def _validate(self, request: Received) -> Reply | None:
        if request.path != "/v1/embeddings":
            return Reply.error(404, f"Invalid URL (POST {request.path})")
        auth = request.headers.get("authorization", "")
        if auth != f"Bearer {self.api_key}":
            presented = auth.removeprefix("Bearer ")
            return Reply.error(401, f"Incorrect API key provided: {presented}. You can find your API key at "
                                    "https://platform.openai.com/account/api-keys.")
        body = request.body
        if not isinstance(body, dict):
            return Reply.error(400, "We could not parse the JSON body of your request.")
        if body.get("model") not in MODELS:
            return Reply.error(404, f"The model `{body.get('model')}` does not exist or you do not have access to it.")
        inputs = body.get("input")
        if (not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS
                or not all(isinstance(t, str) and t for t in inputs)):
            return Reply.error(400, "'$.input' is invalid. Please check the API reference.")
        if body.get("encoding_format", "float") not in ("float", "base64"):
            return Reply.error(400, "encoding_format must be 'float' or 'base64'")
        return None

    def _embeddings_payload(self, request: Received) -> dict:
        fmt = request.encoding_format or "float"
        data = []
        for i, text in enumerate(request.inputs):
            vec = oracle_vector(text, self.dim)
            emb: Any = base64.b64encode(vec.astype("<f4").tobytes()).decode() if fmt == "base64" else vec.tolist()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        if self.shuffle:
            with self._lock:
                self._rng.shuffle(data)
        tokens = sum(max(1, len(t) // 4) for t in request.inputs)
        return {"object": "list", "data": data, "model": request.body["model"],
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _as_tuple(reply: Reply) -> tuple[int, dict[str, str], bytes, float]:
    return reply.status, {"Content-Type": "application/json", **reply.headers}, reply.body or b"", reply.delay


def _handler_class(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real API
        disable_nagle_algorithm = True  # headers and body go out in separate writes; no 40 ms stalls

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, out_headers, body, delay = server.respond(self.path, headers, raw)
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                for name, value in out_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests read `server.received`, not stderr

    return Handler
