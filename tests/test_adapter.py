"""Adapters: identity start, save/load, a synthetic problem with a known answer, dev selection, guards,
projection, and the CLI on a real small store."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import REPO

import embedfit
from embedfit.adapters.adapter import Adapter, AdapterConfig
from embedfit.adapters.config import TrainConfig
from embedfit.adapters.data import SplitData, TrainingData
from embedfit.adapters.io import adapter_sha, check_compatible, load_adapter, save_adapter
from embedfit.adapters.modules import KINDS, build_module
from embedfit.adapters.project import project_collection
from embedfit.adapters.train import dev_metrics, train_adapter
from embedfit.embed.base import l2_normalise
from embedfit.errors import InputError, MismatchError
from embedfit.store import chroma_store
from embedfit.store.store import Store


def make_config(kind="linear", sides="both", dim=384, base="all-MiniLM-L6-v2", name="t", **kw) -> AdapterConfig:
    return AdapterConfig(name=name, kind=kind, sides=sides, dim_in=dim, dim_out=dim, base_model=base,
                         data_fingerprint="fp", raw_collection="raw-x", **kw)


def perturbed(kind: str, dim: int = 384, seed: int = 0) -> torch.nn.Module:
    m = build_module(kind, dim, dim)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return m


@pytest.mark.parametrize("kind", KINDS)
def test_fresh_adapter_starts_at_identity(kind):
    x = l2_normalise(np.random.default_rng(0).standard_normal((50, 384)))
    a = Adapter(make_config(kind), build_module(kind, 384, 384))
    with torch.no_grad():  # the module itself changes nothing, bit for bit
        assert torch.equal(a.module(torch.from_numpy(x)), torch.from_numpy(x))
    assert np.array_equal(a.project_queries(x), l2_normalise(x))  # only the final re-normalisation
    np.testing.assert_allclose(a.project_queries(x) @ a.project_passages(x).T, x @ x.T, atol=1e-6)


def test_identity_adapter_reproduces_raw_scores_exactly():
    x = l2_normalise(np.random.default_rng(0).standard_normal((50, 384)))
    a = Adapter(make_config(identity=True), perturbed("linear"))  # weights are ignored when identity
    assert np.array_equal(a.project_queries(x) @ a.project_passages(x).T, x @ x.T)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sides", ["query", "both"])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, kind, sides):
    x = l2_normalise(np.random.default_rng(1).standard_normal((20, 384)))
    a = Adapter(make_config(kind, sides), perturbed(kind))
    save_adapter(a, tmp_path / "ad")
    b = load_adapter(tmp_path / "ad")
    assert b.config == a.config
    assert np.array_equal(a.project_queries(x), b.project_queries(x))
    assert np.array_equal(a.project_passages(x), b.project_passages(x))
    if sides == "query":
        assert np.array_equal(b.project_passages(x), x)  # passages keep their raw vectors
    else:
        assert not np.allclose(b.project_passages(x), x)


def test_interrupted_save_keeps_previous_adapter(tmp_path, monkeypatch):
    x = l2_normalise(np.random.default_rng(2).standard_normal((5, 384)))
    old = Adapter(make_config(), perturbed("linear", seed=1))
    save_adapter(old, tmp_path / "ad")
    import embedfit.adapters.io as io_mod

    def boom(*a, **k):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(io_mod, "save_file", boom)
    with pytest.raises(KeyboardInterrupt):
        save_adapter(Adapter(make_config(), perturbed("linear", seed=2)), tmp_path / "ad")
    assert np.array_equal(load_adapter(tmp_path / "ad").project_queries(x), old.project_queries(x))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ad"]  # no temp folder left behind


def synthetic(n_train=1500, n_dev=500, dim=8, seed=0):
    """Queries are passages seen through a known linear distortion A: q = norm(p A).
    The optimal query-only linear adapter is W = A^-1 (up to scale): it maps every query onto its
    passage. Passages are dense on the 8-d sphere, so raw retrieval is poor (MRR@10 ~0.2)."""
    rng = np.random.default_rng(seed)
    n = n_train + n_dev
    P = l2_normalise(rng.standard_normal((n, dim)))
    A = np.eye(dim) + 0.8 * rng.standard_normal((dim, dim)) / np.sqrt(dim)
    Q = l2_normalise(P @ A)
    ids = [f"p{i}" for i in range(n)]

    def split(rows):
        qids = [f"q{i}" for i in rows]
        return SplitData(query_ids=qids, Q=Q[rows].astype(np.float32), positives=[np.array([i]) for i in rows],
                         hard=[np.array([(i + 1) % n]) for i in rows], weak=[np.array([(i + 7) % n]) for i in rows],
                         qrels={f"q{i}": {f"p{i}": 1} for i in rows})

    data = TrainingData(model_id="synthetic", dim=dim, data_fingerprint="fp", raw_collection="raw-synthetic",
                        passage_ids=ids, P=P.astype(np.float32), train=split(np.arange(n_train)),
                        dev=split(np.arange(n_train, n)))
    return data, A


def map_error(A: np.ndarray, W: np.ndarray) -> float:
    """How far A·W is from a multiple of the identity (0 = W is exactly A^-1 up to scale)."""
    M = A @ W
    c = np.trace(M) / len(M)
    return float(np.linalg.norm(M / c - np.eye(len(M))) / np.sqrt(len(M)))


def test_training_recovers_a_known_linear_map():
    data, A = synthetic()
    # selection="last": dev MRR saturates at 1.0 after a few epochs while the map keeps converging;
    # the oracle is about the map, so take the final epoch
    cfg = TrainConfig(model="synthetic", kind="linear", sides="query", loss="infonce", epochs=30, lr=0.02,
                      weight_decay=0.0, batch_size=128, n_hard=1, temperature=0.02, selection="last")
    res = train_adapter(None, cfg, data)
    W = (res.adapter.module.base + res.adapter.module.delta).detach().numpy()
    before, after = map_error(A, np.eye(len(A))), map_error(A, W)
    raw, learned = res.identity_dev["MRR@10"], res.curves[res.best_epoch]["MRR@10"]
    assert before > 0.5 and after < 0.1, (before, after)
    assert raw < 0.4 and learned > 0.98, (raw, learned)
    # held-out queries land on their own passage: cosine close to 1
    q = res.adapter.project_queries(data.dev.Q)
    p = data.P[[int(x[0]) for x in data.dev.positives]]
    assert np.mean(np.sum(q * p, axis=1)) > 0.98


def test_selection_never_returns_worse_than_identity_on_dev():
    data, _ = synthetic()
    # train on corrupted labels (every query paired with a wrong passage): training can only hurt dev
    bad_train = dataclasses.replace(data.train, positives=[np.array([(int(p[0]) + 3) % len(data.passage_ids)])
                                                           for p in data.train.positives])
    data_bad = dataclasses.replace(data, train=bad_train)
    data_bad.dev = dataclasses.replace(data.dev, Q=l2_normalise(data.P[1500:2000] + 0.01))  # raw already good
    cfg = TrainConfig(model="synthetic", kind="linear", sides="query", loss="infonce", epochs=5, lr=0.05,
                      n_hard=1, patience=5)
    res = train_adapter(None, cfg, data_bad)
    assert res.adapter.config.identity
    assert dev_metrics(None, data_bad, "query")["MRR@10"] == res.adapter.config.dev_metrics["selected"]["MRR@10"]
    x = data_bad.dev.Q
    assert np.array_equal(res.adapter.project_queries(x), x)
    # without the identity candidate, the best trained epoch is returned even though it is worse
    res2 = train_adapter(None, dataclasses.replace(cfg, keep_identity_candidate=False), data_bad)
    assert not res2.adapter.config.identity
    assert res2.curves[res2.best_epoch]["MRR@10"] < res.identity_dev["MRR@10"]


def test_mismatched_base_model_or_dimension_is_refused():
    a = Adapter(make_config(base="all-MiniLM-L6-v2"), build_module("linear", 384, 384))
    with pytest.raises(MismatchError, match="paraphrase-MiniLM-L3-v2"):
        check_compatible(a, "paraphrase-MiniLM-L3-v2", 384)
    with pytest.raises(MismatchError, match="1536"):
        check_compatible(a, "all-MiniLM-L6-v2", 1536)
    check_compatible(a, "all-MiniLM-L6-v2", 384, "other-fp")  # other data: only a warning


def test_config_validation_messages():
    with pytest.raises(InputError, match="both"):
        TrainConfig(loss="mse", sides="query").validate()
    with pytest.raises(InputError, match="kind"):
        TrainConfig(kind="transformer").validate()


def test_train_on_real_store_is_never_worse_on_dev_and_projection_is_idempotent(small_store, tmp_path):
    cfg, s = small_store
    store = Store(cfg.store)
    res = train_adapter(store, TrainConfig(store=cfg.store, model=s["model"], sides="both", epochs=3))
    sel = res.adapter.config.dev_metrics["selected"]
    assert sel["MRR@10"] >= res.identity_dev["MRR@10"]
    assert res.seconds < 120
    save_adapter(res.adapter, tmp_path / "ad")
    # projection into a copy of the store (the session store is shared and read-only)
    import shutil

    shutil.copytree(cfg.store, tmp_path / "store")
    chroma_store.release_locks()
    wstore = Store(tmp_path / "store", write=True)
    ad = load_adapter(tmp_path / "ad")
    first = project_collection(wstore, ad, adapter_sha(tmp_path / "ad"))
    assert first["projected"] == s["passages"] == first["count"]
    before = chroma_store.fetch_all(wstore.collection(ad.collection_name), with_documents=True)
    second = project_collection(wstore, ad, adapter_sha(tmp_path / "ad"))
    assert second["projected"] == 0 and second["unchanged"] == s["passages"]
    after = chroma_store.fetch_all(wstore.collection(ad.collection_name), with_documents=True)
    assert after.ids == before.ids and np.array_equal(after.embeddings, before.embeddings)
    raw = chroma_store.fetch_all(wstore.raw_collection(s["model"]))
    np.testing.assert_allclose(after.embeddings, ad.project_passages(raw.embeddings), atol=1e-6)
    assert wstore.collection(ad.collection_name).configuration["hnsw"]["space"] == "cosine"
    chroma_store.release_locks()


def test_cli_train_selects_and_says_what_decided(small_store, tmp_path):
    """The default `adapter train`: a selection table, the queries that decided, and a folder recording both."""
    chroma_store.release_locks()  # the session's store fixture was built in this process
    cfg, s = small_store
    out = tmp_path / "adapter"
    r = subprocess.run([sys.executable, "-m", "embedfit", "train", "--store", str(cfg.store), "--model", s["model"],
                        "--epochs", "2", "--max-epochs", "2", "--temperatures", "0.05", "--candidate-sets", "mined",
                        "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    conf = json.loads((out / "config.json").read_text())
    sel = conf["selection"]
    n_labelled = sum(1 for v in Store(cfg.store).load_splits().values() if v in ("train", "dev"))
    assert sel["folds"] == 5 and sel["decided_by"] == n_labelled  # small data: 5-fold over train + dev
    assert f"5-fold cross-validation over {n_labelled} labelled queries" in r.stdout
    methods = [row["method"] for row in sel["table"]]
    assert methods[0] == "identity" and {"memory", "query", "query+memory"} <= set(methods)
    best = max(row["mean"] for row in sel["table"])
    chosen = next(row for row in sel["table"] if row["method"] == sel["chosen"]["method"])
    assert chosen["mean"] == best and chosen["gain"] >= 0  # never worse than identity on what decided
    assert conf["training"]["fit_splits"] == ["train", "dev"] and conf["training"]["split"]["by"] == "random"
    assert (conf["memory"] is not None) == ("memory" in sel["chosen"]["method"])
    assert ((out / "memory.json").exists()) == (conf["memory"] is not None)


def test_cli_train_refuses_fixed_settings_without_fixed(small_store, tmp_path):
    chroma_store.release_locks()  # the session's store fixture was built in this process
    cfg, s = small_store
    r = subprocess.run([sys.executable, "-m", "embedfit", "train", "--store", str(cfg.store), "--model", s["model"],
                        "--sides", "both", "--out", str(tmp_path / "a")], cwd=REPO, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0 and "--sides" in r.stderr and "--fixed" in r.stderr and not (tmp_path / "a").exists()


def test_cli_train_fixed_writes_a_self_describing_folder(small_store, tmp_path):
    chroma_store.release_locks()  # the session's store fixture was built in this process
    cfg, s = small_store
    out = tmp_path / "adapter"
    r = subprocess.run([sys.executable, "-m", "embedfit", "train", "--fixed", "--store", str(cfg.store), "--model",
                        s["model"], "--epochs", "2", "--sides", "query", "--out", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "dev split" in r.stdout and "MRR@10" in r.stdout
    assert {p.name for p in out.iterdir()} == {"config.json", "model.safetensors", "curves.json", "curves.png"}
    conf = json.loads((out / "config.json").read_text())
    assert conf["base_model"] == s["model"] and conf["dim_in"] == 384 and conf["sides"] == "query"
    assert conf["data_fingerprint"] == s["data_fingerprint"] and conf["format_version"] == 2
    assert conf["format"] == "embedfit.adapter" and conf["embedfit_version"] == embedfit.__version__
    curves = json.loads((out / "curves.json").read_text())
    assert curves[0]["epoch"] == 0 and len(curves) == 3
    r = subprocess.run([sys.executable, "-m", "embedfit", "project", "--store", str(cfg.store), "--adapter", str(out)],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "queries only" in r.stderr


def test_grid_trains_every_setting_and_ranks_them_on_dev(small_store):
    from embedfit.adapters.grid import grid_table, run_grid

    cfg, s = small_store
    runs = run_grid(Store(cfg.store), TrainConfig(store=cfg.store, model=s["model"], epochs=1),
                    {"lr": [1e-4, 1e-3], "sides": ["query", "both"]})
    assert len(runs) == 4
    scores = [r.curves[r.best_epoch]["MRR@10"] for _, r in runs]
    assert scores == sorted(scores, reverse=True)
    table = grid_table(runs, "MRR@10")
    assert table.count("\n") == 5 and "| lr | sides |" in table
