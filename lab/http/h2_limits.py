"""Bookkeeping of the HTTP/2 server's resource bounds, sans-I/O (time is an argument).

`ResetRate` is the rapid-reset token bucket, `BodyBudget` the memory budget of buffered request
bodies (one per connection, drawing on the server's total), `H2Stats` the counters behind the
`h2 summary:` line the server logs at shutdown. lab.http.h2_server applies the bounds and gives
the protocol answers; the settings are `lab.http.settings.H2ServerLimits` (docs/http.md, Bounds).
"""

from __future__ import annotations

from collections import Counter
from typing import Literal, get_args

BoundEvent = Literal[
    "idle_closed",  # no open stream for idle_timeout_s: GOAWAY(NO_ERROR), then close
    "stalled_resets",  # send side blocked on the peer's window too long: RST_STREAM(CANCEL)
    "body_refused",  # a request body over a buffer budget: RST_STREAM(REFUSED_STREAM)
    "rapid_reset_goaways",  # the peer reset streams faster than allowed: GOAWAY(ENHANCE_YOUR_CALM)
    "control_flood_goaways",  # too many replies queued for a non-reader: GOAWAY(ENHANCE_YOUR_CALM)
    "protocol_error_goaways",  # a frame rule broken (ours or h2's checks): GOAWAY(its code)
]
BOUND_EVENTS: tuple[BoundEvent, ...] = get_args(BoundEvent)


class ResetRate:
    """Token bucket of peer stream resets: bursts of `limit`, refilled at `limit` per second."""

    __slots__ = ("_at", "_limit", "_tokens")

    def __init__(self, limit: int, now: float) -> None:
        self._limit = float(limit)
        self._tokens = float(limit)
        self._at = now

    def take(self, now: float) -> bool:
        """Count one reset at `now` (seconds); False when it exceeds the rate."""
        self._tokens = min(self._limit, self._tokens + (now - self._at) * self._limit)
        self._at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


class BodyBudget:
    """Bytes of request bodies held in memory, at most `limit_bytes`; a reservation is charged
    to `parent` (the server's total) as well and fails if either would go over."""

    __slots__ = ("limit_bytes", "parent", "peak_bytes", "used_bytes")

    def __init__(self, limit_bytes: int, parent: BodyBudget | None = None) -> None:
        self.limit_bytes = limit_bytes
        self.parent = parent
        self.used_bytes = 0
        self.peak_bytes = 0

    def reserve(self, n: int) -> bool:
        """Hold `n` more bytes; False (nothing held) when this budget or its parent is full."""
        p = self.parent
        if self.used_bytes + n > self.limit_bytes or (
            p is not None and p.used_bytes + n > p.limit_bytes
        ):
            return False
        self._add(n)
        if p is not None:
            p._add(n)
        return True

    def release(self, n: int) -> None:
        """Give back up to `n` bytes (never more than is held)."""
        n = min(n, self.used_bytes)
        self.used_bytes -= n
        if self.parent is not None:
            self.parent.release(n)

    def close(self) -> None:
        """Give everything still held back to the parent (the connection is gone)."""
        self.release(self.used_bytes)

    def _add(self, n: int) -> None:
        self.used_bytes += n
        self.peak_bytes = max(self.peak_bytes, self.used_bytes)


class H2Stats:
    """Counters of one server's h2 front end since it started."""

    __slots__ = ("bounds", "connections", "requests")

    def __init__(self) -> None:
        self.connections = 0
        self.requests = 0
        self.bounds: Counter[str] = Counter()

    def note(self, event: BoundEvent) -> None:
        """Count one time a bound was hit."""
        self.bounds[event] += 1

    def summary(self, peak_buffered_bytes: int) -> str:
        """The shutdown line: every counter (zeros included) and the body-buffer peak."""
        counts = " ".join(f"{e}={self.bounds[e]}" for e in BOUND_EVENTS)
        return (
            f"h2 summary: connections={self.connections} requests={self.requests} {counts} "
            f"peak_buffered_request_bytes={peak_buffered_bytes}"
        )


class ServerTotals:
    """What the h2 connections of one server share: the total body budget and the counters."""

    __slots__ = ("bodies", "stats")

    def __init__(self, total_body_bytes: int) -> None:
        self.bodies = BodyBudget(total_body_bytes)
        self.stats = H2Stats()

    def summary(self) -> str:
        """The `h2 summary:` line (see H2Stats.summary)."""
        return self.stats.summary(self.bodies.peak_bytes)
