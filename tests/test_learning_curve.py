"""The learning curve on a synthetic problem whose answer is known: users ask about the same documents again,
so the more labelled queries, the more test queries are about documents training saw and the larger the
query memory's gain. The points must rise with the number of labels; the seen share must too."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from test_memory_select import repeated_documents

from embedfit.adapters.select import subset_split
from embedfit.evaluation.cli import main as eval_main
from embedfit.evaluation.learning_curve import CurveConfig, curve_points


def test_gain_rises_with_labels():
    data = repeated_documents(n_passages=300, n_train=800, n_dev=250, seed=5)
    pool = dataclasses.replace(data, train=subset_split(data.train, np.arange(640)),
                               dev=subset_split(data.train, np.arange(640, 800)))
    cfg = CurveConfig(sizes=(25, 100, 400), seeds=2, methods=("memory",), folds=3, metric="nDCG@10",
                      bootstrap_resamples=200)
    points = curve_points(pool, data.dev, cfg)
    assert [p["labels"] for p in points] == [25, 100, 400, 800] and [p["seeds"] for p in points] == [2, 2, 2, 1]
    gains = [p["gain"]["mean"] for p in points]
    shares = [p["seen_share"] for p in points]
    assert all(b >= a - 0.005 for a, b in zip(gains, gains[1:])), gains
    assert gains[-1] > gains[0] + 0.1 and gains[-1] > 0.2, gains
    assert all(b > a for a, b in zip(shares, shares[1:])), shares
    # every point's interval holds its mean, and the seen/unseen parts add up to all the test queries
    for p in points:
        lo, hi = p["gain"]["ci95"]
        assert lo <= p["gain"]["mean"] <= hi
        assert p["gain"]["n"] == 250 and (p["seen"]["n"] if p["seen"] else 0) + (p["unseen"]["n"] if p["unseen"] else 0) == 250 * p["seeds"]


def test_curve_cli_refuses_bad_settings(capsys):
    assert eval_main(["learning-curve", "--sizes", "2", "--store", "/nonexistent"]) != 0
    assert "at least 5" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        eval_main(["learning-curve", "--metric", "nope"])
