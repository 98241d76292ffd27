"""lab.evidence.stats bootstrap intervals."""

from __future__ import annotations

import numpy as np
import pytest

from lab.evidence import stats


def test_median_ci_contains_true_median_and_is_reproducible() -> None:
    x = np.random.default_rng(1).normal(10.0, 1.0, 200)
    a = stats.median_ci(x, np.random.default_rng(7))
    b = stats.median_ci(x, np.random.default_rng(7))
    assert a == b  # same seed, same interval
    assert a.value == pytest.approx(np.median(x))
    assert a.low < a.value < a.high
    assert a.contains(10.0)
    assert a.high - a.low < 0.5  # n=200, σ=1: the median's 95 % CI is ≈ ±0.17
    assert a.n == 200 and a.confidence == 0.95


def test_median_ci_coverage_is_near_nominal() -> None:
    rng = np.random.default_rng(3)
    hits = 0
    trials = 200
    for _ in range(trials):
        x = rng.exponential(1.0, 41)
        hits += stats.median_ci(x, rng, n_boot=400).contains(np.log(2))
    assert 0.85 <= hits / trials <= 0.99


def test_median_ci_edge_cases() -> None:
    empty = stats.median_ci([], np.random.default_rng(0))
    assert np.isnan(empty.value) and empty.n == 0
    one = stats.median_ci([4.0, np.nan], np.random.default_rng(0))
    assert (one.value, one.low, one.high, one.n) == (4.0, 4.0, 4.0, 1)
    with pytest.raises(ValueError):
        stats.median_ci([1.0], np.random.default_rng(0), confidence=1.5)


def test_ratio_of_medians() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(20.0, 1.0, 100)
    b = rng.normal(10.0, 0.5, 80)
    r = stats.ratio_of_medians_ci(a, b, np.random.default_rng(9))
    assert r.value == pytest.approx(np.median(a) / np.median(b))
    assert r.low < 2.0 < r.high
    assert r.high - r.low < 0.2
    assert r.n == 80


def test_ratio_with_zero_denominator() -> None:
    r = stats.ratio_of_medians_ci([1.0, 2.0], [0.0, 0.0, 0.0], np.random.default_rng(0))
    assert np.isinf(r.value)
    assert np.isnan(r.low) and np.isnan(r.high)


def test_bootstrap_large_sample_is_chunked() -> None:
    # 32,000 events × 2,000 resamples would be 512 MB in one matrix; chunking keeps it small
    x = np.arange(32_000, dtype=float)
    meds = stats.bootstrap_medians(x, np.random.default_rng(0), n_boot=50)
    assert meds.shape == (50,)
    assert np.all(np.abs(meds - 15_999.5) < 600)
