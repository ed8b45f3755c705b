"""OpenAI embeddings (`text-embedding-3-small`, `text-embedding-ada-002`) through the `openai` client.

What this module adds to the client, and why:

- **Our own retry policy.** The client's retries are switched off (`max_retries=0`) so the policy is
  explicit and tested: HTTP 429, 408, 5xx, connection errors and timeouts are retried with exponential
  backoff and jitter, honouring `Retry-After` (capped at `max_delay`); any other 4xx (bad key, bad
  request, unknown model) fails at once, since repeating it only costs time.
- **A malformed 200 body is not retried.** A body that is not JSON, lacks `data`, or has the wrong
  count or dimension is a deterministic contract break (OPENAI_BASE_URL pointing at something that is
  not the embeddings API, a proxy's HTML page, an incompatible server); retrying would pay for the same
  tokens again and hide the clear error behind minutes of backoff. A body cut short in transit shows
  up as a connection error instead, and that one is retried.
- **The API's limits are respected before sending.** Each input is cut to 8191 tokens with tiktoken's
  `cl100k_base` (both models use it), and each request carries at most 2048 inputs and 300,000 tokens
  (the API rejects more). tiktoken downloads its encoding file on first use, which fails offline; the
  encoding is resolved lazily and once, and if it cannot be loaded we log one warning and cut inputs to
  8191 UTF-8 bytes instead: every cl100k token covers at least one byte, so that can never exceed the
  limit (it only cuts long texts shorter than needed).
- **Empty or whitespace-only inputs are never sent** (the API rejects them); they get zero vectors,
  whose cosine with anything is 0, and a warning.
- **The key never leaks.** It is read only from `OPENAI_API_KEY`, kept only inside the client, removed
  from every message we build (servers may echo it), and the `openai`/`httpx`/`httpcore` loggers are
  held at WARNING or above so that a DEBUG root logger does not print request details.
"""
from __future__ import annotations

import base64
import binascii
import email.utils
import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import openai

from embedfit.embed.base import Embedder
from embedfit.errors import EmbeddingError, InputError, UnknownModelError

if TYPE_CHECKING:
    import tiktoken

log = logging.getLogger(__name__)

#: model name -> output dimension
MODELS: dict[str, int] = {"text-embedding-3-small": 1536, "text-embedding-ada-002": 1536}
TOKENIZER = "cl100k_base"
MAX_INPUT_TOKENS = 8191
MAX_INPUTS_PER_REQUEST = 2048
MAX_TOKENS_PER_REQUEST = 300_000
DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: loggers that could print request details at DEBUG (httpx2/httpcore2 are what openai 3.x uses)
HTTP_LOGGERS = ("openai", "httpx", "httpx2", "httpcore", "httpcore2")
RETRY_STATUSES = frozenset({408, 429})


def quiet_http_loggers() -> None:
    """Raise the HTTP-stack loggers to WARNING (never lower a stricter level the user chose)."""
    for name in HTTP_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


def load_cl100k() -> tiktoken.Encoding:
    """tiktoken's cl100k_base (reads TIKTOKEN_CACHE_DIR, else downloads the file)."""
    import tiktoken

    return tiktoken.get_encoding(TOKENIZER)


# --- pure helpers (tested on their own) -------------------------------------------------------------

def truncate_to_tokens(text: str, encoding: tiktoken.Encoding, limit: int) -> tuple[str, int]:
    """(prefix of `text` that encodes to at most `limit` tokens, its token count).

    The cut is made on the token list, decoded to bytes and back on a character boundary; BPE need not
    re-encode a prefix to the same tokens, so the result is re-encoded and cut further if needed.
    Special-token text such as "<|endoftext|>" is encoded as plain text, as the API does.
    """
    tokens = encoding.encode(text, disallowed_special=())
    if len(tokens) <= limit:
        return text, len(tokens)
    keep = limit
    while True:
        prefix = encoding.decode_bytes(tokens[:keep]).decode("utf-8", errors="ignore")
        count = len(encoding.encode(prefix, disallowed_special=()))
        if count <= limit:
            return prefix, count
        keep -= count - limit


