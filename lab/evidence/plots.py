"""Plots of a run's samples (matplotlib). Each plot function takes a samples DataFrame in the
results format (long: one row per sample, see lab/results/schema.py) and an `ax`, draws on it and
returns the `ax`. When the run has no data for a plot, the function writes "no data" on the axes
and returns it (never raises), so a report or a notebook keeps going.

Intervals are 95% bootstrap intervals over repetitions (lab.evidence.significance).

A plot against an axis (TTFB against RTT, goodput against loss, HOL spread against streams) draws
lines only when the run has more than one value of that axis; with a single value it draws one
point per series side by side (the value named in the title), since a line against one value
means nothing, and constant references (1 RTT, 1/N) become horizontal lines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lab.evidence.significance import bootstrap_median, per_repetition, relevant_axes
from lab.evidence.verdicts import defined_hol_spread, effective_mode

PROTOCOL_COLORS = {"h2": "#1f77b4", "h3": "#d95f02"}
MODE_MARKERS = {"cold": "o", "resumed": "s", "zero_rtt": "^", "zero_rtt→1-RTT": "v"}
LINESTYLES = ("-", "--", ":", "-.")


# --- helpers ------------------------------------------------------------------------------
def _empty(ax: Axes, title: str, why: str) -> Axes:
    ax.set_title(title)
    ax.text(0.5, 0.5, f"no data: {why}", ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


def _select(df: pd.DataFrame, workload: str | None, metric: str) -> pd.DataFrame:
    rows = df[df["metric"] == metric]
    if workload is not None:
        rows = rows[rows["workload"] == workload]
    return rows[rows["value"].notna()]


def _series_keys(rows: pd.DataFrame) -> list[str]:
    """protocol, plus implementation when the data holds more than one."""
    keys = ["protocol"]
    if "implementation" in rows.columns and rows["implementation"].nunique(dropna=True) > 1:
        keys.append("implementation")
    return keys


def _label(key: tuple[Any, ...] | Any) -> str:
    parts = key if isinstance(key, tuple) else (key,)
    return " ".join(str(p) for p in parts if not pd.isna(p))


def _color(protocol: object) -> str:
    return PROTOCOL_COLORS.get(str(protocol), "#555555")


def _summarise_x(rows: pd.DataFrame, x: str, keys: list[str], metric: str) -> pd.DataFrame:
    """Per series × x value: median over repetitions (of per-repetition medians) with a 95%
    bootstrap interval. Columns: keys, x, median, low, high, n."""
    reps = per_repetition(rows, metric, by=[*keys, x])
    out = []
    for group, g in reps.groupby([*keys, x], dropna=False, sort=True):
        iv = bootstrap_median(g["value"].to_numpy())
        out.append((*group, iv.point, iv.low, iv.high, len(g)))
    return pd.DataFrame(out, columns=[*keys, x, "median", "low", "high", "n"])


def _errorbar(ax: Axes, s: pd.DataFrame, x: str, scale: float = 1.0, **kw: Any) -> None:
    s = s.sort_values(x)
    xs = s[x].to_numpy(dtype=float) * scale
    med = s["median"].to_numpy(dtype=float)
    low = np.where(np.isnan(s["low"]), med, s["low"])
    high = np.where(np.isnan(s["high"]), med, s["high"])
    yerr = np.vstack([np.clip(med - low, 0, None), np.clip(high - med, 0, None)])
    ax.errorbar(xs, med, yerr=yerr, capsize=4, linewidth=1.6, markersize=6, **kw)


def _rtt_per_cell(df: pd.DataFrame, workload: str | None) -> pd.Series:
    """Base RTT (ms) per cell: the `rtt_ms` column when present, else median(ttfb_ms) /
    median(ttfb_rtt) of the cell (exact, because ttfb_rtt = ttfb_ms / RTT for every sample)."""
    if "rtt_ms" in df.columns and df["rtt_ms"].notna().any():
        return df.groupby("cell")["rtt_ms"].first()
    ms = _select(df, workload, "ttfb_ms").groupby("cell")["value"].median()
    rtt = _select(df, workload, "ttfb_rtt").groupby("cell")["value"].median()
    return (ms / rtt).dropna()


def _loss_column(df: pd.DataFrame) -> str | None:
    if "loss_rate" in df.columns and df["loss_rate"].notna().any():
        return "loss_rate"
    axes = [c for c in df.columns if str(c).endswith("loss.rate")]
    return axes[0] if axes else None


def _streams_column(df: pd.DataFrame, workload: str) -> pd.Series:
    """Stream count per cell: the `<workload>.streams` axis when present, else the number of
    distinct streams that carried samples in the cell."""
    col = f"{workload}.streams"
    if col in df.columns and df[col].notna().any():
        return df.groupby("cell")[col].first().astype(float)
    rows = df[(df["workload"] == workload) & df["stream"].notna()]
    return rows.groupby("cell")["stream"].nunique().astype(float)


def _ecdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.sort(values)
    return x, np.arange(1, x.size + 1) / x.size


_DERIVED = ("rtt_ms", "loss_rate", "n_streams", "hs_mode")


def _axes(rows: pd.DataFrame, workload: str | None, x: str | None = None) -> list[str]:
    return relevant_axes(rows, workload, x, ignore=_DERIVED)


def _axis_label(col: str, value: Any) -> str:
    if str(col).endswith("loss.rate"):
        return f"loss {float(value) * 100:g}%"
    if str(col).endswith("streams"):
        return f"{int(value)} stream{'s' if int(value) != 1 else ''}"
    return f"{str(col).rsplit('.', 1)[-1]}={value}"


def _conditions(
    rows: pd.DataFrame, axes: list[str], max_levels: int, prefer: str = "max"
) -> tuple[pd.DataFrame, list[str], str]:
    """Keep at most `max_levels` combinations of the varying `axes`: fix axes (last first) to
    their max (or min) value until few enough remain. Returns (rows, axes still varying,
    a note naming the fixed values, "" when none)."""
    axes = [a for a in axes if rows[a].nunique(dropna=True) > 1]
    fixed = []
    while axes and len(rows[axes].drop_duplicates()) > max_levels:
        a = axes.pop()
        v = rows[a].max() if prefer == "max" else rows[a].min()
        rows = rows[rows[a] == v]
        fixed.append(_axis_label(a, v))
    return rows, axes, ", ".join(fixed)


def _cond_label(axes: list[str], values: tuple[Any, ...]) -> str:
    return ", ".join(_axis_label(a, v) for a, v in zip(axes, values, strict=True))


def _levels(frame: pd.DataFrame, cond: list[str]) -> list[tuple[Any, ...]]:
    """The distinct values of the condition axes `cond`, in order of appearance."""
    return list(frame[cond].drop_duplicates().itertuples(index=False)) if cond else [()]


def _styled(
    key: tuple[Any, ...], n_keys: int, cond: list[str], levels: list[tuple[Any, ...]]
) -> tuple[str, str]:
    """Legend label and line style of the series `key` = (*series keys, *condition values):
    the series keys (protocol, implementation) name it; each condition level has its own line
    style, the position of its values in `levels`."""
    label = _label(key[:n_keys])
    if not cond:
        return label, "-"
    level = tuple(key[n_keys:])
    style = LINESTYLES[levels.index(level) % len(LINESTYLES)]
    return f"{label}, {_cond_label(cond, level)}", style


def _title(base: str, note: str) -> str:
    return f"{base} ({note})" if note else base


def _summary_series(
    ax: Axes,
    summary: pd.DataFrame,
    x: str,
    keys: list[str],
    cond: list[str],
    *,
    scale: float = 1.0,
) -> None:
    """One error-bar line per series of a `_summarise_x` table: colour by protocol, line style
    by condition level."""
    levels = _levels(summary, cond)
    for key, s in summary.groupby([*keys, *cond], sort=True):
        label, style = _styled(key, len(keys), cond, levels)
        _errorbar(ax, s, x, scale=scale, color=_color(key[0]), marker="o", ls=style, label=label)


def _single_valued(summary: pd.DataFrame, x: str) -> bool:
    """True when the plot's x axis has one value: draw points, not lines (module docstring)."""
    return bool(summary[x].nunique(dropna=True) == 1)


