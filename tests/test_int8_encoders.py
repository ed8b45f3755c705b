"""The int8 fast CPU path (`embedfit.embed.int8`): real NQ passages through the quantized graphs, the build cache
(reuse, damage, interruption), the fp32 ONNX export of all-MiniLM-L6-v2, and the refusal to mix encoders.

The graphs are built once per session into a temporary model cache (EMBEDFIT_MODEL_CACHE), never the user's.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from embedfit.atomic import sha256_file
from embedfit.embed import EmbeddingCache, embed_cached, load_embedder
from embedfit.embed import int8 as int8_mod
from embedfit.embed.build_cache import cached_build, check_built, key_digest
from embedfit.embed.int8 import INT8_OF, Int8Recipe, int8_model_path
from embedfit.errors import InputError, MismatchError

L3_INT8, L6_INT8 = "paraphrase-MiniLM-L3-v2-int8", "all-MiniLM-L6-v2-int8"

# Cosine of each int8 passage vector to the fp32 one. Measured with the chosen recipe on this machine
# (onnxruntime 1.32, AVX2) over all 8551 NQ passages (scripts/bench_encoders.py): L3 mean 0.9954, min 0.9866;
# L6 mean 0.9935, min 0.9749 (its fp32 reference is torch, not ONNX; 256-token passages). onnxruntime's default recipe (Gather and attention quantized too,
# one scale per matrix) gave mean 0.954, min 0.920 on L3, and without reduce_range 0.958 / 0.917: the floors sit
# between, so they catch a recipe or kernel regression of that size but not float noise.
MEAN_COSINE_FLOOR = 0.985
MIN_COSINE_FLOOR = 0.96


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """A session-wide temporary EMBEDFIT_MODEL_CACHE, so tests build their own graphs and never touch ~/.cache."""
    folder = tmp_path_factory.mktemp("model-cache")
    before = os.environ.get("EMBEDFIT_MODEL_CACHE")
    os.environ["EMBEDFIT_MODEL_CACHE"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("EMBEDFIT_MODEL_CACHE", None)
    else:
        os.environ["EMBEDFIT_MODEL_CACHE"] = before


@pytest.fixture(scope="module")
def nq_passages(nq_dir):
    """200 real NQ passages (title + text, as ingest embeds them), spread over the corpus."""
    rows = [json.loads(line) for line in open(nq_dir / "corpus.jsonl", encoding="utf-8")]
    picked = rows[:: max(1, len(rows) // 200)][:200]
    return [f"{r['title']} {r['text']}".strip() for r in picked]


def _check_against_fp32(int8_name: str, passages: list[str]) -> None:
    e8 = load_embedder(int8_name)
    v8 = e8.embed(passages, "passage")
    assert v8.shape == (len(passages), 384) and v8.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v8, axis=1), 1.0, atol=1e-5)
    v32 = load_embedder(INT8_OF[int8_name], "cpu").embed(passages, "passage")
    cos = (v8 * v32).sum(axis=1)
    assert cos.mean() >= MEAN_COSINE_FLOOR, f"mean cosine to fp32 {cos.mean():.4f}"
    assert cos.min() >= MIN_COSINE_FLOOR, f"min cosine to fp32 {cos.min():.4f}"
    # the int8 vectors still rank: each passage's nearest fp32 neighbour is itself for nearly all
    assert (np.argmax(v8 @ v32.T, axis=1) == np.arange(len(passages))).mean() >= 0.99


def test_l3_int8_loads_offline_and_stays_close_to_fp32(model_cache, nq_passages):
    _check_against_fp32(L3_INT8, nq_passages)
    assert len(list(model_cache.glob("paraphrase-MiniLM-L3-v2-int8-*.onnx"))) == 1


@pytest.mark.slow
def test_l6_int8_loads_offline_and_stays_close_to_fp32(model_cache, nq_passages):
    _check_against_fp32(L6_INT8, nq_passages)


@pytest.mark.slow
def test_l6_fp32_export_matches_sentence_transformers(model_cache, nq_passages, nq_dir):
    from embedfit.embed.onnx_export import check_export, export_l6_onnx

    queries = [json.loads(line)["text"] for line in open(nq_dir / "queries.jsonl", encoding="utf-8")][:50]
    # one padded batch of everything: texts from 1 to >256 tokens side by side
    err = check_export(export_l6_onnx(), texts=nq_passages + queries, tolerance=1e-5)
    assert err <= 1e-5


def test_second_load_reuses_the_built_file(model_cache, monkeypatch):
    path = int8_model_path(L3_INT8)
    stamp = path.stat().st_mtime_ns

    def no_quantize(*_a, **_k):
        raise AssertionError("quantized again although a checked file was cached")

    monkeypatch.setattr(int8_mod, "quantize", no_quantize)
    assert int8_model_path(L3_INT8) == path and path.stat().st_mtime_ns == stamp
    e = load_embedder(L3_INT8)
    assert e.onnx_path == path


def test_truncated_cached_graph_is_detected_and_rebuilt(model_cache, tmp_path, nq_passages):
    """A real graph cut in half (a crash mid-copy, a full disk) is rebuilt, and the rebuilt one embeds as before."""
    cache = tmp_path / "models"
    shutil.copytree(model_cache, cache)
    path = int8_model_path(L3_INT8, cache_dir=cache)
    good_sha = sha256_file(path)
    from embedfit.embed.registry import load_int8_embedder

    want = load_int8_embedder(L3_INT8, cache_dir=cache).embed(nq_passages[:20], "passage")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert check_built(path, json.loads(path.with_suffix(".json").read_text())["key"]) is not None
    again = int8_model_path(L3_INT8, cache_dir=cache)
    assert again == path and check_built(path, json.loads(path.with_suffix(".json").read_text())["key"]) is None
    assert sha256_file(path) == good_sha  # quantization is deterministic: the same file again
    np.testing.assert_array_equal(load_int8_embedder(L3_INT8, cache_dir=cache).embed(nq_passages[:20], "passage"), want)


def _damage(path: Path, how: str) -> None:
    side = path.with_suffix(".json")
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:-7])
    elif how == "garbled":  # same size, one byte changed: only the checksum can tell
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif how == "no-sidecar":  # killed between publishing the file and its sidecar
        side.unlink()
    elif how == "garbled-sidecar":
        side.write_text("{not json")
    elif how == "other-key":
        meta = json.loads(side.read_text())
        meta["key"]["recipe"] = "something else"
        side.write_text(json.dumps(meta))
    elif how == "file-missing":
        path.unlink()


@pytest.mark.parametrize("how", ["truncated", "garbled", "no-sidecar", "garbled-sidecar", "other-key", "file-missing"])
def test_cached_build_never_trusts_a_damaged_entry(tmp_path, how):
    calls = []
    payload = bytes(range(256)) * 64

    def build(out: Path) -> None:
        calls.append(out)
        out.write_bytes(payload)

    key = {"recipe": "r1", "source_sha256": "abc"}
    path = cached_build("m", key, build, tmp_path)
    assert path.read_bytes() == payload and len(calls) == 1
    assert cached_build("m", key, build, tmp_path) == path and len(calls) == 1  # intact: reused
    _damage(path, how)
    assert cached_build("m", key, build, tmp_path) == path and len(calls) == 2  # damaged: rebuilt
    assert path.read_bytes() == payload and check_built(path, key) is None
    assert not list(tmp_path.glob(".*.tmp")), "temporary files left behind"


def test_interrupted_build_leaves_nothing_that_is_later_trusted(tmp_path):
    def dies(out: Path) -> None:
        out.write_bytes(b"half a model")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cached_build("m", {"k": 1}, dies, tmp_path)
    assert not list(tmp_path.glob("m-*.onnx")) and not list(tmp_path.glob(".*.tmp"))
    path = cached_build("m", {"k": 1}, lambda out: out.write_bytes(b"whole"), tmp_path)
    assert path.read_bytes() == b"whole"


def test_another_recipe_is_another_cache_entry(model_cache):
    """The cache key holds the recipe: a changed recipe builds a new file and never reuses the old one."""
    a = int8_model_path(L3_INT8)
    key = json.loads(a.with_suffix(".json").read_text())["key"]
    assert key["recipe"] == Int8Recipe().to_json() and key["source_sha256"] and key["onnxruntime"]
    other = Int8Recipe(per_channel=False)
    assert other.to_json() != key["recipe"]
    assert key_digest({**key, "recipe": other.to_json()}) not in a.name


# -- mixing --------------------------------------------------------------------------------------------------

def test_int8_and_fp32_vectors_never_share_a_cache_entry(model_cache, tmp_path, nq_passages):
    """Same text, fp32 and int8: separate cache folders and keys; the int8 key also names the exact graph."""
    texts = nq_passages[:4]
    e32, e8 = load_embedder("paraphrase-MiniLM-L3-v2"), load_embedder(L3_INT8)
    assert e8.cache_id != e32.cache_id and e8.cache_id.startswith(L3_INT8 + "@")
    v32, _ = embed_cached(e32, texts, "passage", EmbeddingCache(tmp_path, e32.model_id, e32.dim))
    v8, stats = embed_cached(e8, texts, "passage", EmbeddingCache(tmp_path, e8.model_id, e8.dim))
    assert stats["embedded"] == 4  # nothing served from the fp32 entries
    assert not np.array_equal(v8, v32)
    with pytest.raises(ValueError):
        embed_cached(e8, texts, "passage", EmbeddingCache(tmp_path, e32.model_id, e32.dim))


def test_adapter_trained_on_fp32_vectors_is_refused_for_int8_queries():
    import torch

    from embedfit.adapters.adapter import Adapter, AdapterConfig
    from embedfit.adapters.io import check_compatible

    cfg = AdapterConfig(name="a", kind="linear", sides="query", dim_in=384, dim_out=384, base_model="all-MiniLM-L6-v2",
                        data_fingerprint="f", raw_collection="raw-all-minilm-l6-v2", identity=True)
    ad = Adapter(cfg, torch.nn.Identity())
    check_compatible(ad, "all-MiniLM-L6-v2", 384)
    with pytest.raises(MismatchError, match="all-MiniLM-L6-v2-int8"):
        check_compatible(ad, "all-MiniLM-L6-v2-int8", 384)


def _store_with_collection(root: Path, manifest_model: str, collection_model: str, dim: int = 384):
    from embedfit.store import chroma_store
    from embedfit.store.store import Store

    store = Store(root, write=True)
    col = chroma_store.ensure_collection(store.client, "raw-x", {"kind": "raw", "model_id": collection_model, "dim": dim},
                                         check_keys=("kind", "model_id", "dim"))
    col.upsert(ids=["p1"], embeddings=[[1.0] + [0.0] * (dim - 1)])
    store.write_manifest({"format_version": 2, "models": {manifest_model: {"collection": "raw-x", "dim": 384}}})
    return store


def test_store_refuses_a_collection_made_by_another_encoder(tmp_path):
    """The manifest entry of the int8 model points at a collection of fp32 vectors (a hand-edited or mixed store):
    the store refuses it instead of searching fp32 passages with int8 queries."""
    store = _store_with_collection(tmp_path / "bad", "all-MiniLM-L6-v2-int8", "all-MiniLM-L6-v2")
    with pytest.raises(MismatchError, match="must not be mixed"):
        store.raw_collection("all-MiniLM-L6-v2-int8")
    good = _store_with_collection(tmp_path / "good", "all-MiniLM-L6-v2-int8", "all-MiniLM-L6-v2-int8")
    assert good.raw_collection("all-MiniLM-L6-v2-int8").count() == 1
    odd_dim = _store_with_collection(tmp_path / "dim", "all-MiniLM-L6-v2-int8", "all-MiniLM-L6-v2-int8", dim=8)
    with pytest.raises(MismatchError, match="8-d"):
        odd_dim.raw_collection("all-MiniLM-L6-v2-int8")


def test_int8_models_are_listed_and_refuse_gpu_devices(model_cache):
    from embedfit.embed.registry import KNOWN_MODELS, known_models_text

    for name in INT8_OF:
        assert KNOWN_MODELS[name][1] == 384 and name in known_models_text()
        with pytest.raises(InputError, match="onnxruntime"):
            load_embedder(name, device="cuda")


def test_encoder_bench_on_a_slice_agrees_with_a_hand_computed_mrr(model_cache, nq_dir, tmp_path):
    """scripts/bench_encoders.bench_model on 60 test queries and their 600-passage neighbourhood: the fp32 and int8
    MRR@10 it reports equal MRR@10 computed here from the encoders' own vectors, and the delta is their difference."""
    from scripts.bench_encoders import bench_model, markdown_rows, test_split

    corpus, queries, qrels = test_split(nq_dir, None)
    qids = sorted(queries)[:60]
    pids = sorted({p for q in qids for p in qrels[q]} | set(sorted(corpus)[:600]))
    corpus = {p: corpus[p] for p in pids}
    queries, qrels = {q: queries[q] for q in qids}, {q: qrels[q] for q in qids}
    r = bench_model("paraphrase-MiniLM-L3-v2", corpus, queries, qrels, cache_root=tmp_path / "cache", n_speed=32,
                    passes=1, n_resamples=500)

    def mrr(name: str) -> float:
        # embedded in ingest's batches (embed_cached's plan, no cache): int8 activation scales are computed per
        # batch (dynamic quantization), so other batches give slightly other int8 vectors
        e = load_embedder(name)
        p, _ = embed_cached(e, [corpus[i].embedding_text() for i in pids], "passage", None, 32)
        q, _ = embed_cached(e, [queries[i] for i in qids], "query", None, 32)
        total = 0.0
        for row, qid in zip(q @ p.T, qids):
            order = sorted(range(len(pids)), key=lambda j: (-row[j], pids[j]))[:10]
            ranks = [k for k, j in enumerate(order, 1) if qrels[qid].get(pids[j], 0) > 0]
            total += 1 / ranks[0] if ranks else 0.0
        return 100 * total / len(qids)

    want32, want8 = mrr("paraphrase-MiniLM-L3-v2"), mrr(L3_INT8)
    assert r["retrieval"]["fp32"]["MRR@10"] == pytest.approx(want32, abs=0.01)
    assert r["retrieval"]["int8"]["MRR@10"] == pytest.approx(want8, abs=0.01)
    d = r["retrieval"]["delta"]["MRR@10"]
    assert d["delta_points"] == pytest.approx(want8 - want32, abs=0.01) and d["n_queries"] == 60
    assert d["ci95_points"][0] <= d["delta_points"] <= d["ci95_points"][1]
    s = r["speed"]
    assert s["n_passages"] == 32 and s["int8"]["passages_per_s"] > 0 and s["fp32"]["passages_per_s"] > 0
    rows = markdown_rows({"data": str(nq_dir), "models": {"paraphrase-MiniLM-L3-v2": r}})
    assert len(rows) == 3 and rows[0].startswith(f"| {L3_INT8} passages/s vs fp32")


