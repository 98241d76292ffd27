"""The TCP stream under the h2 server's TLS when departures are logged: it counts the ciphertext
bytes it writes, cuts its send calls where watch events' TLS records end, reads the kernel's
transmit timestamps from the socket's error queue and logs (sent_ns, left_ns) per event.

Used only when `lab.http.departure_log.departure_log()` is not None; without it the server
keeps trio's own SocketStream and nothing here runs.

Why a stream of its own rather than trio's SocketStream: a non-empty error queue keeps the
socket's epoll state at EPOLLERR, which wakes every task waiting on the socket; trio's recv/send
would then retry, get EAGAIN and wait again in a busy loop until someone drains the queue. Here
every wake-up drains it first. The reader is almost always parked in `receive_some`, so reports
are read as they arrive; the writer drains after each write too. No periodic task is needed.

Per batch the h2 writer calls `expect(plaintext length, [(sent_ns, plaintext end), ...])` before
its TLS write and `batch_sent()` after it. When the ciphertext is exactly whole TLS 1.3 records
(`tx_timestamps.tls13_record_ends`), each event ends at the end of its record and the send call
is cut there, so the kernel stamps that byte: the time is that of the event's own record, which
is when the receiver could first read the event. Otherwise (other bytes rode along) the event
ends at the batch's end: an upper bound of at most one batch. Cutting send calls changes no TLS
record; on an open path it can send one short segment more per cut.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import trio

from lab.http.departure_log import DepartureLog
from lab.http.tx_timestamps import (
    ERRQUEUE_ANCILLARY_BYTES,
    SO_TIMESTAMPING_OLD,
    SOF_TIMESTAMPING_OPT_ID_TCP,
    TX_STAMP_FLAGS,
    Departed,
    DepartureTracker,
    clock_offset_ns,
    parse_tx_report,
    tls13_record_ends,
)

log = logging.getLogger(__name__)

SO_TIMESTAMPING: int = getattr(socket, "SO_TIMESTAMPING", SO_TIMESTAMPING_OLD)
RECEIVE_DEFAULT_BYTES = 65536
_ERRQUEUE_FLAGS = socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT
_warned = False


def enable_tx_timestamps(sock: socket.socket | trio.socket.SocketType) -> bool:
    """Turn on software transmit timestamps keyed by byte offset on a connected TCP socket
    that has sent nothing yet; False (logged once) when the kernel refuses."""
    global _warned
    for flags in (TX_STAMP_FLAGS | SOF_TIMESTAMPING_OPT_ID_TCP, TX_STAMP_FLAGS):
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPING, flags)
            return True
        except OSError as e:
            error = e
    if not _warned:
        _warned = True
        log.warning("SO_TIMESTAMPING refused (%s): h2 departures are not logged", error)
    return False


def _realtime_offset_ns(tries: int = 3) -> int:
    """CLOCK_REALTIME − CLOCK_MONOTONIC in ns, the tightest of `tries` readings (error ~0.2 µs
    here; one preempted reading alone can be off by tens of µs)."""
    best = (0, 1 << 62)
    for _ in range(tries):
        before = time.monotonic_ns()
        real = time.time_ns()
        reading = clock_offset_ns(before, real, time.monotonic_ns())
        if reading[1] < best[1]:
            best = reading
    return best[0]


class TxStampedStream(trio.abc.Stream):
    """A trio Stream over one accepted TCP connection with transmit timestamps on (see the
    module docstring). Owns a dup of the socket's fd and the SocketStream; closes both."""

    def __init__(self, stream: trio.SocketStream, departures: DepartureLog) -> None:
        self._stream = stream
        self._sock = socket.socket(fileno=os.dup(stream.socket.fileno()))  # same socket
        self._sock.setblocking(False)  # it is already (one open file); say so to Python
        self._log = departures
        self.tracker = DepartureTracker()
        self.sent_bytes = 0  # ciphertext bytes written since timestamping was enabled
        self._plan: tuple[int, list[tuple[int, int]]] | None = None
        self._late: list[tuple[int, int]] = []  # events to place at the batch's end
        self._closed = False
        self.logged = 0
        self.batch_bounded = 0  # events placed at their batch's end, not their record's
        self.foreign = 0  # error-queue messages that were not transmit reports

    @classmethod
    def open(cls, stream: trio.SocketStream, departures: DepartureLog) -> TxStampedStream | None:
        """Enable timestamps on `stream`'s socket and wrap it; None when the kernel refuses."""
        if not enable_tx_timestamps(stream.socket):
            return None
        return cls(stream, departures)

    # --- the h2 writer's side ----------------------------------------------------------------
    def expect(self, plain_bytes: int, events: list[tuple[int, int]]) -> None:
        """The next TLS write carries `plain_bytes` of plaintext; `events` are (sent_ns,
        plaintext end) of the watch events in it."""
        self._plan = (plain_bytes, events)

    def batch_sent(self) -> None:
        """The TLS write announced by `expect` is in the socket: events not placed by their
        record end at its end."""
        if self._plan is not None:  # the write never reached send_all as one piece
            self._late += self._plan[1]
            self._plan = None
        late, self._late = self._late, []
        self.batch_bounded += len(late)
        for sent_ns, _ in late:
            self._record(self.tracker.pending(sent_ns, self.sent_bytes))
        self.drain()

    def _cuts(self, cipher_bytes: int) -> list[int]:
        """Place the announced events of a write of `cipher_bytes`; the offsets (from the
        write's start) where its send calls must end."""
        plan, self._plan = self._plan, None
        if plan is None:
            return []
        plain_bytes, events = plan
        ends = tls13_record_ends(plain_bytes, cipher_bytes, [p for _, p in events])
        if ends is None:
            self._late += events
            return []
        start = self.sent_bytes
        for (sent_ns, _), end in zip(events, ends, strict=True):
            self._record(self.tracker.pending(sent_ns, start + end))
        return sorted(set(ends))

    # --- trio.abc.Stream ---------------------------------------------------------------------
    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        await trio.lowlevel.checkpoint_if_cancelled()
        with memoryview(data) as view:
            total = len(view)
            pos = 0
            for cut in [*self._cuts(total), total]:
                while pos < cut:
                    try:
                        n = self._sock.send(view[pos:cut])
                    except BlockingIOError:
                        self.drain()
                        await trio.lowlevel.wait_writable(self._sock)
                        continue
                    except OSError as e:
                        raise trio.BrokenResourceError(str(e)) from e
                    pos += n
                    self.sent_bytes += n
        self.drain()
        await trio.lowlevel.cancel_shielded_checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        self.drain()
        await trio.lowlevel.wait_writable(self._sock)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._closed:
            raise trio.ClosedResourceError("stream closed")
        size = RECEIVE_DEFAULT_BYTES if max_bytes is None else max_bytes
        if size < 1:
            raise ValueError("max_bytes must be >= 1")
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            self.drain()
            try:
                data = self._sock.recv(size)
            except BlockingIOError:
                await trio.lowlevel.wait_readable(self._sock)
                continue
            except OSError as e:
                raise trio.BrokenResourceError(str(e)) from e
            await trio.lowlevel.cancel_shielded_checkpoint()
            return data

    async def aclose(self) -> None:
        """Read the last reports, then close both fds (before the first checkpoint, so a
        cancelled close still closes)."""
        if not self._closed:
            self._closed = True
            self.drain()
            trio.lowlevel.notify_closing(self._sock)
            self._sock.close()
            t = self.tracker
            log.info(
                "h2 departures: %d logged (%d bounded by their batch), %d never reported, "
                "%d dropped above %d pending, %d foreign error-queue messages",
                self.logged,
                self.batch_bounded,
                t.waiting,
                t.dropped,
                t.max_pending,
                self.foreign,
            )
        await self._stream.aclose()

    # --- the error queue ---------------------------------------------------------------------
    def drain(self) -> None:
        """Read every queued transmit report without blocking and log the events it completes."""
        offset: int | None = None
        while True:
            try:
                _data, ancdata, _flags, _addr = self._sock.recvmsg(
                    0, ERRQUEUE_ANCILLARY_BYTES, _ERRQUEUE_FLAGS
                )
            except OSError:  # BlockingIOError: empty; EBADF: closed
                return
            report = parse_tx_report(ancdata)
            if report is None:
                self.foreign += 1
                continue
            if offset is None:  # once per drain: the clocks do not drift apart in µs
                offset = _realtime_offset_ns()
            self._record(self.tracker.reported(report.key, report.realtime_ns - offset))

    def _record(self, departed: list[Departed]) -> None:
        for d in departed:
            self._log.record("h2", d.sent_ns, d.left_ns)
        self.logged += len(departed)