def _points(
    ax: Axes,
    summary: pd.DataFrame,
    keys: list[str],
    cond: list[str],
    marker: Callable[[tuple[Any, ...]], str] = lambda key: "o",
) -> None:
    """One point with its 95% interval per series of a `_summarise_x` table whose x has a
    single value, side by side at positions 0, 1, …, each named by a tick label; no line."""
    levels = _levels(summary, cond)
    labels = []
    for i, (key, s) in enumerate(summary.groupby([*keys, *cond], sort=True)):
        label, _ = _styled(key, len(keys), cond, levels)
        med, low, high = (float(s[c].iloc[0]) for c in ("median", "low", "high"))
        low, high = (med if np.isnan(low) else low), (med if np.isnan(high) else high)
        yerr = [[max(med - low, 0.0)], [max(high - med, 0.0)]]
        ax.errorbar(
            [i], [med], yerr=yerr, capsize=4, markersize=7, linestyle="none",
            color=_color(key[0]), marker=marker(key), label=label,
        )  # fmt: skip
        labels.append(label.replace(", ", "\n"))
    ax.set_xticks(range(len(labels)), labels, fontsize="small")
    ax.set_xlim(-0.6, len(labels) - 0.4)


def _notes(*parts: str) -> str:
    return ", ".join(p for p in parts if p)


