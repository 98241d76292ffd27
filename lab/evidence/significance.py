"""Statistics for comparing repetitions: per-repetition values, bootstrap intervals, rank tests.

The unit of independence is the repetition: samples inside one repetition share a connection and
its losses, so every interval here resamples repetitions, never individual samples.
All functions are pure (numpy/pandas in, numbers out) and seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from lab.evidence.stats import Estimate, median_ci, ratio_of_medians_ci
from lab.results.store import axis_columns

N_BOOT = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval (same unit as the estimate)."""

    point: float
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        """True when `value` lies outside [low, high] (False when the interval is NaN)."""
        if np.isnan(self.low) or np.isnan(self.high):
            return False
        return value < self.low or value > self.high


NAN_INTERVAL = Interval(float("nan"), float("nan"), float("nan"))


def per_repetition(samples: pd.DataFrame, metric: str, by: Sequence[str] = ()) -> pd.DataFrame:
    """One value per group × repetition: the median of `metric`'s samples in that repetition.

    Aggregate metrics (one row per repetition) pass through unchanged. Returns columns
    `[*by, "repetition", "value"]`; groups with a missing key (e.g. mode <NA>) are kept.
    """
    keys = [*by, "repetition"]
    rows = samples[samples["metric"] == metric]
    if rows.empty:
        return pd.DataFrame(columns=[*keys, "value"])
    out = rows.groupby(keys, dropna=False, sort=True)["value"].median().reset_index()
    return out[out["value"].notna()].reset_index(drop=True)


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


def _percentiles(boot: np.ndarray, point: float) -> Interval:
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return Interval(point, float("nan"), float("nan"))
    alpha = (1 - CONFIDENCE) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return Interval(point, float(low), float(high))


def _from_estimate(e: Estimate) -> Interval:
    return Interval(float(e.value), float(e.low), float(e.high))


def bootstrap_median(values: Sequence[float] | np.ndarray, *, seed: int = 0) -> Interval:
    """Median with a percentile-bootstrap 95% interval (lab.evidence.stats.median_ci, seeded)."""
    return _from_estimate(median_ci(values, np.random.default_rng(seed), n_boot=N_BOOT))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.asarray(num, dtype=float) / np.asarray(den, dtype=float)
    return np.where(np.asarray(den) == 0, np.nan, r)


def bootstrap_ratio_paired(
    num: Sequence[float] | np.ndarray, den: Sequence[float] | np.ndarray, *, seed: int = 0
) -> Interval:
    """median(num) / median(den) with a 95% bootstrap interval, resampling pairs together.

    `num[i]` and `den[i]` come from the same repetition (e.g. h3 and h2 of repetition i).
    NaN when the denominator's median is 0.
    """
    a = np.asarray(num, dtype=float)
    b = np.asarray(den, dtype=float)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if a.size == 0:
        return NAN_INTERVAL
    point = float(_ratio(np.median(a), np.median(b)))
    if a.size == 1:
        return Interval(point, float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(N_BOOT, a.size))
    boot = _ratio(np.median(a[idx], axis=1), np.median(b[idx], axis=1))
    return _percentiles(boot, point)


def bootstrap_ratio(
    num: Sequence[float] | np.ndarray, den: Sequence[float] | np.ndarray, *, seed: int = 0
) -> Interval:
    """median(num) / median(den) with a 95% bootstrap interval, resampling each side on its own
    (lab.evidence.stats.ratio_of_medians_ci): for two independent sets of repetitions (two runs).
    NaN when median(den) is 0."""
    e = ratio_of_medians_ci(num, den, np.random.default_rng(seed), n_boot=N_BOOT)
    if not np.isfinite(e.value):
        return NAN_INTERVAL
    return _from_estimate(e)


def mann_whitney_p(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value (exact for small samples); NaN when a side is empty.

    Returns 1.0 when every value is identical (no evidence of a difference).
    """
    x, y = _finite(a), _finite(b)
    if x.size == 0 or y.size == 0:
        return float("nan")
    if np.ptp(np.concatenate([x, y])) == 0:
        return 1.0
    return float(stats.mannwhitneyu(x, y, alternative="two-sided").pvalue)


# --- shaping: which axes matter, which rows mean something ------------------------------
KNOWN_WORKLOADS = ("handshake", "bulk", "multiplex", "watch", "rpc_under_load", "k8s_mix")


def relevant_axes(
    df: pd.DataFrame, workload: str | None, x: str | None = None, *, ignore: Sequence[str] = ()
) -> list[str]:
    """Matrix axes that vary in `df` and can change `workload`'s numbers: not an axis of
    another workload (e.g. `watch.streams` does not matter to bulk), not `x` itself, not in
    `ignore`, and not an axis that `x` determines (e.g. `link.delay_ms` when x is the RTT)."""
    out = []
    for col in axis_columns(df):
        if col in ignore or col == x:
            continue
        head = str(col).split(".", 1)[0]
        if head in KNOWN_WORKLOADS and head != workload:
            continue
        if df[col].nunique(dropna=True) <= 1:
            continue
        if x is not None and x in df.columns and df.groupby(x)[col].nunique().max() <= 1:
            continue
        out.append(col)
    return out


def drop_unstalled(df: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Drop rows of `rows` (e.g. hol_spread) from repetitions where no watch event stalled
    (`stalled_fraction` 0 in `df`): the spread is a mean over stalled events, so there it is
    undefined, not 0."""
    key = ["cell", "repetition", "protocol", "workload"]
    stalled = df[df["metric"] == "stalled_fraction"]
    if stalled.empty or rows.empty:
        return rows
    none = stalled[stalled["value"] == 0][key].drop_duplicates()
    marked = rows[key].merge(none.assign(_none=True), on=key, how="left")
    return rows[marked["_none"].isna().to_numpy()]


# --- cell geometry: RTT and loss per cell -------------------------------------------------
def _direction_loss(d: dict[str, Any]) -> float:
    loss = d.get("loss") or {}
    model = loss.get("model", "none")
    if model == "bernoulli":
        return float(loss.get("rate", 0.0))
    if model == "gilbert_elliott":
        p, r = float(loss.get("p", 0.0)), float(loss.get("r", 1.0))
        h, k = float(loss.get("h", 0.0)), float(loss.get("k", 1.0))
        bad = p / (p + r) if p + r > 0 else 0.0
        return (1 - k) * (1 - bad) + (1 - h) * bad
    return 0.0


def link_columns(meta: dict[str, Any]) -> pd.DataFrame:
    """Per cell of run.json: `rtt_ms` (base RTT = uplink + downlink delay) and `loss_rate`
    (mean loss probability of the downlink, the direction that carries the responses)."""
    rows = []
    for c in meta.get("cells", []):
        link = c.get("link") or {}
        if "uplink" in link or "downlink" in link:
            up, down = link.get("uplink") or {}, link.get("downlink") or {}
        else:  # symmetric shorthand
            up = down = link
        rtt = float(up.get("delay_ms", 0.0)) + float(down.get("delay_ms", 0.0))
        rows.append({"cell": c["cell"], "rtt_ms": rtt, "loss_rate": _direction_loss(down)})
    return pd.DataFrame(rows, columns=["cell", "rtt_ms", "loss_rate"])


def with_link_columns(samples: pd.DataFrame, meta: dict[str, Any]) -> pd.DataFrame:
    """`samples` plus `rtt_ms` and `loss_rate` columns taken from run.json's cells."""
    cols = link_columns(meta)
    base = samples.drop(columns=[c for c in ("rtt_ms", "loss_rate") if c in samples.columns])
    if cols.empty:
        return base
    return base.merge(cols, on="cell", how="left")
