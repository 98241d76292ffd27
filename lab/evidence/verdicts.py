"""Verdicts: is HTTP/3 better, worse or not measurably different from HTTP/2 on a metric?

For each workload × metric × condition (the values of the matrix axes that matter to that
workload; cells differing only in another workload's axes are pooled) × handshake mode, the
verdict is the ratio median(h3) / median(h2) of the per-repetition values, with a 95% bootstrap
interval resampling (cell, repetition) pairs — h2 and h3 of one repetition ran back to back on
the same link, so they are paired (only when no repetition has both protocols are the two sides
resampled on their own). The outcome, in this order:

- fewer than MIN_REPETITIONS pairs (or no interval) → "undecided";
- the interval contains 1 → "no significant difference";
- the difference of the medians is below the minimum effect (lab.evidence.effect: 10% and an
  absolute floor per unit, e.g. 1 ms) → "no meaningful difference";
- the interval entirely on the good side of 1 → "better", on the bad side → "worse".

Flags name what can make a verdict measure something else: a flag metric (unit `bool`, e.g.
`cpu_bound`, `congestion_limited`) set in one of its pairs, too few repetitions, a zero or
unpaired baseline. Verdicts are values, never exceptions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from lab.evidence.effect import is_meaningful
from lab.evidence.significance import (
    bootstrap_ratio,
    bootstrap_ratio_paired,
    drop_unstalled,
    per_repetition,
    relevant_axes,
)
from lab.evidence.stats import Interval
from lab.results.schema import AGGREGATE_METRICS, SAMPLE_METRICS

MIN_REPETITIONS = 3
Direction = Literal["lower", "higher"]
Outcome = Literal[
    "better", "worse", "no meaningful difference", "no significant difference", "undecided"
]
Pair = tuple[str, int]  # (cell, repetition)

FLAG_UNIT = "bool"  # a metric in this unit is a flag on its repetition, never compared
# What a set flag means for the numbers of its repetition (a flag metric not listed here is
# named without an explanation).
FLAG_MEANINGS: dict[str, str] = {
    "cpu_bound": "measures Python, not the protocol",
    "congestion_limited": "measures congestion control, not head-of-line blocking",
    "host_busy": "other processes took CPU: wall-clock times may be inflated",
}

HIGHER_IS_BETTER = frozenset({"goodput_mbit", "utilisation"})
# CPU seconds and the wall time they are shares of: context for the flags, not outcomes.
NOT_COMPARED = frozenset(m for m in AGGREGATE_METRICS if m.startswith("cpu_")) | {"workload_wall_s"}
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
# Beside the loss-anchored hol_spread (results schema 2) and only there: marks which definition a
# run's hol_spread has.
LOSS_ANCHORED_MARKER = "hol_losses"
_BOUND_SUFFIXES = ("_low", "_high")  # `<metric>_low`/`_high`: the bounds of `<metric>`'s interval


def direction(metric: str) -> Direction:
    """Which way is better: "higher" for goodput/utilisation, "lower" for everything else
    (latencies, completion times, HOL spread, stalled fractions, CPU seconds)."""
    return "higher" if metric in HIGHER_IS_BETTER else "lower"


@dataclass(frozen=True)
class Verdict:
    """h3 against h2 on one metric in one condition. `ratio` is h3/h2 (unitless)."""

    workload: str
    metric: str
    unit: str  # of the metric and of h2_median / h3_median ("ms", "fraction", ...)
    condition: dict[str, Any]  # axis → value; {} when the run has one condition
    mode: str | None  # handshake mode of h3 (effective: zero_rtt only with early data)
    h2_mode: str | None  # mode of the h2 baseline (differs for h3 zero_rtt: h2 resumed)
    implementation: str | None
    h2_median: float
    h3_median: float
    ratio: Interval
    n_pairs: int  # (cell, repetition) pairs with both protocols; unpaired: the smaller side
    outcome: Outcome
    flags: tuple[str, ...] = field(default=())
    cells: tuple[str, ...] = field(default=())  # the cells of its repetitions
    paired: bool = True  # False: no repetition had both protocols; sides resampled on their own

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


def decide(
    ratio: Interval, metric: str, n_pairs: int, *, h2_median: float, h3_median: float, unit: str
) -> Outcome:
    """The outcome of a ratio interval for `metric`, whose medians (in `unit`) are `h2_median`
    and `h3_median` (see the module docstring)."""
    if n_pairs < MIN_REPETITIONS or np.isnan(ratio.low) or np.isnan(ratio.high):
        return "undecided"
    if not ratio.excludes(1.0):
        return "no significant difference"
    if not is_meaningful(h2_median, h3_median, unit):
        return "no meaningful difference"
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


def flag_metrics(samples: pd.DataFrame) -> list[str]:
    """The flag metrics of `samples` (unit `bool`: cpu_bound, congestion_limited, ...), by name."""
    return sorted(str(m) for m in samples.loc[samples["unit"] == FLAG_UNIT, "metric"].unique())


def metrics_for(samples: pd.DataFrame, workload: str) -> list[str]:
    """The comparable metrics with data for `workload`, in HEADLINE_METRICS order first (CPU
    seconds and flag metrics are not compared)."""
    rows = samples[(samples["workload"] == workload) & samples["value"].notna()]
    present = set(rows["metric"].unique()) - NOT_COMPARED - set(flag_metrics(rows))
    ordered = [m for m in HEADLINE_METRICS if m in present]
    if "event_excess_ms" in present and not set(EXCESS_METRICS) & set(ordered):
        ordered.append("event_excess_ms")
    known = SAMPLE_METRICS | AGGREGATE_METRICS
    bounds = {m for m in present if m.endswith(_BOUND_SUFFIXES) and m.rsplit("_", 1)[0] in present}
    extra = sorted(m for m in present if m not in ordered and m not in _REDUNDANT | bounds)
    return ordered + [m for m in extra if m in known] + [m for m in extra if m not in known]


def defined_hol_spread(samples: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """The `hol_spread` rows of `rows` that mean something. The loss-anchored spread (results
    schema 2: `hol_losses` beside it) is written only where a loss was counted, and 0 is a real
    value there: every row counts. The older per-stalled-event spread is undefined where nothing
    stalled: those repetitions are dropped (lab.evidence.significance.drop_unstalled)."""
    if (samples["metric"] == LOSS_ANCHORED_MARKER).any():
        return rows
    return drop_unstalled(samples, rows)


def _h2_baseline(modes_h2: set[Any], mode: Any, forced: str | None) -> Any:
    if forced is not None:
        return forced
    if mode is None or mode in modes_h2:
        return mode
    if "resumed" in modes_h2:  # h2 has no 0-RTT: its best is a resumed TLS session
        return "resumed"
    return next(iter(sorted(modes_h2, key=str)), None)


FlaggedPairs = dict[str, dict[Pair, set[str]]]  # flag metric → pair → protocols that set it


def flagged_pairs(samples: pd.DataFrame, workload: str) -> FlaggedPairs:
    """Per flag metric of `workload`, the (cell, repetition) pairs where it is set (> 0.5) and
    by which protocols."""
    rows = samples[
        (samples["workload"] == workload)
        & (samples["unit"] == FLAG_UNIT)
        & (samples["value"] > 0.5)
    ]
    out: FlaggedPairs = {}
    for m, c, r, p in zip(
        rows["metric"], rows["cell"], rows["repetition"], rows["protocol"], strict=True
    ):
        out.setdefault(str(m), {}).setdefault((str(c), int(r)), set()).add(str(p))
    return out


def _flag_texts(flagged: FlaggedPairs, used: set[Pair], n: int, unit: str) -> list[str]:
    """e.g. "cpu_bound (h3 in 1 of 3 pairs): measures Python, not the protocol"."""
    out = []
    for metric, by_pair in sorted(flagged.items()):
        hits = [by_pair[p] for p in used if p in by_pair]
        if not hits:
            continue
        protocols = " and ".join(sorted(set().union(*hits)))
        meaning = FLAG_MEANINGS.get(metric)
        text = f"{metric} ({protocols} in {len(hits)} of {n} {unit})"
        out.append(f"{text}: {meaning}" if meaning else text)
    return out


def verdicts(
    samples: pd.DataFrame,
    *,
    workloads: Iterable[str] | None = None,
    metrics: Sequence[str] | None = None,
    h2_mode: str | None = None,
    seed: int = 0,
) -> list[Verdict]:
    """Every verdict of a run's samples (results format), per workload × metric × condition
    × mode × implementation. `metrics` defaults to `metrics_for(samples, workload)`. Each h3
    mode is compared with the same h2 mode, or h2 `resumed` for 0-RTT (h2 has none);
    `h2_mode` compares every h3 mode with that h2 mode instead (e.g. "cold")."""
    out: list[Verdict] = []
    wls = list(workloads) if workloads is not None else sorted(samples["workload"].unique())
    for wl in wls:
        rows_wl = samples[samples["workload"] == wl]
        if rows_wl.empty:
            continue
        cond_axes = relevant_axes(rows_wl, wl)
        flagged = flagged_pairs(samples, wl)
        for metric in metrics if metrics is not None else metrics_for(samples, wl):
            rows = rows_wl[rows_wl["metric"] == metric]
            if metric == "hol_spread":
                rows = defined_hol_spread(samples, rows)
            if rows.empty:
                continue
            context = _Context(wl, metric, str(rows["unit"].iloc[0]), flagged, h2_mode, seed)
            out.extend(_metric_verdicts(rows, cond_axes, context))
    return out


@dataclass(frozen=True)
class _Context:
    """What every verdict of one workload × metric shares."""

    workload: str
    metric: str
    unit: str
    flagged: FlaggedPairs
    h2_mode: str | None
    seed: int


def _metric_verdicts(rows: pd.DataFrame, cond_axes: list[str], ctx: _Context) -> list[Verdict]:
    rows = rows.assign(_mode=effective_mode(rows))
    impl = ["implementation"] if "implementation" in rows.columns else []
    group = [*impl, *cond_axes]
    reps = per_repetition(rows, ctx.metric, by=[*group, "protocol", "_mode", "cell"])
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
            base = _h2_baseline(modes_h2, mode, ctx.h2_mode)
            a = h3[h3["_mode"] == mode] if mode is not None else h3
            b = h2[h2["_mode"] == base] if base is not None else h2
            out.append(_verdict(a, b, condition, mode, base, implementation, ctx))
    return out


def _pairs_of(frame: pd.DataFrame) -> set[Pair]:
    return {(str(c), int(r)) for c, r in zip(frame["cell"], frame["repetition"], strict=True)}


def _verdict(
    h3: pd.DataFrame,
    h2: pd.DataFrame,
    condition: dict[str, Any],
    mode: Any,
    h2_mode: Any,
    implementation: Any,
    ctx: _Context,
) -> Verdict:
    pairs = h3[["cell", "repetition", "value"]].merge(
        h2[["cell", "repetition", "value"]], on=["cell", "repetition"], suffixes=("_h3", "_h2")
    )
    paired = len(pairs) > 0 or h3.empty or h2.empty
    flags: list[str] = []
    if paired:
        v3, v2 = pairs["value_h3"].to_numpy(float), pairs["value_h2"].to_numpy(float)
        ratio = bootstrap_ratio_paired(v3, v2, seed=ctx.seed)
        used = _pairs_of(pairs)
        n = len(pairs)
    else:  # the repetitions do not pair: compare the two sides as independent samples
        v3, v2 = h3["value"].to_numpy(float), h2["value"].to_numpy(float)
        ratio = bootstrap_ratio(v3, v2, seed=ctx.seed)
        used = _pairs_of(h3) | _pairs_of(h2)
        n = min(v3.size, v2.size)
        flags.append("unpaired: no repetition has data from both protocols")
    if n == 0:
        flags.append("no repetition has data from both protocols")
    elif n < MIN_REPETITIONS:
        flags.append(f"too few repetitions ({n} < {MIN_REPETITIONS})")
    flags += _flag_texts(
        ctx.flagged, used, n if paired else len(used), "pairs" if paired else "repetitions"
    )
    h2_med = float(np.median(v2)) if n else float("nan")
    h3_med = float(np.median(v3)) if n else float("nan")
    if n and h2_med == 0:
        flags.append("h2 median is 0: no ratio")
    return Verdict(
        workload=ctx.workload,
        metric=ctx.metric,
        unit=ctx.unit,
        condition=condition,
        mode=None if mode is None else str(mode),
        h2_mode=None if h2_mode is None else str(h2_mode),
        implementation=None if implementation is None else str(implementation),
        h2_median=h2_med,
        h3_median=h3_med,
        ratio=ratio,
        n_pairs=n,
        outcome=decide(ratio, ctx.metric, n, h2_median=h2_med, h3_median=h3_med, unit=ctx.unit),
        flags=tuple(flags),
        cells=tuple(sorted({c for c, _ in used})),
        paired=paired,
    )


def verdict_frame(vs: Iterable[Verdict]) -> pd.DataFrame:
    """Verdicts as a table (one row each) for reports and notebooks."""
    rows = [
        {
            "workload": v.workload,
            "metric": v.metric,
            "unit": v.unit,
            "condition": ", ".join(f"{k}={val}" for k, val in v.condition.items()),
            "mode": v.mode,
            "implementation": v.implementation,
            "h2_median": v.h2_median,
            "h3_median": v.h3_median,
            "ratio": v.ratio.point,
            "ratio_low": v.ratio.low,
            "ratio_high": v.ratio.high,
            "n_pairs": v.n_pairs,
            "paired": v.paired,
            "better_when": direction(v.metric),
            "outcome": v.outcome,
            "flags": "; ".join(v.flags),
        }
        for v in vs
    ]
    return pd.DataFrame(rows)