def _reference_legend(ax: Axes, **kw: Any) -> None:
    """A legend of the reference lines only (the points are named by their tick labels)."""
    handles = [ln for ln in ax.get_lines() if not str(ln.get_label()).startswith("_")]
    ax.legend(handles=handles, **kw)


# --- the plots ----------------------------------------------------------------------------
def plot_ttfb(df: pd.DataFrame, ax: Axes, *, workload: str | None = "handshake") -> Axes:
    """TTFB (ms) against base RTT (ms), one line per protocol × handshake mode, with medians
    over repetitions, 95% intervals and reference lines at 1, 2 and 3 RTT (with a single RTT:
    one point per protocol × mode and horizontal references). Other axes are fixed at their
    lowest value (textbook TTFB is without loss), named in the title."""
    title = "Time to first byte by handshake mode"
    rows = _select(df, workload, "ttfb_ms")
    if rows.empty:
        return _empty(ax, title, "no ttfb_ms samples")
    rtt = _rtt_per_cell(df, workload)
    hs_mode = effective_mode(rows).fillna("cold")  # a TTFB sample without a mode is a cold one
    rows = rows.assign(rtt_ms=rows["cell"].map(rtt), hs_mode=hs_mode)
    rows = rows[rows["rtt_ms"].notna()]
    if rows.empty:
        return _empty(ax, title, "base RTT unknown (no rtt_ms / ttfb_rtt)")
    rows, _, note = _conditions(rows, _axes(rows, workload, "rtt_ms"), 1, prefer="min")
    keys = [*_series_keys(rows), "hs_mode"]
    summary = _summarise_x(rows, "rtt_ms", keys, "ttfb_ms")
    if _single_valued(summary, "rtt_ms"):
        rtt_ms = float(summary["rtt_ms"].iloc[0])
        for k, style in zip((1, 2, 3), (":", "--", "-."), strict=True):
            ax.axhline(k * rtt_ms, color="0.6", linestyle=style, linewidth=1, label=f"{k} RTT")
        _points(ax, summary, keys, [], marker=lambda key: MODE_MARKERS.get(str(key[-1]), "D"))
        ax.set_ylim(0, max(3.5 * rtt_ms, float(summary["high"].max()) * 1.1))
        ax.set_ylabel("TTFB (ms), median, 95% CI")
        ax.set_title(_title(title, _notes(f"base RTT {rtt_ms:g} ms", note)))
        ax.grid(True, axis="y", alpha=0.3)
        _reference_legend(ax, fontsize="small")
        return ax
    xmax = float(summary["rtt_ms"].max()) * 1.15 or 1.0
    xs = np.array([0.0, xmax])
    for k, style in zip((1, 2, 3), (":", "--", "-."), strict=True):
        ax.plot(xs, k * xs, color="0.6", linestyle=style, linewidth=1, label=f"{k} RTT")
    for key, s in summary.groupby(keys, sort=True):
        proto, mode = key[0], key[-1]
        _errorbar(
            ax,
            s,
            "rtt_ms",
            color=_color(proto),
            marker=MODE_MARKERS.get(str(mode), "D"),
            linestyle="-" if proto == "h3" else "--",
            label=_label(key),
        )
    ax.set_xlim(0, xmax)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("base RTT (ms)")
    ax.set_ylabel("TTFB (ms), median, 95% CI")
    ax.set_title(_title(title, note))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", ncols=2)
    return ax


