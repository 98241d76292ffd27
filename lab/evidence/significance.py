"""Statistics for comparing repetitions: per-repetition values, seeded bootstrap intervals (the
numbers come from lab.evidence.stats), rank tests; and the shaping every verdict, check and plot
shares: which matrix axes matter to a workload, which rows mean something (HOL spread only with
stalls, cpu_bound repetitions), and each cell's base RTT and loss rate from run.json.

The unit of independence is the repetition: samples inside one repetition share a connection and
its losses, so every interval here resamples repetitions, never individual samples.
All functions are pure (numpy/pandas in, numbers out) and seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from pydantic import ValidationError

from lab.errors import ResultsError
from lab.evidence.stats import (
    NAN_INTERVAL,
    Interval,
    median_ci,
    paired_ratio_of_medians_ci,
    ratio_of_medians_ci,
)
from lab.link.spec import DirectionSpec
from lab.results.schema import axis_columns
from lab.scenario.workloads import WORKLOAD_KINDS


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


def bootstrap_median(values: npt.ArrayLike, *, seed: int = 0) -> Interval:
    """Median with a percentile-bootstrap 95% interval (lab.evidence.stats.median_ci, seeded)."""
    return median_ci(values, np.random.default_rng(seed))


def bootstrap_ratio_paired(num: npt.ArrayLike, den: npt.ArrayLike, *, seed: int = 0) -> Interval:
    """median(num) / median(den) with a 95% bootstrap interval, resampling pairs together
    (lab.evidence.stats.paired_ratio_of_medians_ci, seeded).

    `num[i]` and `den[i]` come from the same repetition (e.g. h3 and h2 of repetition i).
    NaN when the denominator's median is 0.
    """
    return paired_ratio_of_medians_ci(num, den, np.random.default_rng(seed))


def bootstrap_ratio(num: npt.ArrayLike, den: npt.ArrayLike, *, seed: int = 0) -> Interval:
    """median(num) / median(den) with a 95% bootstrap interval, resampling each side on its own
    (lab.evidence.stats.ratio_of_medians_ci): for two independent sets of repetitions (two runs).
    NaN when median(den) is 0."""
    ratio = ratio_of_medians_ci(num, den, np.random.default_rng(seed))
    return ratio if np.isfinite(ratio.point) else NAN_INTERVAL


def mann_whitney_p(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Two-sided Mann-Whitney U p-value (exact for small samples); NaN when a side is empty.

    Returns 1.0 when every value is identical (no evidence of a difference).
    """
    x, y = _finite(a), _finite(b)
    if x.size == 0 or y.size == 0:
        return float("nan")
    if np.ptp(np.concatenate([x, y])) == 0:
        return 1.0
    from scipy.stats import mannwhitneyu  # deferred: scipy.stats takes ~1-2 s to import

    return float(mannwhitneyu(x, y, alternative="two-sided").pvalue)


# --- shaping: which axes matter, which rows mean something ------------------------------
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
        if head in WORKLOAD_KINDS and head != workload:
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


def cpu_bound_rows(samples: pd.DataFrame, workload: str) -> pd.DataFrame:
    """The `cpu_bound` rows of `workload` that are set (a process above 90% of a core in that
    cell and repetition): their numbers measure Python, not the protocol."""
    return samples[
        (samples["metric"] == "cpu_bound")
        & (samples["workload"] == workload)
        & (samples["value"] > 0.5)
    ]


# --- cell geometry: RTT and loss per cell -------------------------------------------------
def _mean_loss(cell: str, direction: dict[str, Any]) -> float:
    """Mean loss probability of one direction of a run.json cell's link."""
    try:
        return DirectionSpec.model_validate(direction).mean_loss
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "link"
        raise ResultsError(f"run.json: cell {cell}: {where}: {first['msg']}") from None


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
        rows.append({"cell": c["cell"], "rtt_ms": rtt, "loss_rate": _mean_loss(c["cell"], down)})
    return pd.DataFrame(rows, columns=["cell", "rtt_ms", "loss_rate"])


def with_link_columns(samples: pd.DataFrame, meta: dict[str, Any]) -> pd.DataFrame:
    """`samples` plus `rtt_ms` and `loss_rate` columns taken from run.json's cells."""
    cols = link_columns(meta)
    base = samples.drop(columns=[c for c in ("rtt_ms", "loss_rate") if c in samples.columns])
    if cols.empty:
        return base
    return base.merge(cols, on="cell", how="left")