def test_another_build_of_the_same_int8_model_is_refused(model_cache, tmp_path):
    """Ingest records the encoder's exact build (`cache_id`: the int8 graph's digest) in the manifest; a retriever
    whose embedder is another build under the same name (another recipe or onnxruntime) is refused."""
    from embedfit.store.store import check_encoder_build

    built = load_embedder(L3_INT8)
    from embedfit.embed.registry import load_int8_embedder

    other = load_int8_embedder(L3_INT8, Int8Recipe(per_channel=False), tmp_path / "m")
    assert built.cache_id != other.cache_id and built.cache_id.startswith(L3_INT8 + "@")
    info = {"encoder": built.cache_id, "dim": 384}
    check_encoder_build(info, built)  # the build that made the vectors: fine
    with pytest.raises(MismatchError, match="encoder build"):
        check_encoder_build(info, other)
    check_encoder_build({"dim": 384}, other)  # an entry from before builds were recorded: let through
    fp32 = load_embedder("paraphrase-MiniLM-L3-v2")
    check_encoder_build({"encoder": "paraphrase-MiniLM-L3-v2"}, fp32)  # fp32 models: the build is the name


def test_two_processes_building_one_graph_both_succeed_and_it_is_built_once(tmp_path):
    """Issue 22, case 19: two ingests with an int8 model on a fresh cache: the second deleted the first's build
    folder as a crashed write's, and the first died with FileNotFoundError. Now the second waits and reuses."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from embedfit.embed.build_cache import cached_build
        def build(out: Path) -> None:
            out.write_bytes(b"part one ")
            time.sleep(2)                     # the other process arrives while this build is under way
            with out.open("ab") as f:
                f.write(b"part two")
            with open({str(tmp_path / 'builds.log')!r}, "a") as log:
                log.write("built\\n")
        print(cached_build("graph", {{"v": 1}}, build, Path({str(tmp_path / 'cache')!r})))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    paths = {o.strip() for o, _ in outs}
    assert len(paths) == 1 and open(paths.pop(), "rb").read() == b"part one part two"
    assert (tmp_path / "builds.log").read_text() == "built\n"


@pytest.mark.parametrize("where", ["a file", "/proc"])
def test_a_model_cache_that_is_no_writable_folder_is_one_line(tmp_path, where):
    from embedfit.embed.build_cache import cached_build
    from embedfit.errors import InputError

    cache = tmp_path / "file" if where == "a file" else Path("/proc/embedfit-cache")
    if where == "a file":
        cache.write_text("not a folder")
    with pytest.raises(InputError, match="EMBEDFIT_MODEL_CACHE"):
        cached_build("graph", {"v": 1}, lambda out: out.write_bytes(b"x"), cache)