def plot_goodput(df: pd.DataFrame, ax: Axes, *, workload: str | None = "bulk") -> Axes:
    """Goodput (Mbit/s) against loss rate (%), one line per protocol (line style per value of
    any other axis that matters), medians over repetitions with 95% bootstrap intervals; with a
    single loss rate one point per series."""
    title = "Goodput against loss"
    rows = _select(df, workload, "goodput_mbit")
    if rows.empty:
        return _empty(ax, title, "no goodput_mbit samples")
    xcol = _loss_column(rows)
    if xcol is None:
        rows = rows.assign(loss_rate=0.0)
        xcol = "loss_rate"
    rows = rows[rows[xcol].notna()]
    rows, cond, note = _conditions(rows, _axes(rows, workload, xcol), len(LINESTYLES))
    keys = _series_keys(rows)
    summary = _summarise_x(rows, xcol, [*keys, *cond], "goodput_mbit")
    if _single_valued(summary, xcol):
        loss = _axis_label("loss.rate", summary[xcol].iloc[0])
        _points(ax, summary, keys, cond)
        ax.set_ylabel("goodput (Mbit/s), median, 95% CI")
        ax.set_ylim(0, float(summary["high"].fillna(summary["median"]).max()) * 1.15 or 1.0)
        ax.set_title(_title("Goodput", _notes(loss, note)))
        ax.grid(True, axis="y", alpha=0.3)
        return ax
    _summary_series(ax, summary, xcol, keys, cond, scale=100.0)
    ax.set_xlim(-0.1, float(summary[xcol].max()) * 115 + 0.1)  # from 0 %, also for one value
    ax.set_xlabel("packet loss (%)")
    ax.set_ylabel("goodput (Mbit/s), median, 95% CI")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.15)  # headroom: a single point is not cut off
    ax.set_title(_title(title, note))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def _ecdf_lines(ax: Axes, rows: pd.DataFrame, workload: str | None) -> str:
    """One ECDF step line of `rows`' values (ms) per protocol series and condition (a line
    style per condition, at most four), on a symlog x axis from 0; the conditions' title note."""
    rows, cond, note = _conditions(rows, _axes(rows, workload), len(LINESTYLES))
    keys = _series_keys(rows)
    levels = _levels(rows[cond].sort_values(cond), cond)
    xmax = 0.0
    for key, g in rows.groupby([*keys, *cond], sort=True):
        x, y = _ecdf(g["value"].to_numpy(dtype=float))
        label, style = _styled(key, len(keys), cond, levels)
        ax.step(x, y, where="post", color=_color(key[0]), linestyle=style, label=label)
        xmax = max(xmax, float(x[-1]))
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(0, max(xmax * 1.1, 1.0))
    ax.set_ylim(0, 1.01)
    return note


def plot_excess_cdf(df: pd.DataFrame, ax: Axes, *, workload: str | None = "watch") -> Axes:
    """Empirical CDF of watch-event excess latency (ms) per protocol, all repetitions pooled;
    one line style per condition (e.g. stream count) when the run varies it, at most four
    (the others are fixed at their largest value, named in the title)."""
    title = "Watch-event excess latency (CDF)"
    rows = _select(df, workload, "event_excess_ms")
    if rows.empty:
        return _empty(ax, title, "no event_excess_ms samples")
    note = _ecdf_lines(ax, rows, workload)
    ax.set_xlabel("excess latency over the cell's minimum (ms, symlog)")
    ax.set_ylabel("fraction of events ≤ x")
    ax.set_title(_title(title, note))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    return ax


def departure_stamps(
    df: pd.DataFrame, workload: str | None = "watch"
) -> tuple[list[str], list[str]]:
    """(stamped, not stamped): the "implementation protocol" series with watch events, split by
    whether their server stamped departures (`event_queue_ms` rows; docs/metrics.md)."""
    events = _select(df, workload, "event_excess_ms")
    stamped = _select(df, workload, "event_queue_ms")
    keys = ["implementation", "protocol"] if "implementation" in df.columns else ["protocol"]
    have = set(stamped[keys].drop_duplicates().itertuples(index=False, name=None))
    every = events[keys].drop_duplicates().sort_values(keys).itertuples(index=False, name=None)
    series = [(k, " ".join(map(str, k))) for k in every]
    return [n for k, n in series if k in have], [n for k, n in series if k not in have]


