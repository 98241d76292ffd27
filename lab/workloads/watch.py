"""`watch`: N watch streams on one connection — the head-of-line-blocking probe.

The server emits one JSON line per stream every `interval_ms` (`lab.http.pods.watch_event`),
each carrying `lab: {stream, seq, sent_ns}` stamped with CLOCK_MONOTONIC just before it is
written. The client splits each response body into lines (a chunk may hold several lines or a
part of one) and stamps each line with the arrival time of the chunk that *completed* it.

Rows: one `event_latency_ms` per event (stream = the watch's index 0..N-1) with the raw
`seq`, `sent_ns`, `received_ns`. The agent ships them to the runner, which, once the emulator has
stopped, meets them with its drop log (same clock) in `lab.workloads.aggregate`: that adds
`event_excess_ms`, stalled_fraction and the excess percentiles, and the loss-anchored HOL metrics
(hol_spread = mean blast radius per loss, hol_losses, …; docs/metrics.md).
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable

import trio

from lab.http.types import Connection
from lab.scenario.workloads import WatchParams
from lab.workloads.base import WATCH_NAMESPACE, Row, WorkloadContext, WorkloadError, row


class LineSplitter:
    """Split a byte stream into lines; each line gets the time of the chunk that ended it."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes, now_ns: int) -> list[tuple[bytes, int]]:
        """Add one chunk received at `now_ns`; return the (line, now_ns) it completes
        (without the newline; blank lines skipped)."""
        out: list[tuple[bytes, int]] = []
        if b"\n" not in data:
            self._buf += data
            return out
        self._buf += data
        lines = self._buf.split(b"\n")
        self._buf = bytearray(lines.pop())  # the unfinished tail
        for line in lines:
            if line.strip():
                out.append((bytes(line), now_ns))
        return out

    @property
    def pending(self) -> int:
        """Bytes of an unfinished line held back."""
        return len(self._buf)


def event_count(duration_s: float, interval_ms: float) -> int:
    """Events per stream for a watch of `duration_s` at `interval_ms` (at least 1)."""
    return max(1, math.floor(duration_s * 1000 / interval_ms + 1e-9))


def watch_path(interval_ms: float, count: int, namespace: str = WATCH_NAMESPACE) -> str:
    """The reference server's watch URL (interval in whole ms, at least 1)."""
    ivl = max(1, round(interval_ms))
    return f"/api/v1/watch/namespaces/{namespace}/pods?watch=1&interval_ms={ivl}&count={count}"


def parse_event(line: bytes) -> tuple[int, int]:
    """(seq, sent_ns) of one watch event line."""
    stamp = json.loads(line)["lab"]
    return int(stamp["seq"]), int(stamp["sent_ns"])


async def watch_streams(
    conn: Connection,
    index: int,
    interval_ms: float,
    count: int,
    out: list[Row],
) -> None:
    """One watch stream on `conn`: append an `event_latency_ms` row per event to `out`."""
    splitter = LineSplitter()
    events: list[tuple[int, int, int]] = []  # (seq, sent_ns, received_ns)

    def on_chunk(data: bytes, now_ns: int) -> None:
        for line, t in splitter.feed(data, now_ns):
            seq, sent = parse_event(line)
            events.append((seq, sent, t))

    resp = await conn.request(
        "GET", watch_path(interval_ms, count), keep_body=False, on_chunk=on_chunk
    )
    if resp.status != 200:
        raise WorkloadError(f"watch {index}: status {resp.status}")
    if len(events) != count:
        raise WorkloadError(f"watch {index}: {len(events)} events, expected {count}")
    for seq, sent, received in events:
        out.append(
            row(
                "event_latency_ms",
                (received - sent) / 1e6,
                "ms",
                index,
                seq=seq,
                sent_ns=sent,
                received_ns=received,
            )
        )


async def run(params: WatchParams, ctx: WorkloadContext) -> list[Row]:
    """Open `params.streams` watches on one connection for `params.duration_s`."""
    count = event_count(params.duration_s, params.interval_ms)
    rows: list[Row] = []
    async with ctx.connect() as conn, trio.open_nursery() as nursery:
        for i in range(params.streams):
            delay_s = stagger_delay_s(i, params.streams, params.interval_ms, params.stagger)
            nursery.start_soon(
                _after, delay_s, watch_streams, conn, i, params.interval_ms, count, rows
            )
    rows.sort(key=lambda r: (r["stream"], r["seq"]))
    return rows


def stagger_delay_s(index: int, streams: int, interval_ms: float, stagger: bool) -> float:
    """When watch `index` of `streams` opens (s after the first): i × interval / N, or 0.

    Staggered phases keep events of different streams out of one packet, so a single loss
    hits one stream's event on TCP and QUIC alike and the HOL spread measures the transport,
    not how a stack packs simultaneous writes."""
    return index * interval_ms / 1e3 / streams if stagger else 0.0


async def _after(delay_s: float, fn: Callable[..., Awaitable[None]], *args: object) -> None:
    """Sleep `delay_s` seconds, then run `fn(*args)`."""
    await trio.sleep(delay_s)
    await fn(*args)


def estimate_s(params: WatchParams, base_rtt_ms: float, rate_mbit: float | None) -> float:
    """Rough duration (s): the watch itself plus connection set-up."""
    return params.duration_s + 4 * base_rtt_ms / 1e3 + 0.2
