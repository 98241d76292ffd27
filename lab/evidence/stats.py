"""Bootstrap confidence intervals shared by metrics, reports and comparisons. Pure; the caller
passes a seeded `numpy.random.Generator` (and records its seed), so intervals are reproducible.

Percentile bootstrap: resample with replacement `n_boot` times, take the statistic of each
resample, report the (1−c)/2 and (1+c)/2 quantiles of those statistics. Every interval of the
lab is an `Interval`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DEFAULT_BOOT = 2000
DEFAULT_CONFIDENCE = 0.95
_MAX_CELLS = 2_000_000  # resample matrix entries per chunk (bounds memory to ~16 MB)


@dataclass(frozen=True, slots=True)
class Interval:
    """A point estimate with a two-sided confidence interval [low, high], all in the unit of the
    estimate. NaN bounds mean "no interval" (empty or single-valued data); then neither
    `contains` nor `excludes` holds for any value."""

    point: float
    low: float
    high: float

    def contains(self, x: float) -> bool:
        """True when x lies inside [low, high] (closed); False when the interval is NaN."""
        return bool(self.low <= x <= self.high)

    def excludes(self, x: float) -> bool:
        """True when x lies outside [low, high]; False when the interval is NaN."""
        if math.isnan(self.low) or math.isnan(self.high):
            return False
        return bool(x < self.low or x > self.high)


NAN_INTERVAL = Interval(math.nan, math.nan, math.nan)


def _clean(x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    a = np.asarray(x, dtype=np.float64).ravel()
    return a[~np.isnan(a)]


def bootstrap_medians(
    x: npt.ArrayLike, rng: np.random.Generator, n_boot: int = DEFAULT_BOOT
) -> npt.NDArray[np.float64]:
    """`n_boot` medians of resamples (with replacement, same size) of x; NaNs dropped first."""
    a = _clean(x)
    if a.size == 0:
        return np.full(n_boot, np.nan)
    out = np.empty(n_boot)
    chunk = max(1, _MAX_CELLS // a.size)
    for lo in range(0, n_boot, chunk):
        hi = min(n_boot, lo + chunk)
        idx = rng.integers(0, a.size, size=(hi - lo, a.size))
        out[lo:hi] = np.median(a[idx], axis=1)
    return out


def percentile_bounds(
    stats: npt.NDArray[np.float64], confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float, float]:
    """The (1−c)/2 and (1+c)/2 quantiles of the finite bootstrap statistics `stats` (NaN, NaN
    when none is finite)."""
    finite = stats[np.isfinite(stats)]
    if finite.size == 0:
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _check(confidence: float, n_boot: int) -> None:
    if not 0.0 < confidence < 1.0:
        raise ValueError("confidence must be in (0, 1)")
    if n_boot < 1:
        raise ValueError("n_boot must be ≥ 1")


def median_ci(
    x: npt.ArrayLike,
    rng: np.random.Generator,
    *,
    n_boot: int = DEFAULT_BOOT,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Interval:
    """Median of x with a percentile-bootstrap interval. NaNs are ignored; an empty sample gives
    NaN everywhere; a single observation gives a zero-width interval."""
    _check(confidence, n_boot)
    a = _clean(x)
    if a.size == 0:
        return NAN_INTERVAL
    low, high = percentile_bounds(bootstrap_medians(a, rng, n_boot), confidence)
    return Interval(float(np.median(a)), low, high)


def ratio_of_medians_ci(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    rng: np.random.Generator,
    *,
    n_boot: int = DEFAULT_BOOT,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Interval:
    """median(a) / median(b) with a percentile-bootstrap interval; a and b are resampled
    independently (unpaired). Resamples whose median(b) is 0 are dropped; when median(b) is 0
    the point is NaN (or ±inf when a's median is not 0, following IEEE division). NaN
    everywhere when a or b is empty."""
    _check(confidence, n_boot)
    xa, xb = _clean(a), _clean(b)
    if xa.size == 0 or xb.size == 0:
        return NAN_INTERVAL
    ma, mb = float(np.median(xa)), float(np.median(xb))
    with np.errstate(divide="ignore", invalid="ignore"):
        point = np.float64(ma) / np.float64(mb)
        boot_a = bootstrap_medians(xa, rng, n_boot)
        boot_b = bootstrap_medians(xb, rng, n_boot)
        ratios = np.where(boot_b != 0, boot_a / boot_b, np.nan)
    low, high = percentile_bounds(ratios, confidence)
    return Interval(float(point), low, high)


def paired_ratio_of_medians_ci(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    rng: np.random.Generator,
    *,
    n_boot: int = DEFAULT_BOOT,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Interval:
    """median(a) / median(b) with a percentile-bootstrap interval resampling pairs together:
    a[i] and b[i] belong to one unit (e.g. h3 and h2 of repetition i). Pairs with a non-finite
    side are dropped; NaN everywhere when none is left; NaN bounds for a single pair; the point
    and resamples are NaN where median(b) is 0."""
    _check(confidence, n_boot)
    xa = np.asarray(a, dtype=np.float64).ravel()
    xb = np.asarray(b, dtype=np.float64).ravel()
    keep = np.isfinite(xa) & np.isfinite(xb)
    xa, xb = xa[keep], xb[keep]
    if xa.size == 0:
        return NAN_INTERVAL
    point = float(_ratio(np.median(xa), np.median(xb)))
    if xa.size == 1:
        return Interval(point, math.nan, math.nan)
    idx = rng.integers(0, xa.size, size=(n_boot, xa.size))
    boot = _ratio(np.median(xa[idx], axis=1), np.median(xb[idx], axis=1))
    low, high = percentile_bounds(boot, confidence)
    return Interval(point, low, high)


def _ratio(num: npt.ArrayLike, den: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """num / den elementwise, NaN where den is 0."""
    n = np.asarray(num, dtype=np.float64)
    d = np.asarray(den, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = n / d
    return np.where(d == 0, np.nan, r)
