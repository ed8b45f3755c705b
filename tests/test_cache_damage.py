"""The embedding cache redoes damaged chunks (and says which and why) but lets bugs propagate.

Damage is what a crash, a bad disk or a foreign writer leaves: the chunk is deleted and its batch
embedded again, bit-for-bit as a fresh cache would. Any other exception is a bug in our code or a
library and must not be mistaken for damage (it would silently empty the cache on every run).
"""
from __future__ import annotations

import hashlib
import io
import json
import logging

import numpy as np
import pytest

from embedfit.embed import EmbeddingCache, embed_cached, load_embedder
from embedfit.embed import cache as cache_mod
from embedfit.embed.base import Embedder


class HashEmbedder(Embedder):
    """Deterministic text -> vector, so damage cases run without a model."""

    model_id, dim, default_batch_size = "hash-test", 16, 4

    def _embed_batch(self, texts):
        return np.stack([np.random.default_rng(int(hashlib.sha1(t.encode()).hexdigest()[:8], 16)).standard_normal(self.dim)
                         for t in texts])


TEXTS = [f"passage number {i} " + "word " * i for i in range(16)]  # 16 texts -> 4 chunks of 4


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _flip_byte(raw: bytes) -> bytes:
    b = bytearray(raw)
    b[len(b) // 2] ^= 0xFF
    return bytes(b)


def _int_keys(raw: bytes) -> bytes:
    """A loadable chunk whose keys are numbers: used to reach the checksum as a TypeError."""
    with np.load(io.BytesIO(raw)) as z:
        meta, vectors = z["meta"], z["vectors"]
    return _npz(keys=np.arange(len(vectors)), vectors=vectors, meta=meta)


def _meta_not_object(raw: bytes) -> bytes:
    with np.load(io.BytesIO(raw)) as z:
        keys, vectors = z["keys"], z["vectors"]
    return _npz(keys=keys, vectors=vectors, meta=np.array(json.dumps([1, 2])))


DAMAGE = {
    "empty": lambda raw: b"",
    "truncated_100_bytes": lambda raw: raw[:100],
    "truncated_half": lambda raw: raw[: len(raw) // 2],
    "not_a_zip": lambda raw: b"hello, I am not an npz file",
    "flipped_byte": _flip_byte,
    "member_renamed": lambda raw: raw.replace(b"meta.npy", b"mota.npy"),
    "keys_not_strings": _int_keys,
    "meta_not_an_object": _meta_not_object,
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_chunk_is_logged_deleted_and_redone(tmp_path, caplog, damage):
    e = HashEmbedder()
    first, _ = embed_cached(e, TEXTS, "passage", EmbeddingCache(tmp_path, e.model_id, e.dim))
    chunk = sorted(tmp_path.rglob("*.npz"))[1]
    chunk.write_bytes(DAMAGE[damage](chunk.read_bytes()))
    with caplog.at_level(logging.WARNING, logger="embedfit.embed.cache"):
        cache = EmbeddingCache(tmp_path, e.model_id, e.dim)
    assert cache.rejected_files == 1 and len(cache) == 12
    assert not chunk.exists()
    assert any(chunk.name in r.getMessage() and "damaged chunk" in r.getMessage() for r in caplog.records)
    redone, st = embed_cached(e, TEXTS, "passage", cache)
    assert st["embedded"] == 4 and chunk.exists()
    assert np.array_equal(redone, first)


def test_truncated_chunk_is_redone_exactly_as_a_fresh_cache_would(tmp_path, nq_dir):
    e = load_embedder("paraphrase-MiniLM-L3-v2")
    pairs = [json.loads(line) for line in open(nq_dir / "pairs.jsonl", encoding="utf-8")][:12]
    texts = [f"{p['title']} {p['passage']}" for p in pairs]
    embed_cached(e, texts, "passage", EmbeddingCache(tmp_path / "a", e.model_id, e.dim), batch_size=4)
    chunk = sorted((tmp_path / "a").rglob("*.npz"))[0]
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])  # a crash in a non-atomic writer
    cache = EmbeddingCache(tmp_path / "a", e.model_id, e.dim)
    assert cache.rejected_files == 1
    redone, st = embed_cached(e, texts, "passage", cache, batch_size=4)
    fresh, _ = embed_cached(e, texts, "passage", EmbeddingCache(tmp_path / "b", e.model_id, e.dim), batch_size=4)
    assert st["embedded"] == 4
    assert np.array_equal(redone, fresh)  # the oracle: same batches, same bits as a cache never damaged


@pytest.mark.parametrize("target", ["checksum", "np.load"])
def test_bug_while_reading_propagates_and_keeps_the_chunks(tmp_path, monkeypatch, target):
    e = HashEmbedder()
    embed_cached(e, TEXTS, "passage", EmbeddingCache(tmp_path, e.model_id, e.dim))
    before = sorted(tmp_path.rglob("*.npz"))

    def bug(*args, **kwargs):
        raise TypeError("a bug, not damage")

    if target == "checksum":
        monkeypatch.setattr(cache_mod, "_checksum", bug)
    else:
        monkeypatch.setattr(cache_mod.np, "load", bug)
    with pytest.raises(TypeError, match="a bug"):
        EmbeddingCache(tmp_path, e.model_id, e.dim)
    monkeypatch.undo()
    assert sorted(tmp_path.rglob("*.npz")) == before
    assert len(EmbeddingCache(tmp_path, e.model_id, e.dim)) == 16
