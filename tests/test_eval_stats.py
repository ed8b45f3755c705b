"""Bootstrap intervals and the paired permutation test against known answers and brute force."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from embedfit.metrics.stats import bootstrap_ci, paired_p_value

# --- bootstrap_ci ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["normal", "bernoulli"])
def test_ci_of_a_large_sample_is_the_normal_interval(kind):
    # For large n the mean is close to normal: the 95% CI is mean +- 1.96 sd / sqrt(n).
    rng = np.random.default_rng(1)
    x = rng.normal(0.4, 0.2, 4000) if kind == "normal" else (rng.random(4000) < 0.3).astype(float)
    half = 1.96 * x.std(ddof=1) / np.sqrt(x.size)
    lo, hi = bootstrap_ci(x, n_resamples=5000, seed=0)
    assert lo == pytest.approx(x.mean() - half, abs=0.1 * half)
    assert hi == pytest.approx(x.mean() + half, abs=0.1 * half)


def test_ci_coverage_is_close_to_nominal():
    # 400 samples of n=100 from a skewed distribution with known mean 1: ~95% of the intervals
    # should hold it (bootstrap intervals run a little short at small n; 4000 trials gave 0.937).
    # With 400 trials the binomial SD of the coverage is ~1.1%; the bounds allow ~3 SD.
    rng = np.random.default_rng(0)
    trials = 400
    hits = 0
    for trial in range(trials):
        x = rng.exponential(1.0, 100)
        lo, hi = bootstrap_ci(x, n_resamples=1000, seed=trial)
        hits += lo <= 1.0 <= hi
    assert 0.91 <= hits / trials <= 0.98


def test_ci_level_widens_the_interval():
    x = np.random.default_rng(3).random(200)
    lo90, hi90 = bootstrap_ci(x, confidence=0.90)
    lo99, hi99 = bootstrap_ci(x, confidence=0.99)
    assert lo99 < lo90 < x.mean() < hi90 < hi99


@pytest.mark.parametrize("x", [[0.7] * 50, [1.0], [0.0, 0.0, 0.0]])
def test_ci_of_a_constant_sample_is_that_value(x):
    assert bootstrap_ci(x) == (x[0], x[0])


@pytest.mark.parametrize("x", [[0.0] * 99 + [1.0], [0.0, 1.0], [0.0, 0.0, 1.0], [1.0] * 500 + [0.0]])
def test_ci_of_a_near_constant_sample_is_finite(x):
    lo, hi = bootstrap_ci(x, n_resamples=2000)
    assert np.isfinite(lo) and np.isfinite(hi)
    assert min(x) <= lo <= np.mean(x) <= hi <= max(x)


def test_ci_is_reproducible():
    x = np.random.default_rng(4).random(100)
    assert bootstrap_ci(x, seed=5) == bootstrap_ci(x, seed=5)


@pytest.mark.parametrize("bad", [[], [float("nan"), 1.0], [[1.0, 2.0]]])
def test_ci_refuses_bad_input(bad):
    with pytest.raises(ValueError):
        bootstrap_ci(bad)
    with pytest.raises(ValueError):
        bootstrap_ci([1.0, 2.0], confidence=1.0)


# --- paired_p_value --------------------------------------------------------------------------

def test_identical_systems_give_p_1():
    a = np.random.default_rng(5).random(300)
    assert paired_p_value(a, a.copy()) == 1.0


def test_clearly_different_systems_give_small_p():
    rng = np.random.default_rng(6)
    b = rng.random(300)
    a = b + 0.1 + rng.normal(0, 0.1, 300)
    assert paired_p_value(a, b) < 0.01


def test_same_mean_different_values_give_large_p():
    rng = np.random.default_rng(7)
    b = rng.random(300)
    a = b + rng.normal(0, 0.1, 300)
    a -= (a - b).mean()  # exactly no mean difference
    assert paired_p_value(a, b) > 0.5


@pytest.mark.parametrize("seed", range(3))
def test_p_is_symmetric(seed):
    rng = np.random.default_rng(seed)
    a, b = rng.random(80), rng.random(80)
    assert paired_p_value(a, b, seed=seed) == paired_p_value(b, a, seed=seed)


def test_three_positive_differences_by_hand():
    # d = (1, 2, 3): 8 sign patterns; |mean| >= 2 only for +++ and --- -> p = 2/8
    assert paired_p_value([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == pytest.approx(0.25)


def test_small_samples_get_the_exact_p_of_full_enumeration():
    # 2^10 sign patterns <= n_resamples, so scipy enumerates them; integers keep the sums exact.
    rng = np.random.default_rng(8)
    d = rng.integers(-3, 6, size=10).astype(float)
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=d.size)))
    null = (signs * d).mean(axis=1)
    expected = np.mean(np.abs(null) >= abs(d.mean()))
    assert paired_p_value(d, np.zeros_like(d)) == pytest.approx(expected, abs=1e-12)


def test_p_is_reproducible_and_seeded():
    rng = np.random.default_rng(9)
    a, b = rng.random(200), rng.random(200) + 0.02
    assert paired_p_value(a, b, seed=1) == paired_p_value(a, b, seed=1)
    assert 0.0 < paired_p_value(a, b, seed=1) <= 1.0


def test_dicts_are_paired_by_query_id():
    rng = np.random.default_rng(10)
    a, b = rng.random(50), rng.random(50)
    ids = [f"q{i}" for i in range(50)]
    da = dict(zip(ids, a))
    db = dict(reversed(list(zip(ids, b))))  # same pairs, other insertion order
    order = np.argsort(ids)
    assert paired_p_value(da, db) == paired_p_value(a[order], b[order])
    with pytest.raises(ValueError):
        paired_p_value(da, {k: v for k, v in db.items() if k != "q0"})
    with pytest.raises(ValueError):
        paired_p_value(da, b)


@pytest.mark.parametrize("a,b", [([], []), ([1.0, 2.0], [1.0]), ([float("nan")], [1.0])])
def test_p_refuses_bad_input(a, b):
    with pytest.raises(ValueError):
        paired_p_value(a, b)
