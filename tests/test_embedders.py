"""Both local models on real NQ texts, the model registry's errors, and the embedding cache."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from embedfit.embed import EmbeddingCache, embed_cached, load_embedder
from embedfit.errors import OfflineError, UnknownModelError

MODELS = ["all-MiniLM-L6-v2", "paraphrase-MiniLM-L3-v2"]


@pytest.fixture(scope="module")
def real_rows(nq_dir):
    pairs = [json.loads(line) for line in open(nq_dir / "pairs.jsonl", encoding="utf-8")][:8]
    return [p["query"] for p in pairs], [f"{p['title']} {p['passage']}" for p in pairs]


@pytest.fixture(scope="module", params=MODELS)
def embedder(request):
    return load_embedder(request.param)


def test_local_model_embeds_real_texts_and_matches_questions_to_answers(embedder, real_rows):
    queries, passages = real_rows
    q = embedder.embed(queries, "query")
    p = embedder.embed(passages, "passage")
    assert q.shape == (8, 384) and q.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-5)
    sims = q @ p.T
    # each question is closer to its own answer than the average other answer, for most of the 8
    own = np.diag(sims)
    others = (sims.sum(1) - own) / 7
    assert (own > others).mean() >= 0.75
    # batching does not change results beyond float noise
    np.testing.assert_allclose(embedder.embed(queries[:3], "query"), q[:3], atol=1e-5)


def test_onnx_mean_pooling_matches_the_graphs_own_pooled_output():
    from embedfit.embed.onnx_minilm import OnnxMiniLMEmbedder

    e = OnnxMiniLMEmbedder()
    texts = ["who wrote the declaration of independence", "a much longer second text to force padding of the first"]
    enc = e.tokenizer.encode_batch(texts)
    ids = np.array([x.ids for x in enc])
    mask = np.array([x.attention_mask for x in enc])
    outs = e.session.run(None, {"input_ids": ids, "attention_mask": mask})
    pooled = next(o for o in outs if o.ndim == 2 and o.shape[1] == 384)  # the graph's pooled output
    np.testing.assert_allclose(e._embed_batch(texts), pooled, atol=1e-5)


def test_unknown_model_lists_known_ones():
    with pytest.raises(UnknownModelError) as err:
        load_embedder("no-such-model")
    for name in MODELS + ["openai:text-embedding-3-small"]:
        assert name in str(err.value)


def test_hub_model_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(OfflineError):
        load_embedder("someone/some-model-that-is-not-cached")
    assert time.perf_counter() - t0 < 30


class CountingEmbedder:
    """Wraps a real embedder and counts the texts it is asked to embed."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.model_id, self.dim = inner.model_id, inner.dim
        self.max_batch_size, self.default_batch_size = inner.max_batch_size, 4

    def prepare(self, text, kind):
        return self.inner.prepare(text, kind)

    def embed_prepared(self, texts):
        self.calls += len(texts)
        return self.inner.embed_prepared(texts)


def test_cache_second_run_embeds_nothing_and_damaged_chunks_are_redone(tmp_path, real_rows):
    inner = load_embedder("paraphrase-MiniLM-L3-v2")
    texts = real_rows[1] + real_rows[0]
    e = CountingEmbedder(inner)
    first, st = embed_cached(e, texts, "passage", EmbeddingCache(tmp_path, e.model_id, e.dim))
    assert st["embedded"] == 16 and e.calls == 16
    e.calls = 0
    again, st = embed_cached(e, texts, "passage", EmbeddingCache(tmp_path, e.model_id, e.dim))
    assert st["embedded"] == 0 and e.calls == 0 and np.array_equal(first, again)
    # truncate one chunk (as a crash in a non-atomic writer would) and corrupt another's bytes
    chunks = sorted(tmp_path.rglob("*.npz"))
    assert len(chunks) == 4
    chunks[0].write_bytes(chunks[0].read_bytes()[:100])
    raw = bytearray(chunks[1].read_bytes())
    raw[-300] ^= 0xFF
    chunks[1].write_bytes(bytes(raw))
    cache = EmbeddingCache(tmp_path, e.model_id, e.dim)
    assert cache.rejected_files == 2 and len(cache) == 8
    redone, st = embed_cached(e, texts, "passage", cache)
    assert st["embedded"] == 8 and e.calls == 8
    assert np.array_equal(redone, first)  # same batches, same bits


def test_cache_refuses_other_model(tmp_path):
    e = load_embedder("paraphrase-MiniLM-L3-v2")
    with pytest.raises(ValueError):
        embed_cached(e, ["x"], "query", EmbeddingCache(tmp_path, "other-model", 384))


def test_device_auto_runs_on_what_torch_sees_and_bad_devices_say_why():
    import torch

    from embedfit.embed.registry import resolve_device
    from embedfit.errors import InputError

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")  # no GPU here: the CPU
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(InputError, match="must be one of"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA build of torch"):
            resolve_device("cuda:0")
        with pytest.raises(InputError, match="sees no CUDA GPU"):
            load_embedder("all-MiniLM-L6-v2", device="cuda")
    with pytest.raises(InputError, match="onnxruntime's CPU build"):
        load_embedder("paraphrase-MiniLM-L3-v2", device="cuda")
    e = load_embedder("all-MiniLM-L6-v2", device="auto")
    assert str(e.model.device) == resolve_device("auto")


def test_device_is_checked_by_every_cli_config():
    from embedfit.app.config import AppConfig
    from embedfit.errors import InputError
    from embedfit.evaluation.config import EvalConfig
    from embedfit.pipeline.config import IngestConfig

    for cfg in (IngestConfig(device="tpu"), AppConfig(device="tpu"), EvalConfig(device="tpu")):
        with pytest.raises(InputError, match="--device"):
            cfg.validate()
