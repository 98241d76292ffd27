"""The reference server's QUIC sender state, sampled for the runner (issue 11, item 3): every
`SENDER_SAMPLE_INTERVAL_S` a CSV line per connection with aioquic's congestion window, bytes in
flight, datagram size and whether any stream has data waiting to be sent. The runner names the
file in the environment variable `SENDER_LOG_ENV` (the runner starts the server; a server
without it writes nothing). qh3 keeps its recovery state out of Python's reach: not sampled.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, TextIO

SENDER_LOG_ENV = "LAB_QUIC_SENDER_LOG"
SENDER_SAMPLE_INTERVAL_S = 0.02
SENDER_LOG_HEADER = "time_ns,sender,cwnd_bytes,bytes_in_flight,datagram_bytes,waiting\n"


def aioquic_state(quic: Any) -> tuple[int, int, int, bool] | None:
    """(cwnd bytes, bytes in flight, max datagram bytes, data waiting) of an aioquic
    connection; None for an engine without these attributes (qh3)."""
    loss = getattr(quic, "_loss", None)
    streams = getattr(quic, "_streams", None)
    if loss is None or streams is None:
        return None
    waiting = any(len(s.sender._pending) > 0 for s in streams.values())  # not yet (re)sent
    return (
        int(loss.congestion_window),
        int(loss.bytes_in_flight),
        int(quic._max_datagram_size),
        waiting,
    )


def write_samples(out: TextIO, connections: Iterable[tuple[int, Any]]) -> None:
    """One line per (id, aioquic connection) at the current CLOCK_MONOTONIC time (ns)."""
    now_ns = time.monotonic_ns()
    for ident, quic in connections:
        state = aioquic_state(quic)
        if state is not None:
            cwnd, flight, datagram, waiting = state
            out.write(f"{now_ns},{ident},{cwnd},{flight},{datagram},{int(waiting)}\n")
    out.flush()
