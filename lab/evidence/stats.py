"""Bootstrap confidence intervals shared by metrics, reports and comparisons. Pure; the caller
passes a seeded `numpy.random.Generator` (and records its seed), so intervals are reproducible.

Percentile bootstrap: resample with replacement `n_boot` times, take the statistic of each
resample, report the (1−c)/2 and (1+c)/2 quantiles of those statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

DEFAULT_BOOT = 2000
DEFAULT_CONFIDENCE = 0.95
_MAX_CELLS = 2_000_000  # resample matrix entries per chunk (bounds memory to ~16 MB)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval (same unit as the data; NaN when empty)."""

    value: float
    low: float
    high: float
    n: int  # observations (for a ratio: the smaller of the two samples)
    confidence: float

    def contains(self, x: float) -> bool:
        """True when x lies inside the interval (closed)."""
        return bool(self.low <= x <= self.high)


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


def _interval(stats: npt.NDArray[np.float64], confidence: float) -> tuple[float, float]:
    finite = stats[np.isfinite(stats)]
    if finite.size == 0:
        return float("nan"), float("nan")
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
) -> Estimate:
    """Median of x with a percentile-bootstrap interval. NaNs are ignored; an empty sample gives
    NaN everywhere; a single observation gives a zero-width interval."""
    _check(confidence, n_boot)
    a = _clean(x)
    if a.size == 0:
        nan = float("nan")
        return Estimate(nan, nan, nan, 0, confidence)
    low, high = _interval(bootstrap_medians(a, rng, n_boot), confidence)
    return Estimate(float(np.median(a)), low, high, int(a.size), confidence)


def ratio_of_medians_ci(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    rng: np.random.Generator,
    *,
    n_boot: int = DEFAULT_BOOT,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Estimate:
    """median(a) / median(b) with a percentile-bootstrap interval; a and b are resampled
    independently (unpaired). Resamples whose median(b) is 0 are dropped; when median(b) is 0
    the value is NaN (or ±inf when a's median is not 0, following IEEE division)."""
    _check(confidence, n_boot)
    xa, xb = _clean(a), _clean(b)
    n = int(min(xa.size, xb.size))
    if n == 0:
        nan = float("nan")
        return Estimate(nan, nan, nan, 0, confidence)
    ma, mb = float(np.median(xa)), float(np.median(xb))
    with np.errstate(divide="ignore", invalid="ignore"):
        value = np.float64(ma) / np.float64(mb)
        boot_a = bootstrap_medians(xa, rng, n_boot)
        boot_b = bootstrap_medians(xb, rng, n_boot)
        ratios = np.where(boot_b != 0, boot_a / boot_b, np.nan)
    low, high = _interval(ratios, confidence)
    return Estimate(float(value), low, high, n, confidence)
