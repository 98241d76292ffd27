"""lab.evidence.stats: the Interval type and the bootstrap intervals."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lab.evidence import stats
from lab.evidence.stats import NAN_INTERVAL, Interval


def test_interval_contains_and_excludes() -> None:
    iv = Interval(1.0, 0.5, 2.0)
    assert iv.contains(0.5) and iv.contains(2.0) and iv.contains(1.3)  # closed
    assert not iv.excludes(0.5) and not iv.excludes(2.0)
    assert iv.excludes(0.49) and iv.excludes(2.01)
    assert not iv.contains(0.49) and not iv.contains(2.01)
    # no interval: nothing is inside it, and nothing is proven outside it either
    for x in (0.0, 1.0, math.nan):
        assert not NAN_INTERVAL.contains(x) and not NAN_INTERVAL.excludes(x)
    assert not Interval(1.0, math.nan, math.nan).excludes(5.0)


def test_median_ci_contains_true_median_and_is_reproducible() -> None:
    x = np.random.default_rng(1).normal(10.0, 1.0, 200)
    a = stats.median_ci(x, np.random.default_rng(7))
    b = stats.median_ci(x, np.random.default_rng(7))
    c = stats.median_ci(x, np.random.default_rng(8))
    assert a == b  # same seed, same interval
    assert (a.low, a.high) != (c.low, c.high)  # the seed matters: the bounds are resampled
    assert a.point == pytest.approx(np.median(x))
    assert a.low < a.point < a.high
    assert a.contains(10.0)
    assert a.high - a.low < 0.5  # n=200, σ=1: the median's 95 % CI is ≈ ±0.17


def test_median_ci_narrows_with_more_data_and_lower_confidence() -> None:
    rng = np.random.default_rng(2)
    small, large = rng.normal(0, 1, 30), rng.normal(0, 1, 3000)
    w_small = stats.median_ci(small, np.random.default_rng(0))
    w_large = stats.median_ci(large, np.random.default_rng(0))
    w_80 = stats.median_ci(small, np.random.default_rng(0), confidence=0.8)
    assert w_large.high - w_large.low < (w_small.high - w_small.low) / 4  # ∝ 1/√n: ≈ 1/10
    assert w_small.low <= w_80.low and w_80.high <= w_small.high  # same resamples, inner quantiles


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
    assert math.isnan(empty.point) and math.isnan(empty.low) and math.isnan(empty.high)
    one = stats.median_ci([4.0, np.nan], np.random.default_rng(0))
    assert (one.point, one.low, one.high) == (4.0, 4.0, 4.0)
    with pytest.raises(ValueError):
        stats.median_ci([1.0], np.random.default_rng(0), confidence=1.5)
    with pytest.raises(ValueError):
        stats.median_ci([1.0], np.random.default_rng(0), n_boot=0)


def test_ratio_of_medians() -> None:
    rng = np.random.default_rng(5)
    a = rng.normal(20.0, 1.0, 100)
    b = rng.normal(10.0, 0.5, 80)
    r = stats.ratio_of_medians_ci(a, b, np.random.default_rng(9))
    assert r.point == pytest.approx(np.median(a) / np.median(b))
    assert r.low < 2.0 < r.high
    assert r.high - r.low < 0.2


def test_ratio_with_zero_denominator() -> None:
    r = stats.ratio_of_medians_ci([1.0, 2.0], [0.0, 0.0, 0.0], np.random.default_rng(0))
    assert np.isinf(r.point)
    assert np.isnan(r.low) and np.isnan(r.high)
    assert stats.ratio_of_medians_ci([], [1.0], np.random.default_rng(0)) == NAN_INTERVAL


def test_paired_ratio_keeps_pairs_together() -> None:
    """a[i] = 2·b[i] with b spread widely: every paired resample has ratio exactly 2, while
    resampling the sides independently gives a wide interval around 2."""
    b = np.random.default_rng(4).lognormal(3.0, 1.0, 12)
    a = 2.0 * b
    paired = stats.paired_ratio_of_medians_ci(a, b, np.random.default_rng(0))
    unpaired = stats.ratio_of_medians_ci(a, b, np.random.default_rng(0))
    assert paired.point == pytest.approx(2.0)
    assert paired.low == pytest.approx(2.0) and paired.high == pytest.approx(2.0)
    assert unpaired.low < 1.5 and unpaired.high > 2.5


def test_paired_ratio_edge_cases() -> None:
    rng = np.random.default_rng(0)
    # a pair with a NaN side is dropped, not the whole sample
    r = stats.paired_ratio_of_medians_ci([2.0, np.nan, 6.0], [1.0, 5.0, 3.0], rng)
    assert r.point == pytest.approx(2.0) and r.contains(2.0)
    single = stats.paired_ratio_of_medians_ci([3.0], [1.5], rng)
    assert single.point == 2.0 and math.isnan(single.low) and math.isnan(single.high)
    assert stats.paired_ratio_of_medians_ci([np.nan], [1.0], rng) == NAN_INTERVAL
    zero = stats.paired_ratio_of_medians_ci([1.0, 2.0], [0.0, 0.0], rng)
    assert math.isnan(zero.point) and math.isnan(zero.low)


def test_bootstrap_large_sample_is_chunked() -> None:
    # 32,000 events × 2,000 resamples would be 512 MB in one matrix; chunks of 62 resamples
    # keep it small. 200 resamples = 4 chunks, each drawing fresh indices.
    x = np.arange(32_000, dtype=float)
    meds = stats.bootstrap_medians(x, np.random.default_rng(0), n_boot=200)
    assert np.all(np.abs(meds - 15_999.5) < 600)
    chunk = 2_000_000 // x.size
    assert not np.array_equal(meds[:chunk], meds[chunk : 2 * chunk])
    # the spread of the resampled medians is the median's standard error, N / (2√n) ≈ 89
    assert 60 < np.std(meds) < 120
