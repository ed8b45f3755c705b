"""Uncertainty of a mean metric: a bootstrap confidence interval and a paired permutation test.

Both come from scipy (`scipy.stats.bootstrap`, `scipy.stats.permutation_test`); this module only
chooses their settings, seeds them, and handles the inputs where they would return NaN.

- Interval: BCa (bias-corrected and accelerated), scipy's default. Per-query retrieval metrics are
  bounded and skewed (Recall@1 is mostly 0 or mostly 1; MRR piles up at 1), and BCa corrects the
  percentile interval for exactly that skew and bias, with second-order accurate coverage. Where
  BCa is undefined (scipy returns NaN, e.g. a near-constant sample) we fall back to the percentile
  interval; when every value is equal the interval is that value, as no resample can differ.
- Significance: a two-sided paired permutation (sign-flip) test of mean(a - b). Under the null
  hypothesis that the two systems are exchangeable on each query, each per-query difference is as
  likely to have either sign. scipy enumerates all 2^n sign patterns when that is no more than
  `n_resamples`, so small samples get the exact p-value.

`batch` bounds memory: scipy's default materialises n_resamples x n indices (hundreds of MB for
thousands of queries).
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

log = logging.getLogger(__name__)

_BATCH_ELEMENTS = 2_000_000  # resampled values held at once (16 MB of float64)


def _as_sample(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _batch(n: int) -> int:
    return max(1, _BATCH_ELEMENTS // n)


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def bootstrap_ci(
    per_query_values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """(low, high) bootstrap confidence interval of the mean of `per_query_values` (BCa, seeded)."""
    x = _as_sample(per_query_values, "per_query_values")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])

    def run(method: str) -> tuple[float, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            res = stats.bootstrap(
                (x,), _mean, n_resamples=n_resamples, batch=_batch(x.size), vectorized=True,
                confidence_level=confidence, method=method, rng=np.random.default_rng(seed),
            )
        return float(res.confidence_interval.low), float(res.confidence_interval.high)

    lo, hi = run("BCa")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        log.info("BCa interval undefined for this sample (n=%d); using the percentile interval", x.size)
        lo, hi = run("percentile")
    return lo, hi


def _paired(a, b) -> tuple[np.ndarray, np.ndarray]:
    """Two aligned samples; dicts (query id -> value) are aligned by query id and must share keys."""
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            raise ValueError("pass both samples as dicts (query id -> value) or both as sequences")
        if a.keys() != b.keys():
            raise ValueError(f"paired samples cover different queries ({len(a.keys() ^ b.keys())} differ)")
        keys = sorted(a)
        a, b = [a[k] for k in keys], [b[k] for k in keys]
    x, y = _as_sample(a, "a"), _as_sample(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.size} vs {y.size}")
    return x, y


def paired_p_value(
    a: Sequence[float] | np.ndarray | Mapping[str, float],
    b: Sequence[float] | np.ndarray | Mapping[str, float],
    n_resamples: int = 10_000,
    seed: int = 0,
) -> float:
    """Two-sided p-value of a paired sign-flip permutation test of mean(a - b) = 0.

    `a` and `b` are per-query values of two systems on the same queries, in the same order (or two
    dicts keyed by query id). Identical systems give p = 1; p(a, b) == p(b, a) for the same seed.
    """
    x, y = _paired(a, b)
    d = x - y
    if np.all(d == 0):
        return 1.0
    # With a single sample and permutation_type="samples", scipy flips the sign of each observation.
    res = stats.permutation_test(
        (d,), _mean, permutation_type="samples", vectorized=True, n_resamples=n_resamples,
        batch=_batch(d.size), alternative="two-sided", rng=np.random.default_rng(seed),
    )
    return float(res.pvalue)
