"""Event counters of the HTTP/3 front end and the log lines made from them.

Every admission verdict (`lab.http.h3_admission.Verdict`) is an event kind, plus datagrams that
do not parse and the lifecycle events below. `H3Stats.tick_lines()` (called by the server once
per `STATS_INTERVAL_S`) returns one line per event kind that occurred since the previous tick —
`h3 event <kind>: +N (total M)` — and a `h3 state: connections=… half_open=…` line when the
state changed; `summary()` is the shutdown line with every total. Log lines are what `lab serve`
writes; tests and benchmarks read them. Sans-I/O: the caller passes the state and logs.
"""

from __future__ import annotations

from collections import Counter
from typing import get_args

from lab.http.h3_admission import Verdict

STATS_INTERVAL_S = 1.0

PARSE_EVENTS = {"drop_unparsable": "not a QUIC packet header (the engine's parser refused it)"}
LIFECYCLE_EVENTS = {
    "handshake_completed": "a half-open connection finished its handshake",
    "half_open_expired": "a half-open connection was discarded at handshake_timeout_s",
    "memory_trimmed": "after a burst of half-open connections ended, memory was given back",
}
EVENT_KINDS: tuple[str, ...] = (*PARSE_EVENTS, *get_args(Verdict), *LIFECYCLE_EVENTS)


class H3Stats:
    """Totals per event kind since the server started, and the peak of half-open connections."""

    def __init__(self) -> None:
        self.totals: Counter[str] = Counter()
        self.peak_half_open = 0
        self._reported: Counter[str] = Counter()
        self._last_state: tuple[int, int] | None = None

    def note(self, kind: str, n: int = 1) -> None:
        """Count `n` events of one kind."""
        self.totals[kind] += n

    def observe_half_open(self, half_open: int) -> None:
        """Track the peak number of half-open connections."""
        if half_open > self.peak_half_open:
            self.peak_half_open = half_open

    def tick_lines(self, connections: int, half_open: int) -> list[str]:
        """The log lines for the events since the last tick, and the state if it changed."""
        lines = []
        for kind in EVENT_KINDS:
            new = self.totals[kind] - self._reported[kind]
            if new:
                lines.append(f"h3 event {kind}: +{new} (total {self.totals[kind]})")
        self._reported = self.totals.copy()
        state = (connections, half_open)
        if state != self._last_state:
            self._last_state = state
            lines.append(f"h3 state: connections={connections} half_open={half_open}")
        return lines

    def summary(self) -> str:
        """One line with every total (zeros included) and the half-open peak."""
        counts = " ".join(f"{kind}={self.totals[kind]}" for kind in EVENT_KINDS)
        return f"h3 summary: {counts} peak_half_open={self.peak_half_open}"
