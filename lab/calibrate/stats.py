"""Pure statistics of `lab calibrate`: acceptance and confidence intervals of counts, reordering
counts, delay quantiles (ms) and receiver rates (Mbit/s). Times are integer ns."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy import stats

LEVEL = 0.99  # acceptance level of the loss / reorder / duplicate intervals


def binomial_interval(n: int, p: float, level: float = LEVEL) -> tuple[int, int]:
    """Central `level` acceptance interval [lo, hi] of a Binomial(n, p) count."""
    if n <= 0 or p <= 0:
        return 0, 0
    if p >= 1:
        return n, n
    a = (1 - level) / 2
    return int(stats.binom.ppf(a, n, p)), int(stats.binom.ppf(1 - a, n, p))


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Clopper-Pearson) `level` confidence interval of a proportion k/n."""
    if n <= 0:
        return 0.0, 1.0
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def mc_interval(values: Sequence[int], level: float = LEVEL) -> tuple[int, int]:
    """Central `level` interval of Monte Carlo counts: floor/ceil of their quantiles."""
    a = (1 - level) / 2
    v = np.asarray(values)
    return int(np.floor(np.quantile(v, a))), int(np.ceil(np.quantile(v, 1 - a)))


def in_interval(k: int, interval: tuple[int, int]) -> bool:
    """lo ≤ k ≤ hi."""
    return interval[0] <= k <= interval[1]


def count_reordered(seqs: Sequence[int]) -> int:
    """Packets that overtook one: with the received sequence numbers sorted, count the adjacent
    pairs (a < b) where b arrived before a. A packet sent early past ten others counts once
    (netem's `reorder` meaning), as does one held back behind ten others. Duplicates: first copy."""
    pos: dict[int, int] = {}
    for i, s in enumerate(seqs):
        pos.setdefault(s, i)
    order = sorted(pos)
    return sum(1 for a, b in itertools.pairwise(order) if pos[b] < pos[a])


def quantiles_ms(values_ns: Sequence[int] | np.ndarray) -> dict[str, float | None]:
    """p5/p50/p95/p99 and mean of nanosecond values, in ms (None when empty)."""
    v = np.asarray(values_ns, dtype=np.float64)
    if v.size == 0:
        return {"p5": None, "p50": None, "p95": None, "p99": None, "mean": None}
    p5, p50, p95, p99 = np.percentile(v, [5, 50, 95, 99]) / 1e6
    return {
        "p5": float(p5),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(v.mean() / 1e6),
    }


def receiver_rate_mbit(
    times_ns: Sequence[int], ip_bytes: Sequence[float], warmup_s: float
) -> float | None:
    """IP-level rate seen by a receiver after `warmup_s` from its first arrival: bytes that
    arrived after the window's first arrival ÷ (last − first). None with < 10 arrivals."""
    t = np.asarray(times_ns, dtype=np.int64)
    b = np.asarray(ip_bytes, dtype=np.float64)
    if t.size == 0:
        return None
    keep = t >= t[0] + round(warmup_s * 1e9)
    t, b = t[keep], b[keep]
    if t.size < 10 or t[-1] <= t[0]:
        return None
    return float(b[1:].sum() * 8e3 / (t[-1] - t[0]))


def counter_rate_mbit(
    times_ns: Sequence[int], counts: Sequence[int], bytes_per_count: float, warmup_s: float
) -> float | None:
    """Rate from a cumulative counter sampled at `times_ns` (e.g. TCP data segments received):
    from the first sample `warmup_s` after the first to the first sample that reached the final
    count, in Mbit/s of `bytes_per_count` per unit. None with fewer than 2 usable samples."""
    t = np.asarray(times_ns, dtype=np.int64)
    c = np.asarray(counts, dtype=np.int64)
    ok = c >= 0
    t, c = t[ok], c[ok]
    if t.size < 2:
        return None
    start = int(np.searchsorted(t, t[0] + round(warmup_s * 1e9)))
    end = int(np.argmax(c == c.max()))
    if end <= start or t[end] <= t[start]:
        return None
    return float((c[end] - c[start]) * bytes_per_count * 8e3 / (t[end] - t[start]))
