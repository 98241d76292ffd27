"""The lab's measurement definitions (DESIGN.md "Measurement definitions"), as pure functions.

No I/O, no clock reads: timestamps come in as integer nanoseconds of one host clock
(CLOCK_MONOTONIC), durations go out in milliseconds, rates in Mbit/s (10⁶ bit/s).
docs/metrics.md states every definition with its units and edge cases.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np
import numpy.typing as npt
import pandas as pd

from lab.link.spec import PURE_ACK_MAX_BYTES

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
HOST_BUSY_LIMIT = 0.5  # cores used by processes other than server, client and emulator


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


def host_busy(
    other_cpu_seconds: float, wall_seconds: float, limit: float = HOST_BUSY_LIMIT
) -> bool:
    """True when processes other than the server, the client and the emulator used more than
    `limit` cores on average over the wall time (their CPU seconds ÷ wall seconds > limit):
    they compete with the ones measured, so wall-clock times (TTFB, latencies) may be inflated.
    The lab's own runner and samplers count as other (about 0.1 core here)."""
    if wall_seconds <= 0:
        raise ValueError("wall_seconds must be > 0")
    return other_cpu_seconds / wall_seconds > limit


# --- watch: latency, excess, stalls --------------------------------------------------------
@dataclass(frozen=True)
class WatchMetrics:
    """Latency aggregates of one watch run (one cell, repetition and protocol); the HOL
    blocking itself is measured per loss (`hol_losses`)."""

    n_streams: int  # N, the streams opened (not only those that delivered events)
    n_events: int
    n_stalled: int
    threshold_ms: float  # an event is stalled when its excess exceeds this
    min_latency_ms: float  # the cell's minimum event latency (excess = latency − this)
    stalled_fraction: float  # n_stalled / n_events
    excess_p50_ms: float
    excess_p95_ms: float
    excess_p99_ms: float
    excess_p999_ms: float

    def aggregate_rows(self) -> list[tuple[str, float, str]]:
        """(metric, value, unit) rows as samples.parquet names them."""
        return [
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
    """Event latency, excess and stalls from watch events.

    `events`: one row per event, columns stream, seq, sent_ns, received_ns (one host clock).
    Event latency = received − sent; excess = latency − the minimum latency of all `events`
    passed (the cell); stalled when excess > `threshold_ms` (default ½ `base_rtt_ms`). Excess
    percentiles use linear interpolation over all events.

    Returns the aggregates and a per-event frame (same index and order as `events`) with the
    added columns latency_ms, excess_ms and stalled (bool) — the input of `hol_losses`.
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

    sent = events["sent_ns"].to_numpy(dtype=np.int64)
    received = events["received_ns"].to_numpy(dtype=np.int64)
    latency = _duration_ms(sent, received, "event latency")
    distinct = pd.unique(events["stream"].to_numpy())
    if len(distinct) > n_streams:
        raise ValueError(f"events on {len(distinct)} streams but n_streams={n_streams}")

    min_latency = float(latency.min())
    excess = latency - min_latency
    stalled = excess > threshold
    n_stalled = int(stalled.sum())
    pct = np.percentile(excess, [p for _, p in EXCESS_PERCENTILES])
    metrics = WatchMetrics(
        n_streams=int(n_streams),
        n_events=len(events),
        n_stalled=n_stalled,
        threshold_ms=threshold,
        min_latency_ms=min_latency,
        stalled_fraction=n_stalled / len(events),
        excess_p50_ms=float(pct[0]),
        excess_p95_ms=float(pct[1]),
        excess_p99_ms=float(pct[2]),
        excess_p999_ms=float(pct[3]),
    )
    per_event = events.assign(latency_ms=latency, excess_ms=excess, stalled=stalled)
    return metrics, per_event


# --- HOL blocking, anchored on losses --------------------------------------------------------
DROP_COLUMNS: tuple[str, ...] = ("time_ns", "direction", "ip_proto", "length")
DATA_IP_PROTOS: tuple[int, ...] = (6, 17)  # TCP, UDP (QUIC)
CARRIER_LEAD_MS = 5.0  # a dropped packet's bytes were written at most this long before it
HOL_BOOTSTRAP = 2000  # resamples of the losses for hol_spread's interval
HOL_CONFIDENCE = 0.95
LossStatus = Literal["counted", "unexposed", "overlapping"]
"""What became of a data drop: "counted" in hol_spread; "unexposed": no watch event was exposed
to it; "overlapping": its recovery window overlaps another drop's, so its stalls cannot be told
apart from that one's."""
LOSS_COLUMNS: tuple[str, ...] = (
    "time_ns",
    "exposed",
    "stalled",
    "blast_radius",
    "collateral_ms",
    "lossy_stream",
    "end_ns",
    "status",
)


def loss_horizon_ms(base_rtt_ms: float, threshold_ms: float) -> float:
    """How long after a drop (ms) an event sent is exposed to it: base RTT − threshold.

    A lost packet is repaired no sooner than one base RTT after the drop (the ack of a later
    packet must come back first), so an event sent x ms after the drop that waits for the
    repair has excess ≥ base RTT − x: it is held past the threshold whenever x < this horizon.
    ValueError when the threshold is not below the base RTT (no event could be shown to wait).
    """
    horizon = base_rtt_ms - threshold_ms
    if horizon <= 0:
        raise ValueError(
            f"the stall threshold ({threshold_ms:g} ms) must be below the base RTT "
            f"({base_rtt_ms:g} ms) for loss-anchored HOL metrics"
        )
    return horizon


def data_drop_times(drops: pd.DataFrame) -> npt.NDArray[np.int64]:
    """Sorted times (CLOCK_MONOTONIC ns) of the drops that can block watch data: server → client
    (`downlink`), TCP or UDP, longer than PURE_ACK_MAX_BYTES (a pure ACK carries no data)."""
    missing = [c for c in DROP_COLUMNS if c not in drops.columns]
    if missing:
        raise ValueError(f"drop log lacks column(s) {missing}")
    keep = (
        (drops["direction"] == "downlink")
        & drops["ip_proto"].isin(DATA_IP_PROTOS)
        & (drops["length"] > PURE_ACK_MAX_BYTES)
    )
    return np.sort(drops.loc[keep, "time_ns"].to_numpy(dtype=np.int64))


@dataclass(frozen=True)
class HolLosses:
    """Loss-anchored HOL blocking of one watch run (docs/metrics.md, "HOL blocking").

    hol_spread = mean blast radius (stalled ÷ exposed streams) over the counted losses, with a
    percentile-bootstrap interval over them; NaN fields when no loss was counted."""

    n_losses: int  # counted: exposed, and their recovery window overlaps no other
    n_unexposed: int
    n_overlapping: int
    horizon_ms: float
    lead_ms: float
    hol_spread: float
    hol_spread_low: float
    hol_spread_high: float
    exposed_mean: float  # streams exposed per counted loss
    stalled_mean: float  # streams stalled per counted loss (≈ 1 without HOL blocking)
    collateral_ms: float  # mean over counted losses of the other streams' stalled excess (ms)

    def aggregate_rows(self) -> list[tuple[str, float, str]]:
        """(metric, value, unit) rows as samples.parquet names them; the spread and means only
        when some loss was counted."""
        rows = [
            ("hol_losses", float(self.n_losses), "count"),
            ("hol_losses_unexposed", float(self.n_unexposed), "count"),
            ("hol_losses_overlapping", float(self.n_overlapping), "count"),
        ]
        if self.n_losses:
            rows += [
                ("hol_spread", self.hol_spread, "fraction"),
                ("hol_spread_low", self.hol_spread_low, "fraction"),
                ("hol_spread_high", self.hol_spread_high, "fraction"),
                ("hol_exposed_mean", self.exposed_mean, "count"),
                ("hol_stalled_mean", self.stalled_mean, "count"),
                ("hol_collateral_ms", self.collateral_ms, "ms"),
            ]
        return rows


def hol_losses(
    per_event: pd.DataFrame,
    drop_times_ns: ArrayLike,
    *,
    base_rtt_ms: float,
    threshold_ms: float,
    lead_ms: float = CARRIER_LEAD_MS,
    n_boot: int = HOL_BOOTSTRAP,
    seed: int = 0,
) -> tuple[HolLosses, pd.DataFrame]:
    """HOL blocking per loss, from `watch_metrics`' per-event frame (stream, sent_ns,
    received_ns, excess_ms, stalled) and the data drops' times (`data_drop_times`), all ns of
    one host clock. `threshold_ms` is the one `watch_metrics` used.

    For a drop at t (H = `loss_horizon_ms`, L = `lead_ms`):
    - exposed events: every event sent in (t, t + H], and the events sent in [t − L, t] that
      stalled (the dropped packet's own data was written just before the drop; an event from
      then that was not delayed had passed before the lost packet);
    - exposed / stalled streams: the distinct streams of the exposed / exposed and stalled
      events; blast radius = stalled ÷ exposed;
    - lossy stream: the stream of the earliest stalled event sent in [t − L, t] (none when
      none stalled); collateral delay = the summed excess (ms) of the stalled exposed events
      of every other stream;
    - recovery window: [t, end], end = the latest receive time of its stalled exposed events,
      at least t + H. Drops whose recovery windows overlap are all "overlapping"; the others
      with no exposed event are "unexposed"; the rest are "counted".
    Drops outside [first event sent − L, last event received] are not this watch's and are
    left out. The interval is a percentile bootstrap of the mean over the counted losses
    (`n_boot` resamples from `seed`: the same input gives the same interval).

    Returns the aggregates and one row per drop considered (LOSS_COLUMNS, time order).
    """
    horizon_ms = loss_horizon_ms(base_rtt_ms, threshold_ms)
    if lead_ms < 0:
        raise ValueError("lead_ms must be ≥ 0")
    sent = per_event["sent_ns"].to_numpy(dtype=np.int64)
    received = per_event["received_ns"].to_numpy(dtype=np.int64)
    stream = per_event["stream"].to_numpy()
    excess = per_event["excess_ms"].to_numpy(dtype=np.float64)
    stalled = per_event["stalled"].to_numpy(dtype=bool)
    lead_ns, horizon_ns = round(lead_ms * 1e6), round(horizon_ms * 1e6)
    drops = np.sort(np.asarray(drop_times_ns, dtype=np.int64))
    if len(sent):
        drops = drops[(drops >= sent.min() - lead_ns) & (drops <= received.max())]
    else:
        drops = drops[:0]

    order = np.argsort(sent, kind="stable")
    by_sent = sent[order]
    rows = []
    for t in drops.tolist():
        lo = int(np.searchsorted(by_sent, t - lead_ns, side="left"))
        mid, hi = np.searchsorted(by_sent, [t, t + horizon_ns], side="right")
        lead = order[lo:mid]
        lead = lead[stalled[lead]]
        exposed_idx = np.concatenate([lead, order[mid:hi]])
        hit = exposed_idx[stalled[exposed_idx]]
        lossy = stream[lead[0]] if len(lead) else None
        other = hit if lossy is None else hit[stream[hit] != lossy]
        end = max(t + horizon_ns, int(received[hit].max()) if len(hit) else t)
        n_exposed = len(pd.unique(stream[exposed_idx]))
        n_stalled = len(pd.unique(stream[hit]))
        rows.append(
            (
                t,
                n_exposed,
                n_stalled,
                n_stalled / n_exposed if n_exposed else np.nan,
                float(excess[other].sum()),
                lossy,
                end,
                "counted" if n_exposed else "unexposed",
            )
        )
    table = pd.DataFrame(rows, columns=list(LOSS_COLUMNS))
    table["lossy_stream"] = table["lossy_stream"].astype("Int64")
    table.loc[_overlapping(table["time_ns"], table["end_ns"]), "status"] = "overlapping"

    counted = table[table["status"] == "counted"]
    radii = counted["blast_radius"].to_numpy(dtype=np.float64)
    low, high = mean_interval(radii, n_boot=n_boot, seed=seed)
    summary = HolLosses(
        n_losses=len(counted),
        n_unexposed=int((table["status"] == "unexposed").sum()),
        n_overlapping=int((table["status"] == "overlapping").sum()),
        horizon_ms=horizon_ms,
        lead_ms=float(lead_ms),
        hol_spread=float(radii.mean()) if len(radii) else np.nan,
        hol_spread_low=low,
        hol_spread_high=high,
        exposed_mean=float(counted["exposed"].mean()) if len(radii) else np.nan,
        stalled_mean=float(counted["stalled"].mean()) if len(radii) else np.nan,
        collateral_ms=float(counted["collateral_ms"].mean()) if len(radii) else np.nan,
    )
    return summary, table


def _overlapping(start_ns: pd.Series, end_ns: pd.Series) -> npt.NDArray[np.bool_]:
    """Which of the windows [start, end] (sorted by start) intersect another one.

    A window that starts after every earlier window has ended begins a new cluster; each window
    of a cluster of two or more intersects one of the others."""
    start = start_ns.to_numpy(dtype=np.int64)
    end = end_ns.to_numpy(dtype=np.int64)
    if len(start) < 2:
        return np.zeros(len(start), dtype=bool)
    reach = np.maximum.accumulate(end)  # the latest end among the windows so far
    new = np.concatenate([[True], start[1:] > reach[:-1]])
    cluster = np.cumsum(new)
    sizes = np.bincount(cluster)
    return np.asarray(sizes[cluster] > 1)


def mean_interval(
    values: ArrayLike,
    *,
    n_boot: int = HOL_BOOTSTRAP,
    seed: int = 0,
    confidence: float = HOL_CONFIDENCE,
) -> tuple[float, float]:
    """Percentile-bootstrap interval (low, high) of the mean of `values`: `n_boot` resamples
    with replacement from numpy's generator seeded with `seed`. (NaN, NaN) when empty; one
    value gives a zero-width interval."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return np.nan, np.nan
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, 1_000_000 // x.size)  # bounded memory for long runs
    for a in range(0, n_boot, chunk):
        b = min(n_boot, a + chunk)
        means[a:b] = x[rng.integers(0, x.size, (b - a, x.size))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


# --- the schema-1 HOL spread (kept to compare old runs with new ones) ----------------------
def overlap_spread(per_event: pd.DataFrame, n_streams: int) -> float:
    """The `hol_spread` of results schema 1, no longer written: for each stalled event, the
    distinct streams with a stalled event whose [sent, received] overlaps its own, ÷
    `n_streams`, averaged; 0.0 when nothing stalled. It moves with the probe's interval (a
    stall shorter than the interval catches only some streams' events)."""
    stalled = per_event["stalled"].to_numpy(dtype=bool)
    if not stalled.any():
        return 0.0
    overlap = overlapping_streams(
        per_event["stream"].to_numpy()[stalled],
        per_event["sent_ns"].to_numpy(dtype=np.int64)[stalled],
        per_event["received_ns"].to_numpy(dtype=np.int64)[stalled],
    )
    return float(overlap.mean() / n_streams)


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


# --- sender state: congestion-window limited time -------------------------------------------
CONGESTION_LIMITED_FRACTION = 0.2  # above this share of the probe a cell is congestion_limited
SENDER_HOLD_MAX_MS = 100.0  # a sender sample describes at most this long after it (a gap)


def sender_cwnd_limited_fraction(
    time_ns: ArrayLike,
    limited: ArrayLike,
    start_ns: int,
    end_ns: int,
    hold_max_ms: float = SENDER_HOLD_MAX_MS,
) -> float:
    """The share of the probe [start_ns, end_ns) during which the sender was congestion-window
    limited (had data waiting and no window left), from its state sampled at `time_ns` (one
    host clock, ns; any order) with `limited` (bool) per sample.

    A sample's state holds from its time until the next sample, at most `hold_max_ms`; the
    share is limited time ÷ time so covered, both clipped to the probe. Several senders (e.g.
    connections) sampled at one instant count as limited when any of them is. NaN when no
    sample covers the probe."""
    if end_ns <= start_ns:
        raise ValueError("the probe must end after it starts")
    t = np.asarray(time_ns, dtype=np.int64)
    lim = np.asarray(limited, dtype=bool)
    if t.shape != lim.shape:
        raise ValueError("time_ns and limited differ in length")
    if len(t) == 0:
        return float("nan")
    instants = pd.Series(lim).groupby(t).any()
    times = instants.index.to_numpy(dtype=np.int64)
    hold = int(hold_max_ms * 1e6)
    ends = np.minimum(np.append(times[1:], times[-1] + hold), times + hold)
    covered = np.clip(np.minimum(ends, end_ns) - np.maximum(times, start_ns), 0, None)
    total = int(covered.sum())
    if total == 0:
        return float("nan")
    return float(covered[instants.to_numpy(dtype=bool)].sum() / total)


def tcp_cwnd_limited(
    cwnd_packets: ArrayLike,
    in_flight_packets: ArrayLike,
    notsent_bytes: ArrayLike,
) -> npt.NDArray[np.bool_]:
    """Per TCP sample: data waiting (bytes written, not yet sent: tcpi_notsent_bytes > 0) and no
    window left (packets in flight ≥ cwnd; in flight as the kernel counts it, see
    `tcp_in_flight`) — the kernel's own test (tcp_is_cwnd_limited) with the waiting data."""
    cwnd = np.asarray(cwnd_packets, dtype=np.int64)
    flight = np.asarray(in_flight_packets, dtype=np.int64)
    return (flight >= cwnd) & (np.asarray(notsent_bytes, dtype=np.int64) > 0)


def tcp_in_flight(
    unacked: ArrayLike, sacked: ArrayLike, lost: ArrayLike, retrans: ArrayLike
) -> npt.NDArray[np.int64]:
    """Packets in flight from tcp_info counts (tcp_packets_in_flight): unacked − sacked − lost +
    retransmitted."""
    a = [np.asarray(x, dtype=np.int64) for x in (unacked, sacked, lost, retrans)]
    return a[0] - a[1] - a[2] + a[3]


def quic_cwnd_limited(
    cwnd_bytes: ArrayLike, bytes_in_flight: ArrayLike, datagram_bytes: ArrayLike
) -> npt.NDArray[np.bool_]:
    """Per QUIC sample: no window left, bytes in flight ≥ cwnd − one datagram (bytes)."""
    cwnd = np.asarray(cwnd_bytes, dtype=np.int64)
    flight = np.asarray(bytes_in_flight, dtype=np.int64)
    return flight >= cwnd - np.asarray(datagram_bytes, dtype=np.int64)


def congestion_limited(fraction: float, limit: float = CONGESTION_LIMITED_FRACTION) -> bool:
    """A cell measures congestion control, not HOL blocking, when its sender was
    congestion-window limited for more than `limit` of the probe (NaN: not known, False)."""
    return bool(fraction > limit)


# --- where the time went: queued at the sender, and the rest ---------------------------------
DEPARTURE_COLUMNS: tuple[str, ...] = ("sent_ns", "left_ns")


@dataclass(frozen=True)
class TimeWent:
    """Where the latency of one watch run's events went (docs/metrics.md, "Where the time
    went"): queued at the sender (the server's write until the event's bytes left in a packet)
    and the rest (the network, and the receiver waiting for missing data: HOL). Only events
    with a departure count; the percentiles are NaN when none has one, `queue_share` when no
    such event stalled."""

    n_matched: int  # events with a departure
    n_unmatched: int  # events without one (left out)
    n_inconsistent: int  # departures before their event was sent or after it arrived (left out)
    n_stalled: int  # stalled events with a departure: what queue_share is over
    min_queue_ms: float  # the run's smallest queue time (ms)
    queue_p50_ms: float
    queue_p99_ms: float
    rest_p50_ms: float
    rest_p99_ms: float
    queue_share: float  # Σ (queue − min queue) ÷ Σ excess over the stalled events

    def aggregate_rows(self) -> list[tuple[str, float, str]]:
        """(metric, value, unit) rows as samples.parquet names them: the counts always, the
        percentiles when an event matched, queue_share when one of them stalled."""
        rows = [
            ("departures_matched", float(self.n_matched), "count"),
            ("departures_unmatched", float(self.n_unmatched), "count"),
            ("departures_inconsistent", float(self.n_inconsistent), "count"),
        ]
        if self.n_matched:
            rows += [
                ("queue_p50_ms", self.queue_p50_ms, "ms"),
                ("queue_p99_ms", self.queue_p99_ms, "ms"),
                ("rest_p50_ms", self.rest_p50_ms, "ms"),
                ("rest_p99_ms", self.rest_p99_ms, "ms"),
            ]
        if not np.isnan(self.queue_share):
            rows.append(("queue_share", self.queue_share, "fraction"))
        return rows


def where_time_went(
    per_event: pd.DataFrame, departures: pd.DataFrame
) -> tuple[TimeWent, pd.DataFrame]:
    """Split each watch event's latency into the time queued at the sender and the rest.

    `per_event`: `watch_metrics`' per-event frame (stream, seq, sent_ns, received_ns,
    excess_ms, stalled); `departures`: sent_ns, left_ns (the server's departure log of the same
    protocol, lab.http.departure_log), all ns of one host clock. An event joins the departure
    with its `sent_ns` (unique per event; of repeated keys the earliest departure counts):
    queue_ms = (left − sent) / 1e6, rest_ms = (received − left) / 1e6. Events without a
    departure are left out and counted. Percentiles: linear interpolation.

    queue_share = Σ (queue_ms − the run's minimum queue_ms) ÷ Σ excess_ms over the stalled events
    with a departure: the share of their excess latency spent queued at the sender (≈ 1: window
    or send buffer, not HOL; ≈ 0: the network or the receiver). Not clipped: it can pass 1 a
    little when the fastest event's split was not the fastest of both parts. NaN when no such
    event stalled. A departure before its event was sent, or after it was received, does not
    belong to it (a clock or bookkeeping fault of the stamping server): such events are left
    out and counted apart (`n_inconsistent`), so one bad stamp never costs the watch's other
    metrics; a count above 0 says the stamps of that run are suspect.

    Returns the aggregates and the matched events (input rows and order) with queue_ms and
    rest_ms added.
    """
    missing = [c for c in DEPARTURE_COLUMNS if c not in departures.columns]
    if missing:
        raise ValueError(f"departures lack column(s) {missing}")
    sent = per_event["sent_ns"].to_numpy(dtype=np.int64)
    received = per_event["received_ns"].to_numpy(dtype=np.int64)
    dep_sent = departures["sent_ns"].to_numpy(dtype=np.int64)
    dep_left = departures["left_ns"].to_numpy(dtype=np.int64)
    order = np.lexsort((dep_left, dep_sent))  # by sent, then left: the earliest departure first
    keys, first = np.unique(dep_sent[order], return_index=True)
    lefts = dep_left[order][first]
    idx = np.minimum(np.searchsorted(keys, sent), max(len(keys) - 1, 0))
    matched = keys[idx] == sent if len(keys) else np.zeros(len(sent), dtype=bool)
    left_all = np.where(matched, lefts[idx] if len(keys) else 0, 0)
    consistent = (left_all >= sent) & (left_all <= received)
    n_inconsistent = int((matched & ~consistent).sum())
    matched &= consistent
    left = left_all[matched]
    queue = _duration_ms(sent[matched], left, "queue time")
    rest = _duration_ms(left, received[matched], "rest")

    stalled = per_event["stalled"].to_numpy(dtype=bool)[matched]
    excess = per_event["excess_ms"].to_numpy(dtype=np.float64)[matched]
    n = int(matched.sum())
    min_queue = float(queue.min()) if n else float("nan")
    share = float("nan")
    if stalled.any():
        share = float((queue[stalled] - min_queue).sum() / excess[stalled].sum())
    q50, q99 = np.percentile(queue, [50.0, 99.0]) if n else (np.nan, np.nan)
    r50, r99 = np.percentile(rest, [50.0, 99.0]) if n else (np.nan, np.nan)
    summary = TimeWent(
        n_matched=n,
        n_unmatched=len(sent) - n - n_inconsistent,
        n_inconsistent=n_inconsistent,
        n_stalled=int(stalled.sum()),
        min_queue_ms=min_queue,
        queue_p50_ms=float(q50),
        queue_p99_ms=float(q99),
        rest_p50_ms=float(r50),
        rest_p99_ms=float(r99),
        queue_share=share,
    )
    return summary, per_event[matched].assign(queue_ms=queue, rest_ms=rest)
