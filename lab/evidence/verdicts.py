"""Verdicts: is HTTP/3 better, worse or not measurably different from HTTP/2 on a metric?

For each workload × metric × condition (the values of the matrix axes that matter to that
workload; cells differing only in another workload's axes are pooled) × handshake mode, the
verdict is the ratio median(h3) / median(h2) of the per-repetition values, with a 95% bootstrap
interval resampling (cell, repetition) pairs — h2 and h3 of one repetition ran back to back on
the same link, so they are paired. The interval decides: entirely on the good side of 1 →
"better", entirely on the bad side → "worse", containing 1 → "no significant difference".
Fewer than MIN_REPETITIONS pairs → "undecided". Verdicts are values, never exceptions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from lab.evidence.significance import (
    bootstrap_ratio_paired,
    cpu_bound_rows,
    drop_unstalled,
    per_repetition,
    relevant_axes,
)
from lab.evidence.stats import Interval
from lab.results.schema import AGGREGATE_METRICS, SAMPLE_METRICS

MIN_REPETITIONS = 3
Direction = Literal["lower", "higher"]
Outcome = Literal["better", "worse", "no significant difference", "undecided"]

HIGHER_IS_BETTER = frozenset({"goodput_mbit", "utilisation"})
NOT_COMPARED = frozenset(m for m in AGGREGATE_METRICS if m.startswith("cpu_"))
# The watch excess percentiles of the results schema, low to high (p50, p95, p99, p999: a
# longer name is a higher percentile).
EXCESS_METRICS: tuple[str, ...] = tuple(
    sorted((m for m in AGGREGATE_METRICS if m.startswith("excess_p")), key=lambda m: (len(m), m))
)
# Reading order of the metrics in verdict tables; `ttfb_rtt` (same ratio as ttfb_ms) and
# `event_latency_ms` (dominated by the base delay; the excess is the signal) are left out.
HEADLINE_METRICS: tuple[str, ...] = (
    "ttfb_ms",
    "goodput_mbit",
    "utilisation",
    "completion_ms",
    "hol_spread",
    "stalled_fraction",
    *EXCESS_METRICS,
    "rpc_p95_ms",
    "rpc_delayed_fraction",
    "rpc_latency_ms",
)
_REDUNDANT = frozenset({"ttfb_rtt", "event_latency_ms", "event_excess_ms"})


def direction(metric: str) -> Direction:
    """Which way is better: "higher" for goodput/utilisation, "lower" for everything else
    (latencies, completion times, HOL spread, stalled fractions, CPU seconds)."""
    return "higher" if metric in HIGHER_IS_BETTER else "lower"


@dataclass(frozen=True)
class Verdict:
    """h3 against h2 on one metric in one condition. `ratio` is h3/h2 (unitless)."""

    workload: str
    metric: str
    condition: dict[str, Any]  # axis → value; {} when the run has one condition
    mode: str | None  # handshake mode of h3 (effective: zero_rtt only with early data)
    h2_mode: str | None  # mode of the h2 baseline (differs for h3 zero_rtt: h2 resumed)
    implementation: str | None
    h2_median: float
    h3_median: float
    ratio: Interval
    n_pairs: int  # (cell, repetition) pairs with both protocols
    outcome: Outcome
    flags: tuple[str, ...] = field(default=())

    @property
    def decided(self) -> bool:
        """True for "better" or "worse"."""
        return self.outcome in ("better", "worse")

    def ratio_text(self, digits: int = 2) -> str:
        """e.g. "0.68 [0.61, 0.74]"; "n/a" when undefined."""
        r = self.ratio
        if np.isnan(r.point):
            return "n/a"
        if np.isnan(r.low):
            return f"{r.point:.{digits}f}"
        return f"{r.point:.{digits}f} [{r.low:.{digits}f}, {r.high:.{digits}f}]"


def decide(ratio: Interval, metric: str, n_pairs: int) -> Outcome:
    """The outcome of a ratio interval for `metric` (see the module docstring)."""
    if n_pairs < MIN_REPETITIONS or np.isnan(ratio.low) or np.isnan(ratio.high):
        return "undecided"
    if not ratio.excludes(1.0):
        return "no significant difference"
    h3_lower = ratio.high < 1.0
    return "better" if h3_lower == (direction(metric) == "lower") else "worse"


def effective_mode(rows: pd.DataFrame) -> pd.Series:
    """Handshake mode as measured: a zero_rtt attempt whose request did not arrive as early
    data (per the server) is "zero_rtt→1-RTT", never counted as 0-RTT; <NA> stays <NA>."""
    mode = (
        rows["mode"].astype("object")
        if "mode" in rows.columns
        else pd.Series(None, rows.index, dtype=object)
    )
    if "early_data" in rows.columns:
        early = rows["early_data"].astype("boolean").fillna(False).astype(bool)
        mode = mode.where(~((mode == "zero_rtt") & ~early), "zero_rtt→1-RTT")
    return mode.where(mode.notna(), None)


def metrics_for(samples: pd.DataFrame, workload: str) -> list[str]:
    """The comparable metrics with data for `workload`, in HEADLINE_METRICS order first."""
    rows = samples[(samples["workload"] == workload) & samples["value"].notna()]
    present = set(rows["metric"].unique()) - NOT_COMPARED
    ordered = [m for m in HEADLINE_METRICS if m in present]
    if "event_excess_ms" in present and not set(EXCESS_METRICS) & set(ordered):
        ordered.append("event_excess_ms")
    known = SAMPLE_METRICS | AGGREGATE_METRICS
    extra = sorted(m for m in present if m not in ordered and m not in _REDUNDANT)
    return ordered + [m for m in extra if m in known] + [m for m in extra if m not in known]


def _h2_baseline(modes_h2: set[Any], mode: Any) -> Any:
    if mode is None or mode in modes_h2:
        return mode
    if "resumed" in modes_h2:  # h2 has no 0-RTT: its best is a resumed TLS session
        return "resumed"
    return next(iter(sorted(modes_h2, key=str)), None)


def _cpu_bound_pairs(samples: pd.DataFrame, workload: str) -> set[tuple[str, int]]:
    rows = cpu_bound_rows(samples, workload)
    return {(str(c), int(r)) for c, r in zip(rows["cell"], rows["repetition"], strict=True)}


def verdicts(
    samples: pd.DataFrame,
    *,
    workloads: Iterable[str] | None = None,
    metrics: Sequence[str] | None = None,
    seed: int = 0,
) -> list[Verdict]:
    """Every verdict of a run's samples (results format), per workload × metric × condition
    × mode × implementation. `metrics` defaults to `metrics_for(samples, workload)`."""
    out: list[Verdict] = []
    wls = list(workloads) if workloads is not None else sorted(samples["workload"].unique())
    for wl in wls:
        rows_wl = samples[samples["workload"] == wl]
        if rows_wl.empty:
            continue
        cond_axes = relevant_axes(rows_wl, wl)
        bound = _cpu_bound_pairs(samples, wl)
        for metric in metrics if metrics is not None else metrics_for(samples, wl):
            rows = rows_wl[rows_wl["metric"] == metric]
            if metric == "hol_spread":
                rows = drop_unstalled(samples, rows)
            if rows.empty:
                continue
            out.extend(_metric_verdicts(rows, wl, metric, cond_axes, bound, seed))
    return out


def _metric_verdicts(
    rows: pd.DataFrame,
    workload: str,
    metric: str,
    cond_axes: list[str],
    bound: set[tuple[str, int]],
    seed: int,
) -> list[Verdict]:
    rows = rows.assign(_mode=effective_mode(rows))
    impl = ["implementation"] if "implementation" in rows.columns else []
    group = [*impl, *cond_axes]
    reps = per_repetition(rows, metric, by=[*group, "protocol", "_mode", "cell"])
    out = []
    groups = reps.groupby(group, dropna=False, sort=True) if group else [((), reps)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        implementation = key[0] if impl else None
        condition = dict(zip(cond_axes, key[len(impl) :], strict=True))
        h2 = g[g["protocol"] == "h2"]
        h3 = g[g["protocol"] == "h3"]
        modes_h2 = set(h2["_mode"].dropna().unique())
        h3_modes = sorted(h3["_mode"].dropna().unique(), key=str) or [None]
        for mode in h3_modes:
            base = _h2_baseline(modes_h2, mode)
            a = h3[h3["_mode"] == mode] if mode is not None else h3
            b = h2[h2["_mode"] == base] if base is not None else h2
            out.append(
                _verdict(a, b, workload, metric, condition, mode, base, implementation, bound, seed)
            )
    return out


def _verdict(
    h3: pd.DataFrame,
    h2: pd.DataFrame,
    workload: str,
    metric: str,
    condition: dict[str, Any],
    mode: Any,
    h2_mode: Any,
    implementation: Any,
    bound: set[tuple[str, int]],
    seed: int,
) -> Verdict:
    pairs = h3[["cell", "repetition", "value"]].merge(
        h2[["cell", "repetition", "value"]], on=["cell", "repetition"], suffixes=("_h3", "_h2")
    )
    n = len(pairs)
    ratio = bootstrap_ratio_paired(pairs["value_h3"], pairs["value_h2"], seed=seed)
    flags: list[str] = []
    if n == 0:
        flags.append("no repetition has data from both protocols")
    elif n < MIN_REPETITIONS:
        flags.append(f"too few repetitions ({n} < {MIN_REPETITIONS})")
    pair_set = {(str(c), int(r)) for c, r in zip(pairs["cell"], pairs["repetition"], strict=True)}
    if pair_set & bound:
        flags.append("cpu_bound: measures Python, not the protocol")
    h2_med = float(np.median(pairs["value_h2"])) if n else float("nan")
    h3_med = float(np.median(pairs["value_h3"])) if n else float("nan")
    if n and h2_med == 0:
        flags.append("h2 median is 0: no ratio")
    return Verdict(
        workload=workload,
        metric=metric,
        condition=condition,
        mode=None if mode is None else str(mode),
        h2_mode=None if h2_mode is None else str(h2_mode),
        implementation=None if implementation is None else str(implementation),
        h2_median=h2_med,
        h3_median=h3_med,
        ratio=ratio,
        n_pairs=n,
        outcome=decide(ratio, metric, n),
        flags=tuple(flags),
    )


def verdict_frame(vs: Iterable[Verdict]) -> pd.DataFrame:
    """Verdicts as a table (one row each) for reports and notebooks."""
    rows = [
        {
            "workload": v.workload,
            "metric": v.metric,
            "condition": ", ".join(f"{k}={val}" for k, val in v.condition.items()),
            "mode": v.mode,
            "implementation": v.implementation,
            "h2_median": v.h2_median,
            "h3_median": v.h3_median,
            "ratio": v.ratio.point,
            "ratio_low": v.ratio.low,
            "ratio_high": v.ratio.high,
            "n_pairs": v.n_pairs,
            "better_when": direction(v.metric),
            "outcome": v.outcome,
            "flags": "; ".join(v.flags),
        }
        for v in vs
    ]
    return pd.DataFrame(rows)