def truncate_to_bytes(text: str, limit: int) -> tuple[str, int]:
    """(prefix of `text` of at most `limit` UTF-8 bytes, cut on a character boundary, its byte count).

    The byte count is an upper bound on the cl100k token count: the fallback when tiktoken is missing.
    """
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text, len(data)
    prefix = data[:limit].decode("utf-8", errors="ignore")
    return prefix, len(prefix.encode("utf-8"))


def plan_requests(token_counts: list[int], max_inputs: int, max_tokens: int) -> list[range]:
    """Consecutive index ranges with at most `max_inputs` items and `max_tokens` tokens each.

    An item larger than `max_tokens` on its own still gets a request (it cannot be split further).
    """
    plan: list[range] = []
    start, total = 0, 0
    for i, n in enumerate(token_counts):
        if i > start and (i - start >= max_inputs or total + n > max_tokens):
            plan.append(range(start, i))
            start, total = i, 0
        total += n
    if start < len(token_counts):
        plan.append(range(start, len(token_counts)))
    return plan


def parse_embeddings(body: bytes, n: int, dim: int) -> np.ndarray:
    """The (n, dim) float32 matrix of an embeddings response, rows ordered by `index`.

    Accepts float lists and base64 strings (little-endian float32). Raises ValueError saying what is
    wrong: not JSON, no `data` list, wrong count, bad or repeated index, wrong dimension, non-finite.
    """
    try:
        payload = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise ValueError(f"body is not JSON ({exc})") from None
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise ValueError("body has no 'data' list")  # noqa: TRY004 - one exception type for every malformed body
    if len(data) != n:
        raise ValueError(f"{len(data)} embeddings for {n} inputs")
    out = np.zeros((n, dim), dtype=np.float32)
    seen: set[int] = set()
    for item in data:
        index = item.get("index") if isinstance(item, dict) else None
        if type(index) is not int or not 0 <= index < n or index in seen:
            raise ValueError(f"bad or repeated index {index!r}")
        seen.add(index)
        out[index] = _vector(item.get("embedding"), dim, index)
    return out


def _vector(embedding: object, dim: int, index: int) -> np.ndarray:
    if isinstance(embedding, str):
        try:
            raw = base64.b64decode(embedding, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"embedding {index} is not valid base64") from None
        if len(raw) != 4 * dim:
            raise ValueError(f"embedding {index} has {len(raw) / 4:g} dimensions, expected {dim}")
        vec = np.frombuffer(raw, dtype="<f4")
    elif isinstance(embedding, list):
        try:
            vec = np.asarray(embedding, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"embedding {index} is not a list of numbers") from None
        if vec.shape != (dim,):
            raise ValueError(f"embedding {index} has {len(embedding)} dimensions, expected {dim}")
    else:
        raise ValueError(f"embedding {index} is neither a float list nor a base64 string")  # noqa: TRY004
    if not np.all(np.isfinite(vec)):
        raise ValueError(f"embedding {index} has non-finite values")
    return vec


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The server's requested wait: `retry-after-ms`, else `retry-after` (seconds or an HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def backoff_delay(retry: int, base: float, cap: float, retry_after: float | None, rng: random.Random) -> float:
    """Seconds to wait before retry number `retry` (0-based).

    The server's Retry-After wins (capped at `cap`); otherwise base * 2**retry, capped, with "equal
    jitter" (a uniform draw from the upper half) so that parallel clients do not retry in lockstep.
    """
    if retry_after is not None:
        return min(retry_after, cap)
    step = min(cap, base * 2.0**retry)
    return step * (0.5 + 0.5 * rng.random())


