"""The HTTP/3 client: QUIC (aioquic or qh3) driven on trio, with cold, resumed and 0-RTT modes.

`open_h3(opts)` yields an `H3Connection` implementing `lab.http.types.Connection`. In
`zero_rtt` mode it yields *before* the handshake completes, so requests issued right away leave
in 0-RTT packets (`timings.early_data_sent`); the server's `lab-early-data: 1` response header
(`Response.early_data`) proves they were taken as early data. All timestamps are
CLOCK_MONOTONIC ns (`time.monotonic_ns()`); a chunk's time is the receive time of the datagram
that carried it.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import AsyncIterator
from typing import Any, TextIO

import trio

from lab.http.exchange import ClientConnection, Exchange, Head, authority_of
from lab.http.h3_control import GoawayWatcher
from lab.http.h3_driver import QuicDriver, StreamClosedError
from lab.http.h3_head_response import client_h3_connection
from lab.http.quic_engine import load_engine, peer_stream_credit
from lab.http.tls import keylog_file
from lab.http.types import (
    ChunkCallback,
    ConnectionTimings,
    ConnectOptions,
    HttpProtocol,
    RequestFailed,
)
from lab.http.udp import UdpEndpoint


class H3RequestError(RequestFailed):
    """The request could not complete: stream reset, GOAWAY, or connection closed."""


class H3Connection(QuicDriver, ClientConnection[Exchange]):
    """An open HTTP/3 connection (the `Connection` protocol of lab.http.types)."""

    protocol: HttpProtocol = "h3"

    def __init__(self, opts: ConnectOptions, connect_start_ns: int, keylog: TextIO | None) -> None:
        engine = load_engine(opts.quic.engine)
        self.opts = opts
        self.timings = ConnectionTimings(connect_start_ns=connect_start_ns)
        self.goaway_stream_id: int | None = None  # first request stream the server refuses
        self._goaways = GoawayWatcher()
        cfg = engine.make_configuration(
            opts.quic,
            is_client=True,
            server_name=opts.server_name,
            secrets_log_file=keylog,
            qlog_dir=opts.quic.qlog_dir,
        )
        engine.set_verification(cfg, opts.ca_file)
        self.ticket_allows_early_data = False
        if opts.mode != "cold":
            ticket = opts.tickets.get("h3", opts.host, opts.port) if opts.tickets else None
            if ticket is None:
                raise ValueError(f"mode {opts.mode!r} needs a stored h3 session ticket")
            if opts.mode == "resumed":
                ticket = engine.without_early_data(ticket)
            cfg.session_ticket = ticket
            self.ticket_allows_early_data = engine.allows_early_data(ticket)
        self.peer = _resolve(opts.host, opts.port)
        endpoint = UdpEndpoint.for_peer(self.peer[0])
        quic = engine.connection_class(configuration=cfg, session_ticket_handler=self._store_ticket)
        super().__init__(engine, quic, endpoint)
        self.handshake_done = trio.Event()
        # qh3 takes a whole batch of datagrams in one native call; its events then carry the
        # receive time of the batch's last datagram (one wake-up's reads, microseconds apart)
        self._batch_receive = hasattr(quic, "receive_many_datagrams")
        self._responses: dict[int, Exchange] = {}
        self.authority = authority_of(opts.server_name, opts.port)

    @property
    def early_data_accepted(self) -> bool | None:
        """`timings.early_data_accepted`, or None before the handshake completed."""
        return self.timings.early_data_accepted if self.handshake_done.is_set() else None

    def _store_ticket(self, ticket: Any) -> None:
        if self.opts.tickets is not None:
            self.opts.tickets.put("h3", self.opts.host, self.opts.port, ticket)

    def ensure_h3(self) -> None:
        """Create the H3Connection (once); responses to HEAD keep their content-length
        (lab.http.h3_head_response)."""
        if self.h3 is None:
            self.h3 = client_h3_connection(self.engine.h3)(self.quic)

    # --- engine events ---------------------------------------------------------------------

    def on_quic_event(self, event: Any) -> None:
        if isinstance(event, self.engine.events.HandshakeCompleted):
            self.timings.handshake_done_ns = time.monotonic_ns()
            self.timings.resumed = bool(event.session_resumed)
            self.timings.early_data_accepted = bool(event.early_data_accepted)
            self.handshake_done.set()
        elif isinstance(event, self.engine.events.StreamDataReceived) and event.stream_id % 4 == 3:
            for goaway_id in self._goaways.feed(event.stream_id, event.data):  # server uni stream
                self._on_goaway(goaway_id)

    def _on_goaway(self, stream_id: int) -> None:
        """Requests on streams ≥ `stream_id` were not and will not be processed (RFC 9114 §5.2);
        they fail now, the others may still complete; new requests fail at once."""
        self.timings.goaway_received = True
        if self.goaway_stream_id is None or stream_id < self.goaway_stream_id:
            self.goaway_stream_id = stream_id
        for sid, pending in self._responses.items():
            if sid >= stream_id:
                pending.fail(H3RequestError(f"stream {sid} not processed (GOAWAY {stream_id})"))
        self.wake()  # requests waiting for stream credit give up

    def on_h3_event(self, event: Any, rx_ns: int) -> None:
        h3e = self.engine.h3_events
        pending = self._responses.get(getattr(event, "stream_id", -1))
        if pending is None:
            return
        if isinstance(event, h3e.HeadersReceived):
            pending.on_head(event.headers)
        elif isinstance(event, h3e.DataReceived) and event.data:
            pending.on_data(event.data, rx_ns)
        if getattr(event, "stream_ended", False):
            if pending.status is None:
                sid = pending.stream_id
                pending.fail(H3RequestError(f"stream {sid} ended without a response"))
            pending.end(rx_ns)

    def on_terminated(self) -> None:
        super().on_terminated()
        reason = getattr(self.close_reason, "reason_phrase", "") or "connection closed"
        for pending in self._responses.values():
            pending.fail(H3RequestError(reason))
        self.handshake_done.set()

    # --- I/O tasks -------------------------------------------------------------------------

    async def receive_loop(self) -> None:
        """Read datagrams from the server until the connection ends."""
        while not self.terminated:
            try:
                batch = await self.endpoint.receive_batch()
            except (OSError, trio.ClosedResourceError):
                return
            if self._batch_receive and len(batch) > 1 and self.handshake_done.is_set():
                self.receive_many([d for d, _, _ in batch], self.peer, batch[-1][2])
            else:
                for data, _addr, rx_ns in batch:
                    self.receive(data, self.peer, rx_ns)
            await self.transmit()
            self.wake()
            self._check_resets()

    def _check_resets(self) -> None:
        for stream_id in list(self.reset_streams):
            pending = self._responses.get(stream_id)
            if pending is not None:
                pending.fail(H3RequestError(f"stream {stream_id} reset by the server"))

    async def start(self) -> None:
        """Send the first flight (ClientHello, plus 0-RTT keys when the ticket allows)."""
        self.quic.connect(self.peer, now=time.monotonic())
        if self.opts.mode == "zero_rtt":
            self.ensure_h3()  # SETTINGS and requests go out in 0-RTT packets
        await self.transmit()

    # --- the exchange hooks of ClientConnection.request (the Connection protocol) ----------

    async def _open_exchange(self, keep_body: bool, on_chunk: ChunkCallback | None) -> Exchange:
        await self._wait_stream_credit()
        self.ensure_h3()
        stream_id = self.quic.get_next_available_stream_id()
        exchange = self._responses[stream_id] = Exchange(stream_id, keep_body, on_chunk)
        return exchange

    async def _send_request(self, exchange: Exchange, head: Head, body: bytes) -> None:
        """Requests sent before the handshake completed leave in 0-RTT when the ticket allows."""
        early = not self.handshake_done.is_set() and self.ticket_allows_early_data
        stream_id = exchange.stream_id
        try:
            self.h3.send_headers(stream_id, head, end_stream=not body)
            if body:
                await self.write_body(stream_id, body, end_stream=True)
            else:
                await self.transmit()
        except StreamClosedError as exc:
            raise H3RequestError(str(exc)) from exc
        exchange.request_sent_ns = time.monotonic_ns()
        if early:
            self.timings.early_data_sent = True

    def _close_exchange(self, exchange: Exchange) -> None:
        self._responses.pop(exchange.stream_id, None)

    async def _wait_stream_credit(self) -> None:
        """Wait until the server's MAX_STREAMS lets one more request stream open (as the h2
        client waits for SETTINGS_MAX_CONCURRENT_STREAMS); raise once the connection closed
        or the server sent GOAWAY."""
        while True:
            if self.terminated:
                raise H3RequestError("h3 connection closed")
            if self.goaway_stream_id is not None:
                raise H3RequestError(f"h3 server sent GOAWAY ({self.goaway_stream_id})")
            credit = peer_stream_credit(self.quic)
            if credit is None or self.quic.get_next_available_stream_id() // 4 < credit:
                return
            await self.wait_progress()

    async def aclose(self) -> None:
        """Close with CONNECTION_CLOSE (H3_NO_ERROR) and stop the I/O tasks."""
        if not self.terminated:
            with contextlib.suppress(Exception):
                self.quic.close(error_code=0x100, reason_phrase="")
            await self.transmit()
        self.terminated = True
        self.on_terminated()


def _resolve(host: str, port: int) -> tuple[str, int]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    sockaddr = infos[0][4]
    return str(sockaddr[0]), int(sockaddr[1])


@contextlib.asynccontextmanager
async def open_h3(opts: ConnectOptions) -> AsyncIterator[H3Connection]:
    """Open an HTTP/3 connection; yields after the handshake (cold, resumed) or right after
    the first flight (zero_rtt). Closes on exit. Raises TimeoutError past connect_timeout_s."""
    # Import the engine first: its first import (~0.1 s of Python) is not part of opening a
    # connection and must not land in the first connection's TTFB.
    load_engine(opts.quic.engine)
    connect_start_ns = time.monotonic_ns()
    keylog = keylog_file()
    conn: H3Connection | None = None
    try:
        conn = H3Connection(opts, connect_start_ns, keylog)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(conn.receive_loop)
            nursery.start_soon(conn.timer_loop)
            await conn.start()
            if opts.mode != "zero_rtt":
                with trio.move_on_after(opts.connect_timeout_s) as scope:
                    await conn.handshake_done.wait()
                if scope.cancelled_caught or conn.timings.handshake_done_ns is None:
                    raise TimeoutError(
                        f"h3 handshake with {opts.host}:{opts.port} did not complete: "
                        f"{getattr(conn.close_reason, 'reason_phrase', 'timeout')}"
                    )
            try:
                yield conn
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    await conn.aclose()
                nursery.cancel_scope.cancel()
    finally:
        if conn is not None:
            conn.endpoint.close()
        if keylog is not None:
            keylog.close()
