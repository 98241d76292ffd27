"""The lab's measurement definitions (DESIGN.md "Measurement definitions"), as pure functions.

No I/O, no clock reads: timestamps come in as integer nanoseconds of one host clock
(CLOCK_MONOTONIC), durations go out in milliseconds, rates in Mbit/s (10⁶ bit/s).
docs/metrics.md states every definition with its units and edge cases.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import overload

import numpy as np
import numpy.typing as npt
import pandas as pd

ArrayLike = npt.ArrayLike
FloatOrArray = float | npt.NDArray[np.float64]
Scalar = int | float  # one timestamp (ns), count or rate: the result is a float

EXCESS_PERCENTILES: tuple[tuple[str, float], ...] = (
    ("excess_p50_ms", 50.0),
    ("excess_p95_ms", 95.0),
    ("excess_p99_ms", 99.0),
    ("excess_p999_ms", 99.9),
)
WATCH_COLUMNS: tuple[str, ...] = ("stream", "seq", "sent_ns", "received_ns")
CPU_BOUND_LIMIT = 0.9  # fraction of one core


def _out(x: npt.NDArray[np.float64]) -> FloatOrArray:
    """A 0-d result as a Python float, anything else as the array."""
    return float(x) if x.ndim == 0 else x


def _duration_ms(start_ns: ArrayLike, end_ns: ArrayLike, what: str) -> npt.NDArray[np.float64]:
    start = np.asarray(start_ns, dtype=np.int64)
    end = np.asarray(end_ns, dtype=np.int64)
    delta = end - start  # exact in int64, then to float ms
    if np.any(delta < 0):
        raise ValueError(f"{what}: end before start")
    return delta.astype(np.float64) / 1e6


# --- TTFB, goodput, utilisation, completion -----------------------------------------------
# Scalars in give floats out, arrays give arrays (the overloads tell the type checker).
@overload
def ttfb(
    connect_start_ns: Scalar, first_byte_ns: Scalar, base_rtt_ms: float
) -> tuple[float, float]: ...
@overload
def ttfb(
    connect_start_ns: ArrayLike, first_byte_ns: ArrayLike, base_rtt_ms: float
) -> tuple[FloatOrArray, FloatOrArray]: ...
def ttfb(
    connect_start_ns: ArrayLike, first_byte_ns: ArrayLike, base_rtt_ms: float
) -> tuple[FloatOrArray, FloatOrArray]:
    """Time to first byte: (ms, base-RTT units).

    From the moment the client starts opening the connection (before the socket connects) to
    the first byte of the response body. Scalars give floats, arrays give arrays. With
    `base_rtt_ms` = 0 (no configured delay) the RTT units are NaN (undefined).
    """
    ms = _duration_ms(connect_start_ns, first_byte_ns, "ttfb")
    if base_rtt_ms < 0:
        raise ValueError("base_rtt_ms must be ≥ 0")
    rtt = ms / base_rtt_ms if base_rtt_ms > 0 else np.full_like(ms, np.nan)
    return _out(ms), _out(rtt)


@overload
def goodput_mbit(body_bytes: Scalar, request_sent_ns: Scalar, last_byte_ns: Scalar) -> float: ...
@overload
def goodput_mbit(
    body_bytes: ArrayLike, request_sent_ns: ArrayLike, last_byte_ns: ArrayLike
) -> FloatOrArray: ...
def goodput_mbit(
    body_bytes: ArrayLike, request_sent_ns: ArrayLike, last_byte_ns: ArrayLike
) -> FloatOrArray:
    """Goodput in Mbit/s: response body bytes × 8 / (last byte − request sent).

    A zero interval raises ValueError (no rate can be measured from one instant).
    """
    seconds = _duration_ms(request_sent_ns, last_byte_ns, "goodput") / 1e3
    if np.any(seconds == 0):
        raise ValueError("goodput: last byte at the instant the request was sent")
    bits = np.asarray(body_bytes, dtype=np.float64) * 8.0
    return _out(bits / seconds / 1e6)


@overload
def utilisation(goodput_mbit: Scalar, rate_mbit: float | None) -> float: ...
@overload
def utilisation(goodput_mbit: ArrayLike, rate_mbit: float | None) -> FloatOrArray: ...
def utilisation(goodput_mbit: ArrayLike, rate_mbit: float | None) -> FloatOrArray:
    """Goodput as a fraction of the link rate (Mbit/s ÷ Mbit/s); NaN when the link is unlimited
    (`rate_mbit` None)."""
    g = np.asarray(goodput_mbit, dtype=np.float64)
    if rate_mbit is None:
        return _out(np.full_like(g, np.nan))
    if rate_mbit <= 0:
        raise ValueError("rate_mbit must be > 0")
    return _out(g / rate_mbit)


@overload
def completion_ms(start_ns: Scalar, done_ns: Scalar) -> float: ...
@overload
def completion_ms(start_ns: ArrayLike, done_ns: ArrayLike) -> FloatOrArray: ...
def completion_ms(start_ns: ArrayLike, done_ns: ArrayLike) -> FloatOrArray:
    """Completion time(s) in ms: last byte of a stream's response − the stream's start
    (request sent, or a common start for all streams of a batch)."""
    return _out(_duration_ms(start_ns, done_ns, "completion"))


def stream_completion_ms(frame: pd.DataFrame) -> pd.Series:
    """Per-stream completion times (ms) from a frame with columns stream, start_ns, done_ns;
    indexed by stream."""
    ms = _duration_ms(frame["start_ns"].to_numpy(), frame["done_ns"].to_numpy(), "completion")
    return pd.Series(
        ms, index=pd.Index(frame["stream"].to_numpy(), name="stream"), name="completion_ms"
    )


def cpu_bound(
    cpu_seconds: float | Iterable[float], wall_seconds: float, limit: float = CPU_BOUND_LIMIT
) -> bool:
    """True when any process used more than `limit` of one core: user+sys CPU seconds ÷ wall
    seconds > limit. Its numbers would then measure Python, not the protocol."""
    if wall_seconds <= 0:
        raise ValueError("wall_seconds must be > 0")
    if isinstance(cpu_seconds, int | float):
        values = np.array([cpu_seconds], dtype=np.float64)
    else:
        values = np.fromiter(cpu_seconds, dtype=np.float64)
    return bool(np.any(values / wall_seconds > limit))


# --- watch / HOL blocking -----------------------------------------------------------------
@dataclass(frozen=True)
class WatchMetrics:
    """HOL-blocking aggregates of one watch run (one cell, repetition and protocol)."""

    n_streams: int  # N, the streams opened (not only those that delivered events)
    n_events: int
    n_stalled: int
    threshold_ms: float  # an event is stalled when its excess exceeds this
    min_latency_ms: float  # the cell's minimum event latency (excess = latency − this)
    stalled_fraction: float  # n_stalled / n_events
    hol_spread: float  # mean over stalled events of (overlapping stalled streams) / N; 0 if none
    excess_p50_ms: float
    excess_p95_ms: float
    excess_p99_ms: float
    excess_p999_ms: float

    def aggregate_rows(self) -> list[tuple[str, float, str]]:
        """(metric, value, unit) rows as samples.parquet names them."""
        return [
            ("hol_spread", self.hol_spread, "fraction"),
            ("stalled_fraction", self.stalled_fraction, "fraction"),
            ("excess_p50_ms", self.excess_p50_ms, "ms"),
            ("excess_p95_ms", self.excess_p95_ms, "ms"),
            ("excess_p99_ms", self.excess_p99_ms, "ms"),
            ("excess_p999_ms", self.excess_p999_ms, "ms"),
        ]


def watch_metrics(
    events: pd.DataFrame,
    n_streams: int,
    base_rtt_ms: float,
    threshold_ms: float | None = None,
) -> tuple[WatchMetrics, pd.DataFrame]:
    """HOL blocking from watch events.

    `events`: one row per event, columns stream, seq, sent_ns, received_ns (one host clock).
    Event latency = received − sent; excess = latency − the minimum latency of all `events`
    passed (the cell); stalled when excess > `threshold_ms` (default ½ `base_rtt_ms`). For
    each stalled event, the distinct streams (its own included) having a stalled event whose
    closed [sent, received] interval overlaps its own are counted; HOL spread = mean of that
    count ÷ `n_streams` — 0.0 when nothing stalled. Excess percentiles use linear
    interpolation over all events.

    Returns the aggregates and a per-event frame (same index and order as `events`) with the
    added columns latency_ms, excess_ms, stalled (bool) and overlap_streams (0 when not
    stalled). Cost: O(E log E) per stream with stalled events.
    """
    missing = [c for c in WATCH_COLUMNS if c not in events.columns]
    if missing:
        raise ValueError(f"watch events lack column(s) {missing}")
    if len(events) == 0:
        raise ValueError("no watch events")
    if n_streams < 1:
        raise ValueError("n_streams must be ≥ 1")
    threshold = base_rtt_ms / 2 if threshold_ms is None else float(threshold_ms)
    if threshold < 0:
        raise ValueError("threshold_ms must be ≥ 0")

    stream = events["stream"].to_numpy()
    sent = events["sent_ns"].to_numpy(dtype=np.int64)
    received = events["received_ns"].to_numpy(dtype=np.int64)
    latency = _duration_ms(sent, received, "event latency")
    distinct = pd.unique(stream)
    if len(distinct) > n_streams:
        raise ValueError(f"events on {len(distinct)} streams but n_streams={n_streams}")

    min_latency = float(latency.min())
    excess = latency - min_latency
    stalled = excess > threshold
    overlap = overlapping_streams(stream[stalled], sent[stalled], received[stalled])
    overlap_all = np.zeros(len(events), dtype=np.int64)
    overlap_all[stalled] = overlap

    n_stalled = int(stalled.sum())
    spread = float(overlap.mean() / n_streams) if n_stalled else 0.0
    pct = np.percentile(excess, [p for _, p in EXCESS_PERCENTILES])
    metrics = WatchMetrics(
        n_streams=int(n_streams),
        n_events=len(events),
        n_stalled=n_stalled,
        threshold_ms=threshold,
        min_latency_ms=min_latency,
        stalled_fraction=n_stalled / len(events),
        hol_spread=spread,
        excess_p50_ms=float(pct[0]),
        excess_p95_ms=float(pct[1]),
        excess_p99_ms=float(pct[2]),
        excess_p999_ms=float(pct[3]),
    )
    per_event = events.assign(
        latency_ms=latency, excess_ms=excess, stalled=stalled, overlap_streams=overlap_all
    )
    return metrics, per_event


def overlapping_streams(
    stream: ArrayLike, start_ns: ArrayLike, end_ns: ArrayLike
) -> npt.NDArray[np.int64]:
    """For each interval, the number of distinct streams (its own included) that have an
    interval overlapping it (closed intervals: touching counts).

    Per stream: intervals sorted by start with the running maximum of their ends; stream k
    overlaps [s, e] iff among its intervals starting at or before e the largest end is ≥ s.
    """
    stream = np.asarray(stream)
    start = np.asarray(start_ns, dtype=np.int64)
    end = np.asarray(end_ns, dtype=np.int64)
    counts = np.zeros(len(stream), dtype=np.int64)
    if len(stream) == 0:
        return counts
    codes, _ = pd.factorize(stream)
    order = np.lexsort((start, codes))
    codes_sorted = codes[order]
    bounds = np.flatnonzero(np.diff(codes_sorted)) + 1
    for group in np.split(order, bounds):
        s_k = start[group]  # sorted by start within the stream
        max_end = np.maximum.accumulate(end[group])
        idx = np.searchsorted(s_k, end, side="right") - 1
        hit = idx >= 0
        hit[hit] = max_end[idx[hit]] >= start[hit]
        counts += hit
    return counts


# --- rpc under load -----------------------------------------------------------------------
@dataclass(frozen=True)
class RpcMetrics:
    """Small requests beside a bulk download on the same connection."""

    n_requests: int
    baseline_ms: float  # the unloaded latency the excess is measured from
    threshold_ms: float  # a request is delayed when latency − baseline > this
    delayed_fraction: float
    p95_ms: float

    def aggregate_rows(self) -> list[tuple[str, float, str]]:
        """(metric, value, unit) rows as samples.parquet names them."""
        return [
            ("rpc_delayed_fraction", self.delayed_fraction, "fraction"),
            ("rpc_p95_ms", self.p95_ms, "ms"),
        ]


def rpc_metrics(
    latencies_ms: ArrayLike,
    *,
    base_rtt_ms: float,
    baseline_ms: float | None = None,
    threshold_ms: float | None = None,
) -> RpcMetrics:
    """Fraction of small requests delayed and their p95 latency (ms).

    Delayed: latency − baseline > threshold; baseline defaults to the base RTT (an unloaded
    request on an open connection takes one RTT), threshold to ½ base RTT. p95 uses linear
    interpolation. Raises ValueError on no requests.
    """
    lat = np.asarray(latencies_ms, dtype=np.float64)
    if lat.size == 0:
        raise ValueError("no rpc latencies")
    baseline = base_rtt_ms if baseline_ms is None else float(baseline_ms)
    threshold = base_rtt_ms / 2 if threshold_ms is None else float(threshold_ms)
    return RpcMetrics(
        n_requests=int(lat.size),
        baseline_ms=baseline,
        threshold_ms=threshold,
        delayed_fraction=float(np.mean(lat - baseline > threshold)),
        p95_ms=float(np.percentile(lat, 95)),
    )
