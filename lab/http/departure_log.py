"""The reference server's logs for "where the time went" (issue 11, item 4; docs/metrics.md): the
one module that defines their file formats. Both are CSV files the runner reads (lab.run.
departures), all times CLOCK_MONOTONIC ns of the host; `sent_ns` is the stamp in the event, the
join key with the client's rows.

- The **departure log** (`DEPARTURE_LOG_ENV`, `protocol,sent_ns,left_ns`): when each watch
  event's bytes left the server. The reference server on aioquic writes `h3` lines: when the
  event's last byte was first put into a datagram that the server then sent (a retransmission
  does not count again). The reader also takes `h2` lines (another server could stamp them).
- The **TCP offset log** (`TCP_OFFSET_LOG_ENV`, `sent_ns,client_port,end_offset`): for h2, where
  each event's TLS record ends in its connection's TCP stream (bytes from the first byte after
  the SYN) and the client's port; the emulator's log of first transmissions (lab.link.emulator,
  tcp-sent.csv) says when those bytes left, and the runner joins the two.

The runner names the files in the env vars; a server without them writes nothing. One file of
each kind per server process. queue time = left_ns − sent_ns (at the sender: flow control, the
congestion window, the send buffer); the rest = received_ns − left_ns (the network, and the
receiver waiting for missing data: HOL).
"""

from __future__ import annotations

import functools
import os
from typing import TextIO

DEPARTURE_LOG_ENV = "LAB_DEPARTURE_LOG"
DEPARTURE_LOG_HEADER = "protocol,sent_ns,left_ns\n"
DEPARTURE_PROTOCOLS = ("h2", "h3")
TCP_OFFSET_LOG_ENV = "LAB_TCP_OFFSET_LOG"
TCP_OFFSET_LOG_HEADER = "sent_ns,client_port,end_offset\n"


class _CsvLog:
    """Appends lines to an open text file after `header`; flushes every `flush_every` lines
    (default each: the runner reads it while the server runs)."""

    def __init__(self, out: TextIO, header: str, flush_every: int = 1) -> None:
        self._out = out
        self._flush_every = flush_every
        self._pending = 0
        out.write(header)
        out.flush()

    def _line(self, line: str) -> None:
        self._out.write(line)
        self._pending += 1
        if self._pending >= self._flush_every:
            self.flush()

    def flush(self) -> None:
        self._out.flush()
        self._pending = 0


class DepartureLog(_CsvLog):
    """Appends (protocol, sent_ns, left_ns) lines to an open text file (see `_CsvLog`)."""

    def __init__(self, out: TextIO, flush_every: int = 1) -> None:
        super().__init__(out, DEPARTURE_LOG_HEADER, flush_every)

    def record(self, protocol: str, sent_ns: int, left_ns: int) -> None:
        """One event of `protocol` ("h2" or "h3") stamped `sent_ns` left at `left_ns`."""
        if protocol not in DEPARTURE_PROTOCOLS:
            raise ValueError(f"protocol {protocol!r}: not one of {DEPARTURE_PROTOCOLS}")
        self._line(f"{protocol},{sent_ns},{left_ns}\n")


class TcpOffsetLog(_CsvLog):
    """Appends (sent_ns, client_port, end_offset) lines to an open text file (see `_CsvLog`)."""

    def __init__(self, out: TextIO, flush_every: int = 1) -> None:
        super().__init__(out, TCP_OFFSET_LOG_HEADER, flush_every)

    def record(self, sent_ns: int, client_port: int, end_offset: int) -> None:
        """The h2 event stamped `sent_ns` ends (with its TLS record) at byte `end_offset`
        (exclusive, from the first byte after the SYN) of the TCP stream to `client_port`."""
        if end_offset < 1:
            raise ValueError(f"end offset {end_offset}: an event has at least one byte")
        self._line(f"{sent_ns},{client_port},{end_offset}\n")


@functools.cache
def departure_log() -> DepartureLog | None:
    """The process's log, opened (truncated) on first use at the path in DEPARTURE_LOG_ENV;
    None when it is not set. One per process: every h3 server of `lab serve` writes to it."""
    path = os.environ.get(DEPARTURE_LOG_ENV)
    if not path:
        return None
    return DepartureLog(open(path, "w", encoding="ascii"))  # open for the life of the process


@functools.cache
def tcp_offset_log() -> TcpOffsetLog | None:
    """The process's TCP offset log, opened (truncated) on first use at the path in
    TCP_OFFSET_LOG_ENV; None when it is not set."""
    path = os.environ.get(TCP_OFFSET_LOG_ENV)
    if not path:
        return None
    return TcpOffsetLog(open(path, "w", encoding="ascii"))  # open for the life of the process