def public_url(url: str) -> str:
    """`url` without user:password, for messages."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host  # IPv6 literal
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def _redactor(secret: str) -> Callable[[str], str]:
    return lambda text: text.replace(secret, "[redacted key]") if secret else text


# --- the backend -------------------------------------------------------------------------------------

class OpenAIEmbedder(Embedder):
    """`openai:<model>`; key from OPENAI_API_KEY, endpoint from OPENAI_BASE_URL (default the public API)."""

    max_batch_size = MAX_INPUTS_PER_REQUEST
    #: one request per cache batch for NQ-sized passages (~170 tokens: 1024 of them stay under 300k
    #: tokens), and an interrupted run loses at most one such batch
    default_batch_size = 1024

    def __init__(
        self,
        model: str = "text-embedding-3-small",
        *,
        encoding: tiktoken.Encoding | Callable[[], tiktoken.Encoding] | None = None,
        encoding_format: Literal["base64", "float"] = "base64",
        max_retries: int = 6,
        base_delay: float = 1.0,
        max_delay: float = 60.0,
        timeout: float = 60.0,
        max_tokens_per_request: int = MAX_TOKENS_PER_REQUEST,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
    ):
        """`encoding`: a tiktoken Encoding or a function returning one (default: load cl100k_base when
        first needed). `sleep` and `seed` exist so tests can observe the backoff without waiting."""
        if model not in MODELS:
            raise UnknownModelError(f"unknown OpenAI embedding model {model!r}; supported: "
                                    + ", ".join(f"openai:{m}" for m in MODELS))
        if max_retries < 0:
            raise InputError(f"max_retries must be >= 0, not {max_retries}")
        if encoding_format not in ("base64", "float"):
            raise InputError(f"encoding_format must be 'base64' or 'float', not {encoding_format!r}")
        key = os.environ.get("OPENAI_API_KEY", "").strip()
        if not key:
            raise InputError(f"openai:{model} needs an API key: set the OPENAI_API_KEY environment variable "
                             "(it is never read from the command line)")
        if not (key.isascii() and key.isprintable()):
            raise InputError("OPENAI_API_KEY contains non-ASCII or control characters; check how it was set")
        self.model = model
        self.model_id = f"openai:{model}"
        self.dim = MODELS[model]
        self.base_url = os.environ.get("OPENAI_BASE_URL", "").strip() or DEFAULT_BASE_URL
        self.encoding_format = encoding_format
        self.max_retries = max_retries
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.timeout = timeout
        self.max_tokens_per_request = max_tokens_per_request
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._encoding_source = encoding if encoding is None or callable(encoding) else (lambda: encoding)
        self._encoding: tiktoken.Encoding | None = None
        self._encoding_resolved = False
        self._redact = _redactor(key)
        quiet_http_loggers()
        self._client = openai.OpenAI(api_key=key, base_url=self.base_url, max_retries=0, timeout=timeout)

    def __repr__(self) -> str:
        return f"OpenAIEmbedder(model_id={self.model_id!r}, base_url={public_url(self.base_url)!r})"

    # --- truncation ---

    def _tokenizer(self) -> tiktoken.Encoding | None:
        """The encoding, resolved on first use; None (after one warning) if it cannot be loaded."""
        if not self._encoding_resolved:
            self._encoding_resolved = True
            try:
                self._encoding = (self._encoding_source or load_cl100k)()
            except Exception as exc:  # noqa: BLE001 - offline download, bad cache file, missing plugin: all mean "no tokenizer"
                log.warning(
                    "tiktoken cannot load %s (%s: %s); inputs will be cut at %d UTF-8 bytes instead of %d tokens "
                    "(never over the limit, but long texts lose more than needed). For exact truncation put the "
                    "encoding file in TIKTOKEN_CACHE_DIR.", TOKENIZER, type(exc).__name__, exc, MAX_INPUT_TOKENS,
                    MAX_INPUT_TOKENS)
        return self._encoding

    def _fit(self, text: str) -> tuple[str, int]:
        """`text` cut to the model's input limit, and its token count (or byte count, an upper bound)."""
        if not _utf8_ok(text):  # lone surrogates cannot be sent as UTF-8; as tiktoken does, replace them
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        encoding = self._tokenizer()
        if encoding is not None:
            return truncate_to_tokens(text, encoding, MAX_INPUT_TOKENS)
        return truncate_to_bytes(text, MAX_INPUT_TOKENS)

    # --- requests ---

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        """Raw (unnormalised) vectors; empty inputs get zero rows and are not sent."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        keep = [i for i, t in enumerate(texts) if t.strip()]
        if len(keep) < len(texts):
            log.warning("%d of %d inputs are empty or whitespace-only: not sent to %s, zero vectors instead",
                        len(texts) - len(keep), len(texts), self.model_id)
        if not keep:
            return out
        fitted = [self._fit(texts[i]) for i in keep]
        cut = sum(1 for i, (t, _) in zip(keep, fitted) if len(t) < len(texts[i]))
        if cut:
            log.info("%d inputs truncated to the %d-token limit of %s", cut, MAX_INPUT_TOKENS, self.model_id)
        plan = plan_requests([n for _, n in fitted], MAX_INPUTS_PER_REQUEST, self.max_tokens_per_request)
        for part in plan:
            vectors = self._request([fitted[j][0] for j in part])
            out[[keep[j] for j in part]] = vectors
        return out

    def _request(self, inputs: list[str]) -> np.ndarray:
        """One embeddings request with our retry policy; (len(inputs), dim) floats or EmbeddingError."""
        where = public_url(self.base_url)
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            retry_after = None
            try:
                raw = self._client.embeddings.with_raw_response.create(
                    model=self.model, input=inputs, encoding_format=self.encoding_format)
            except openai.APIStatusError as exc:
                status = exc.status_code
                # redact before shortening: a cut must not leave half a key behind
                failure = f"HTTP {status}: {self._redact(_server_message(exc))[:300]}"
                if status not in RETRY_STATUSES and status < 500:
                    raise EmbeddingError(self._redact(
                        f"OpenAI embeddings request to {where} failed with {failure}{_hint(status)} (not retried)")) from None
                retry_after = retry_after_seconds(exc.response.headers)
            except openai.APITimeoutError:
                failure = f"no response within {self.timeout:g} s"
            except openai.APIConnectionError as exc:
                failure = f"connection error ({exc.__cause__ or exc})"
            else:
                log.debug("%s: %d inputs embedded (attempt %d)", self.model_id, len(inputs), attempt)
                try:
                    return parse_embeddings(raw.content, len(inputs), self.dim)
                except ValueError as exc:
                    start = self._redact(raw.content.decode("utf-8", errors="replace"))[:200]
                    raise EmbeddingError(self._redact(
                        f"malformed embeddings response from {where} for {self.model_id}: {exc}; body starts "
                        f"{start!r}. Not retried (a malformed body does not fix itself); check that "
                        "OPENAI_BASE_URL points at an OpenAI-compatible /embeddings endpoint")) from None
            if attempt == attempts:
                raise EmbeddingError(self._redact(
                    f"OpenAI embeddings request to {where} failed after {attempts} attempts; last error: {failure}"))
            delay = backoff_delay(attempt - 1, self.base_delay, self.max_delay, retry_after, self._rng)
            log.warning("%s", self._redact(f"OpenAI embeddings: {failure}; retry {attempt}/{self.max_retries} in {delay:.2f} s"))
            self._sleep(delay)
        raise AssertionError("unreachable")


def _utf8_ok(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _server_message(exc: openai.APIStatusError) -> str:
    """The API's own error message (the client passes the body's {"error": {...}} part as `body`)."""
    body = exc.body
    message = body.get("message") if isinstance(body, dict) else None
    return str(message or exc.message)


def _hint(status: int) -> str:
    if status in (401, 403):
        return "; check the OPENAI_API_KEY environment variable"
    if status == 404:
        return "; check the model name and OPENAI_BASE_URL"
    return ""
