"""The training objectives on toys whose values are worked out by hand."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from embedfit.adapters.config import TrainConfig
from embedfit.adapters.losses import cosine_mse, info_nce, triplet
from embedfit.errors import InputError


def test_info_nce_matches_hand_computed_softmax_and_masking():
    q = torch.tensor([[1.0, 0.0]])
    cand = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # scores 1, 0, -1
    t = 0.5  # logits 2, 0, -2
    expected = -math.log(math.exp(2) / (math.exp(2) + math.exp(0) + math.exp(-2)))
    assert float(info_nce(q, cand, torch.tensor([0]), None, t)) == pytest.approx(expected, rel=1e-5)
    # masking the second candidate (a known positive of the query) removes it from the denominator
    mask = torch.tensor([[False, True, False]])
    expected_masked = -math.log(math.exp(2) / (math.exp(2) + math.exp(-2)))
    assert float(info_nce(q, cand, torch.tensor([0]), mask, t)) == pytest.approx(expected_masked, rel=1e-5)


def test_triplet_hinge_on_cosine():
    q = torch.tensor([[1.0, 0.0]])
    pos = torch.tensor([[0.6, 0.8]])  # cos 0.6
    neg = torch.tensor([[[0.8, 0.6], [0.0, 1.0]]])  # cos 0.8 and 0.0
    # max(0, 0.1 - 0.6 + 0.8) = 0.3 ; max(0, 0.1 - 0.6 + 0.0) = 0  -> mean 0.15
    assert float(triplet(q, pos, neg, margin=0.1)) == pytest.approx(0.15, rel=1e-6)


def test_cosine_mse_against_plus_minus_one():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[0.6, 0.8], [0.6, 0.8]])  # cos 0.6 for both pairs
    # labels +1, -1: ((0.6-1)^2 + (0.6+1)^2) / 2 = (0.16 + 2.56) / 2 = 1.36
    assert float(cosine_mse(a, b, torch.tensor([1.0, -1.0]))) == pytest.approx(1.36, rel=1e-6)


def test_smaller_output_needs_both_sides():
    with pytest.raises(InputError, match="--sides both"):
        TrainConfig(dim_out=128, sides="query").validate()
    TrainConfig(dim_out=128, sides="both").validate()


def test_rectangular_linear_adapter_starts_at_pca_and_trains(small_store, tmp_path):
    from embedfit.adapters.io import load_adapter, save_adapter
    from embedfit.adapters.train import train_adapter
    from embedfit.store.store import Store

    cfg, s = small_store
    res = train_adapter(Store(cfg.store), TrainConfig(store=cfg.store, model=s["model"], sides="both", dim_out=64,
                                                       epochs=2))
    assert res.adapter.config.dim_out == 64 and not res.adapter.config.identity
    save_adapter(res.adapter, tmp_path / "ad")
    x = np.random.default_rng(0).standard_normal((3, 384)).astype(np.float32)
    out = load_adapter(tmp_path / "ad").project_passages(x)
    assert out.shape == (3, 64)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # the start (kept as the module's fixed base) is the PCA basis: orthonormal columns that keep more
    # of the corpus's energy than any other 64-d projection, e.g. a random orthonormal one
    from embedfit.store import chroma_store

    W0 = res.adapter.module.base.numpy()
    np.testing.assert_allclose(W0.T @ W0, np.eye(64), atol=1e-4)
    P = chroma_store.fetch_all(Store(cfg.store).raw_collection(s["model"])).embeddings
    Rq, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((384, 64)))
    assert np.linalg.norm(P @ W0) ** 2 > 1.5 * np.linalg.norm(P @ Rq) ** 2