def _time_went_cdf(
    df: pd.DataFrame, ax: Axes, workload: str | None, metric: str, title: str, xlabel: str
) -> Axes:
    """Empirical CDF of one part of the watch events' latency (`metric`, ms) per protocol, all
    repetitions pooled, a line style per condition (as `plot_excess_cdf`); series without
    departure stamps are named in the title, and with none at all the axes say so."""
    rows = _select(df, workload, metric)
    unstamped = departure_stamps(df, workload)[1]
    if rows.empty:
        why = "no departure stamps\n(the reference server stamps them; Go, Caddy, qh3 do not)"
        return _empty(ax, title, f"{why}\nnot stamped: {', '.join(unstamped) or 'all'}")
    note = _ecdf_lines(ax, rows, workload)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of events ≤ x")
    missing = f"not stamped: {', '.join(unstamped)}" if unstamped else ""
    ax.set_title(_title(title, _notes(note, missing)))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    return ax


def plot_queue_cdf(df: pd.DataFrame, ax: Axes, *, workload: str | None = "watch") -> Axes:
    """Where the time went, part 1: ECDF per protocol of the time each watch event spent queued
    at the sender (`event_queue_ms`: the server's write until its bytes left in a packet; ms)."""
    return _time_went_cdf(
        df,
        ax,
        workload,
        "event_queue_ms",
        "Watch events: time queued at the sender (CDF)",
        "write → bytes left the server (ms, symlog)",
    )


def plot_rest_cdf(df: pd.DataFrame, ax: Axes, *, workload: str | None = "watch") -> Axes:
    """Where the time went, part 2: ECDF per protocol of the rest of each watch event's latency
    (`event_rest_ms`: bytes left the server until the client had the event — the network and
    the receiver waiting for missing data; ms)."""
    return _time_went_cdf(
        df,
        ax,
        workload,
        "event_rest_ms",
        "Watch events: network and receiver (CDF)",
        "bytes left the server → event received (ms, symlog)",
    )


def plot_hol_spread(df: pd.DataFrame, ax: Axes, *, workload: str | None = "watch") -> Axes:
    """HOL spread against the number of streams, one line per protocol (line style per value of
    other axes, e.g. loss), medians over repetitions with 95% intervals; references: 1 (every
    stream waits: TCP) and 1/N (only the stream that lost data waits). With a single stream
    count: one point per series and the references as horizontal lines."""
    title = "Head-of-line blocking spread"
    rows = _select(df, workload, "hol_spread")
    if rows.empty:
        return _empty(ax, title, "no hol_spread aggregates")
    rows = defined_hol_spread(df, rows)
    if rows.empty:
        return _empty(ax, title, "no stalled events (HOL spread is undefined without stalls)")
    streams = _streams_column(df, workload or "watch")
    rows = rows.assign(n_streams=rows["cell"].map(streams))
    rows = rows[rows["n_streams"].notna()]
    if rows.empty:
        return _empty(ax, title, "stream count unknown")
    rows, cond, note = _conditions(rows, _axes(rows, workload, "n_streams"), 4)
    keys = _series_keys(rows)
    summary = _summarise_x(rows, "n_streams", [*keys, *cond], "hol_spread")
    if _single_valued(summary, "n_streams"):
        n = int(summary["n_streams"].iloc[0])
        ax.axhline(1.0, color="0.6", linestyle="--", label="1: all streams wait")
        if n > 1:
            ax.axhline(1 / n, color="0.6", linestyle=":", label=f"1/N = 1/{n}: one stream waits")
        _points(ax, summary, keys, cond)
        ax.set_ylim(0, 1.1)
        ax.set_ylabel("HOL spread (median, 95% CI)")
        ax.set_title(_title(title, _notes(_axis_label("streams", n), note)))
        ax.grid(True, axis="y", alpha=0.3)
        _reference_legend(ax, fontsize="small")
        return ax
    ns = np.array(sorted(summary["n_streams"].unique()), dtype=float)
    lo, hi = max(ns.min() / 1.5, 0.75), ns.max() * 1.5  # room around a single stream count
    grid = np.geomspace(lo, hi, 50)
    ax.plot(grid, np.ones_like(grid), color="0.6", linestyle="--", label="1: all streams wait")
    ax.plot(grid, 1 / grid, color="0.6", linestyle=":", label="1/N: one stream waits")
    _summary_series(ax, summary, "n_streams", keys, cond)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ns, [str(int(n)) for n in ns])
    ax.minorticks_off()
    ax.set_xlim(lo, hi)
    ax.set_ylim(0, 1.1)
    ax.set_xlabel("concurrent streams on the connection")
    ax.set_ylabel("HOL spread (median, 95% CI)")
    ax.set_title(_title(title, note))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return ax


