"""From one workload's sample rows (one cell, repetition and protocol) to the rows that go into
samples.parquet: raw stamps stripped, `event_excess_ms` added, and the aggregates of
lab.workloads.metrics appended (stream <NA>). Pure: no I/O, no clock.

Aggregates per workload kind:
- watch, k8s_mix: stalled_fraction, excess_p50/p95/p99/p999_ms (lab.workloads.metrics.watch_metrics;
  the stall threshold is `stall_threshold_rtt` × base RTT for watch, ½ base RTT for k8s_mix); with a
  drop log (the emulator's; netem has none) the loss-anchored HOL metrics hol_losses,
  hol_losses_unexposed, hol_losses_overlapping and, when a loss was counted, hol_spread with
  hol_spread_low/high, hol_exposed_mean, hol_stalled_mean, hol_collateral_ms, plus one
  `loss_blast_radius` row per counted loss (lab.workloads.metrics.hol_losses); with sender
  samples (lab.run.sender_sampler) sender_cwnd_limited_fraction over the probe (first event
  sent to last received) and the flag congestion_limited (1.0 above
  metrics.CONGESTION_LIMITED_FRACTION: the cell measures congestion control, not HOL blocking);
  with the server's departure log (lab.http.departure_log; the reference server only) where
  the time went: per event `event_queue_ms` and `event_rest_ms`, and departures_matched,
  departures_unmatched, queue_p50/p99_ms, rest_p50/p99_ms and, when a stamped event stalled,
  queue_share (lab.workloads.metrics.where_time_went);
- rpc_under_load, k8s_mix: rpc_delayed_fraction, rpc_p95_ms (lab.workloads.metrics.rpc_metrics);
- bulk, multiplex, rpc_under_load: utilisation (median goodput ÷ downlink rate; NaN unlimited);
- every kind: cpu_server_s, cpu_client_s, cpu_emulator_s (user+sys seconds during the
  workload), cpu_bound (1.0 when any of them exceeded 90 % of one core over the wall time) and
  that wall time, workload_wall_s; cpu_host_s (busy seconds of the whole host), cpu_other_s
  (host − those three) and host_busy (1.0 when the others used more than
  metrics.HOST_BUSY_LIMIT cores: wall-clock times may be inflated by a busy neighbour).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from lab.workloads import metrics
from lab.workloads.base import Row, row

RAW_KEYS: tuple[str, ...] = ("seq", "sent_ns", "received_ns")
ROW_KEYS: tuple[str, ...] = ("metric", "value", "unit", "stream", "mode", "early_data")


@dataclass(frozen=True)
class CpuUsage:
    """CPU seconds (user+sys) of each process during one workload, and its wall time (s).
    `emulator_s` is None when no userspace emulator ran (netem); `host_s`, the busy CPU seconds
    of the whole host (all cores), None when not measured (agents before the host_busy flag)."""

    server_s: float
    client_s: float
    emulator_s: float | None
    wall_s: float
    host_s: float | None = None

    @property
    def other_s(self) -> float | None:
        """CPU seconds of every other process on the host (the lab's runner and samplers too)."""
        if self.host_s is None:
            return None
        return max(0.0, self.host_s - self.server_s - self.client_s - (self.emulator_s or 0.0))

    def rows(self) -> list[Row]:
        out = [row("cpu_server_s", self.server_s, "s"), row("cpu_client_s", self.client_s, "s")]
        if self.emulator_s is not None:
            out.append(row("cpu_emulator_s", self.emulator_s, "s"))
        used = [self.server_s, self.client_s]
        if self.emulator_s is not None:
            used.append(self.emulator_s)
        bound = self.wall_s > 0 and metrics.cpu_bound(used, self.wall_s)
        out.append(row("cpu_bound", 1.0 if bound else 0.0, "bool"))
        out.append(row("workload_wall_s", self.wall_s, "s"))
        other = self.other_s
        if self.host_s is not None and other is not None:  # both or neither
            busy = self.wall_s > 0 and metrics.host_busy(other, self.wall_s)
            out.append(row("cpu_host_s", self.host_s, "s"))
            out.append(row("cpu_other_s", other, "s"))
            out.append(row("host_busy", 1.0 if busy else 0.0, "bool"))
        return out


def _clean(r: Row) -> Row:
    return {k: r.get(k) for k in ROW_KEYS}


def watch_rows(
    rows: Sequence[Row],
    n_streams: int,
    base_rtt_ms: float,
    threshold_ms: float | None,
    drops: pd.DataFrame | None = None,
    senders: pd.DataFrame | None = None,
    departures: pd.DataFrame | None = None,
) -> list[Row]:
    """event_excess_ms per event plus the latency aggregates, from `event_latency_ms` rows that
    carry the raw stamps (stream, seq, sent_ns, received_ns); with `drops` (the drop log of
    this run's phase) the HOL metrics of `hol_rows` too, with `senders` (time_ns, limited) the
    rows of `sender_rows`, with `departures` (sent_ns, left_ns) those of `departure_rows`."""
    events = [r for r in rows if r["metric"] == "event_latency_ms"]
    if not events:
        return []
    frame = pd.DataFrame(
        {
            "stream": [int(r["stream"]) for r in events],
            "seq": [int(r["seq"]) for r in events],
            "sent_ns": np.array([r["sent_ns"] for r in events], dtype=np.int64),
            "received_ns": np.array([r["received_ns"] for r in events], dtype=np.int64),
        }
    )
    wm, per_event = metrics.watch_metrics(frame, n_streams, base_rtt_ms, threshold_ms)
    out = [
        row("event_excess_ms", x, "ms", int(s))
        for s, x in zip(per_event["stream"], per_event["excess_ms"], strict=True)
    ]
    out += [row(m, v, u) for m, v, u in wm.aggregate_rows()]
    if drops is not None:
        out += hol_rows(per_event, drops, base_rtt_ms, wm.threshold_ms)
    if senders is not None and len(senders):
        out += sender_rows(senders, int(frame["sent_ns"].min()), int(frame["received_ns"].max()))
    if departures is not None:
        out += departure_rows(per_event, departures)
    return out


def departure_rows(per_event: pd.DataFrame, departures: pd.DataFrame) -> list[Row]:
    """Where the time went: `event_queue_ms` and `event_rest_ms` per event with a departure
    (stream set, event order), then the aggregates of metrics.where_time_went."""
    tw, matched = metrics.where_time_went(per_event, departures)
    out: list[Row] = []
    for metric, column in (("event_queue_ms", "queue_ms"), ("event_rest_ms", "rest_ms")):
        pairs = zip(matched["stream"], matched[column], strict=True)
        out += [row(metric, x, "ms", int(s)) for s, x in pairs]
    out += [row(m, v, u) for m, v, u in tw.aggregate_rows()]
    return out


def sender_rows(senders: pd.DataFrame, start_ns: int, end_ns: int) -> list[Row]:
    """sender_cwnd_limited_fraction over the probe [start_ns, end_ns) and congestion_limited;
    none when no sample covers the probe."""
    if end_ns <= start_ns:
        return []
    fraction = metrics.sender_cwnd_limited_fraction(
        senders["time_ns"], senders["limited"], start_ns, end_ns
    )
    if np.isnan(fraction):
        return []
    limited = metrics.congestion_limited(fraction)
    return [
        row("sender_cwnd_limited_fraction", fraction, "fraction"),
        row("congestion_limited", 1.0 if limited else 0.0, "bool"),
    ]


def hol_rows(
    per_event: pd.DataFrame, drops: pd.DataFrame, base_rtt_ms: float, threshold_ms: float
) -> list[Row]:
    """The loss-anchored HOL aggregates and one `loss_blast_radius` per counted loss; none when
    the threshold is not below the base RTT (no loss horizon: docs/metrics.md)."""
    if base_rtt_ms <= threshold_ms:
        return []
    hl, per_loss = metrics.hol_losses(
        per_event,
        metrics.data_drop_times(drops),
        base_rtt_ms=base_rtt_ms,
        threshold_ms=threshold_ms,
    )
    counted = per_loss[per_loss["status"] == "counted"]
    out = [row("loss_blast_radius", x, "fraction") for x in counted["blast_radius"]]
    out += [row(m, v, u) for m, v, u in hl.aggregate_rows()]
    return out


def rpc_rows(rows: Sequence[Row], base_rtt_ms: float) -> list[Row]:
    """rpc_delayed_fraction and rpc_p95_ms from `rpc_latency_ms` rows."""
    lat = [r["value"] for r in rows if r["metric"] == "rpc_latency_ms"]
    if not lat:
        return []
    rm = metrics.rpc_metrics(lat, base_rtt_ms=base_rtt_ms)
    return [row(m, v, u) for m, v, u in rm.aggregate_rows()]


def utilisation_rows(rows: Sequence[Row], rate_mbit: float | None) -> list[Row]:
    """utilisation = median goodput_mbit ÷ the downlink rate."""
    goodput = [r["value"] for r in rows if r["metric"] == "goodput_mbit"]
    if not goodput:
        return []
    return [
        row("utilisation", metrics.utilisation(float(np.median(goodput)), rate_mbit), "fraction")
    ]


def aggregate(
    kind: str,
    params: Any,
    rows: Sequence[Row],
    *,
    base_rtt_ms: float,
    rate_mbit: float | None,
    cpu: CpuUsage | None = None,
    drops: pd.DataFrame | None = None,
    senders: pd.DataFrame | None = None,
    departures: pd.DataFrame | None = None,
) -> list[Row]:
    """The samples.parquet rows of one workload run: its rows (raw keys stripped), then
    derived per-sample rows and the aggregates. `drops`: the emulator's drop log of this
    protocol's phase (None without one: no loss-anchored HOL metrics); `senders`: the
    sender samples of the phase (lab.run.sender_sampler; None: no sender-state metrics);
    `departures`: this protocol's lines of the server's departure log (sent_ns, left_ns;
    None when the server does not stamp: no where-the-time-went metrics)."""
    out = [_clean(r) for r in rows]
    if kind == "watch":
        threshold = params.stall_threshold_rtt * base_rtt_ms
        out += watch_rows(rows, params.streams, base_rtt_ms, threshold, drops, senders, departures)
    elif kind == "k8s_mix" and params.watches > 0:
        out += watch_rows(rows, params.watches, base_rtt_ms, None, drops, senders, departures)
    if kind in ("rpc_under_load", "k8s_mix"):
        out += rpc_rows(rows, base_rtt_ms)
    if kind in ("bulk", "multiplex", "rpc_under_load"):
        out += utilisation_rows(rows, rate_mbit)
    if cpu is not None:
        out += cpu.rows()
    return out
