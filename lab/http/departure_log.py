"""When each watch event's bytes left the server in a packet (issue 11, item 4: where the time
went), as a CSV file the runner reads: one line per event with the event's `sent_ns` (the stamp
in the event, the join key with the client's rows) and `left_ns`, both CLOCK_MONOTONIC ns of the
server's host.

- h2 (reference server): the kernel's software transmit timestamp (SO_TIMESTAMPING,
  TX_SOFTWARE) of the TCP send call holding the event's last byte: when it went to the device.
- h3 (reference server on aioquic): when the event's last byte was first put into a datagram
  that the server then sent (a retransmission does not count again).

The runner names the file in `DEPARTURE_LOG_ENV` (a server without it writes nothing). One file
for both protocols of one server process: the `protocol` column tells them apart. queue time =
left_ns − sent_ns (at the sender: flow control, the congestion window, the send buffer); the rest
= received_ns − left_ns (the network, and the receiver waiting for missing data: HOL).
"""

from __future__ import annotations

import functools
import os
from typing import TextIO

DEPARTURE_LOG_ENV = "LAB_DEPARTURE_LOG"
DEPARTURE_LOG_HEADER = "protocol,sent_ns,left_ns\n"
DEPARTURE_PROTOCOLS = ("h2", "h3")


class DepartureLog:
    """Appends (protocol, sent_ns, left_ns) lines to an open text file; flushes every
    `flush_every` lines (default each: the runner reads it while the server runs)."""

    def __init__(self, out: TextIO, flush_every: int = 1) -> None:
        self._out = out
        self._flush_every = flush_every
        self._pending = 0
        out.write(DEPARTURE_LOG_HEADER)
        out.flush()

    def record(self, protocol: str, sent_ns: int, left_ns: int) -> None:
        """One event of `protocol` ("h2" or "h3") stamped `sent_ns` left at `left_ns`."""
        if protocol not in DEPARTURE_PROTOCOLS:
            raise ValueError(f"protocol {protocol!r}: not one of {DEPARTURE_PROTOCOLS}")
        self._out.write(f"{protocol},{sent_ns},{left_ns}\n")
        self._pending += 1
        if self._pending >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        self._out.flush()
        self._pending = 0


@functools.cache
def departure_log() -> DepartureLog | None:
    """The process's log, opened (truncated) on first use at the path in DEPARTURE_LOG_ENV;
    None when it is not set. One per process: the h2 and h3 servers of `lab serve` share it."""
    path = os.environ.get(DEPARTURE_LOG_ENV)
    if not path:
        return None
    return DepartureLog(open(path, "w", encoding="ascii"))  # open for the life of the process