def plot_rpc_delay(df: pd.DataFrame, ax: Axes, *, workload: str | None = "rpc_under_load") -> Axes:
    """Distribution of small-request latency (ms) beside a bulk download: one box per protocol
    and condition (e.g. loss rate), box p25–p75, whiskers p5–p95, a bar at p95."""
    title = "Small requests beside a bulk download"
    rows = _select(df, workload, "rpc_latency_ms")
    if rows.empty:
        return _empty(ax, title, "no rpc_latency_ms samples")
    rows, cond, note = _conditions(rows, _axes(rows, workload), 4)
    keys = _series_keys(rows)
    data, labels, colors = [], [], []
    for key, g in rows.groupby([*cond, *keys], sort=True):
        label = _label(key[len(cond) :])
        if cond:
            label += "\n" + _cond_label(cond, tuple(key[: len(cond)]))
        data.append(g["value"].to_numpy(dtype=float))
        labels.append(label)
        colors.append(_color(key[len(cond)]))
    box = ax.boxplot(data, whis=(5, 95), showfliers=False, patch_artist=True, widths=0.6)
    for patch, c in zip(box["boxes"], colors, strict=True):
        patch.set_facecolor(c)
        patch.set_alpha(0.45)
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize="small")
    for i, (d, c) in enumerate(zip(data, colors, strict=True), start=1):
        ax.plot([i], [np.percentile(d, 95)], marker="_", markersize=18, color=c)
    ax.set_ylim(bottom=0)
    ax.set_ylabel("request latency (ms)")
    ax.set_title(_title(title, note))
    ax.grid(True, axis="y", alpha=0.3)
    return ax


# --- what applies to which workload -------------------------------------------------------
@dataclass(frozen=True)
class PlotSpec:
    """A plot the report draws for a workload when `metric` has data."""

    name: str  # file stem
    workload: str
    metric: str
    draw: Callable[..., Axes]


PLOTS: tuple[PlotSpec, ...] = (
    PlotSpec("ttfb", "handshake", "ttfb_ms", plot_ttfb),
    PlotSpec("goodput", "bulk", "goodput_mbit", plot_goodput),
    PlotSpec("goodput_multiplex", "multiplex", "goodput_mbit", plot_goodput),
    PlotSpec("hol_spread", "watch", "hol_spread", plot_hol_spread),
    PlotSpec("excess_cdf", "watch", "event_excess_ms", plot_excess_cdf),
    PlotSpec("queue_cdf", "watch", "event_queue_ms", plot_queue_cdf),
    PlotSpec("rest_cdf", "watch", "event_rest_ms", plot_rest_cdf),
    PlotSpec("rpc_delay", "rpc_under_load", "rpc_latency_ms", plot_rpc_delay),
)


def plots_for(df: pd.DataFrame, workload: str) -> list[PlotSpec]:
    """The plots that have data for `workload` in `df`."""
    have = df[df["workload"] == workload]
    present = set(have.loc[have["value"].notna(), "metric"].unique())
    return [p for p in PLOTS if p.workload == workload and p.metric in present]


def figure(spec: PlotSpec, df: pd.DataFrame) -> Figure:
    """A new figure (7×4.2 in) with `spec` drawn on it. A plain Figure, not pyplot's: no
    backend or display needed, and nothing to close."""
    fig = Figure(figsize=(7, 4.2), dpi=110, layout="constrained")
    ax = fig.add_subplot()
    spec.draw(df, ax, workload=spec.workload)
    return fig
