"""The TCP stream under the h2 server's TLS when departures are measured: it counts the
ciphertext bytes written and logs, per watch event, where its TLS record ends in the TCP stream
(`sent_ns, client_port, end_offset`, lab.http.departure_log.TcpOffsetLog).

Used only when `tcp_offset_log()` is not None; without it the server keeps trio's SocketStream.
It wraps the SocketStream right after accept, before the TLS handshake, so the count starts at
the stream's first byte (ISN + 1). When the bytes left is not known here: the link emulator logs
the first transmission of each TCP segment of the downlink (lab.link.emulator.TcpSentLog) and
the runner joins the two (lab.run.departures.tcp_departures). Not the kernel's transmit
timestamps: Linux appends send calls to an unsent GSO skb and, when the congestion window lets
only part of it out, the stamp moves with the later part (docs/metrics.md).

Per batch the h2 writer calls `expect(plaintext length, [(sent_ns, plaintext end), ...])` before
its TLS write and `batch_sent()` after it. When the ciphertext of the write is exactly whole TLS
1.3 records (`tls_records.tls13_record_ends`), each event ends where its record ends; otherwise
(other bytes rode along) at the batch's end: an upper bound, counted in `batch_bounded`.
"""

from __future__ import annotations

import logging

import trio

from lab.http.departure_log import TcpOffsetLog
from lab.http.tls_records import tls13_record_ends

log = logging.getLogger(__name__)


class TcpOffsetStream(trio.abc.Stream):
    """A trio Stream over one accepted TCP connection that counts what it sends (see the
    module docstring). Owns the SocketStream and closes it."""

    def __init__(self, stream: trio.SocketStream, offsets: TcpOffsetLog, client_port: int) -> None:
        self._stream = stream
        self._log = offsets
        self.client_port = client_port
        self.sent_bytes = 0  # ciphertext bytes handed to the socket since accept
        self._plan: tuple[int, list[tuple[int, int]]] | None = None
        self._late: list[tuple[int, int]] = []  # events to place at the batch's end
        self.logged = 0
        self.batch_bounded = 0  # events placed at their batch's end, not their record's

    @classmethod
    def open(cls, stream: trio.SocketStream, offsets: TcpOffsetLog) -> TcpOffsetStream | None:
        """Wrap `stream` (nothing sent on it yet); None when its peer's port is unknown."""
        try:
            client_port = int(stream.socket.getpeername()[1])
        except OSError:
            return None
        return cls(stream, offsets, client_port)

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
            self._record(sent_ns, self.sent_bytes)

    def _place(self, cipher_bytes: int) -> None:
        """Log the announced events of a write of `cipher_bytes` starting at `sent_bytes`."""
        plan, self._plan = self._plan, None
        if plan is None:
            return
        plain_bytes, events = plan
        ends = tls13_record_ends(plain_bytes, cipher_bytes, [p for _, p in events])
        if ends is None:
            self._late += events
            return
        for (sent_ns, _), end in zip(events, ends, strict=True):
            self._record(sent_ns, self.sent_bytes + end)

    def _record(self, sent_ns: int, end_offset: int) -> None:
        self._log.record(sent_ns, self.client_port, end_offset)
        self.logged += 1

    # --- trio.abc.Stream ---------------------------------------------------------------------
    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        size = len(data)
        self._place(size)
        await self._stream.send_all(data)
        self.sent_bytes += size

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        if self.logged:
            log.info(
                "h2 tcp offsets (port %d): %d logged (%d bounded by their batch)",
                self.client_port,
                self.logged,
                self.batch_bounded,
            )
        await self._stream.aclose()
