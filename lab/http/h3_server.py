"""The HTTP/3 front end of the reference server: UDP + QUIC (aioquic or qh3) on trio.

One UDP socket; datagrams are routed to connections by destination connection id (the client's
original one, the server's first one, and every id the server issued later). Each request runs in
its own trio task calling `handler(request, writer)`; `writer.send_data` waits on QUIC flow
control and congestion instead of buffering. Session tickets are issued and are single-use, so a
replayed first flight cannot get its 0-RTT data accepted a second time; requests (any part of
which) arrived in 0-RTT packets carry `Request.early_data = True` for the 0-RTT policy of
`lab.http.app.handle` (425 for unsafe methods). Request heads are checked before a request is
dispatched (lab.http.h3_request_check; a malformed one is reset with H3_MESSAGE_ERROR), and a
client GOAWAY whose id increases closes the connection with H3_ID_ERROR (RFC 9114 §5.2).

State for connections that have not finished their handshake ("half-open") is bounded by
`config.quic_limits` (lab.http.h3_admission decides which datagrams may create it: garbage never
does, Retry above a threshold, a hard cap); a half-open connection is discarded silently after
`handshake_timeout_s`. Events are counted (lab.http.h3_stats) and logged once per second; the
totals are logged at shutdown. With `LAB_QUIC_SENDER_LOG` set (by the runner), each
connection's congestion window and bytes in flight are sampled to that file (lab.http.sender_log).
With `LAB_DEPARTURE_LOG` set, each watch event's departure in a datagram is logged there
(lab.http.h3_departures; aioquic only).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import trio

from lab.http.app import Request, ResponseWriter, respond_error
from lab.http.departure_log import departure_log
from lab.http.h3_admission import Admission, Gate, InitialHeader
from lab.http.h3_control import GoawayWatcher
from lab.http.h3_departures import departure_stamps
from lab.http.h3_driver import QuicDriver, StreamClosedError
from lab.http.h3_request_check import request_problem
from lab.http.h3_request_hook import server_h3_connection
from lab.http.h3_stats import STATS_INTERVAL_S, H3Stats
from lab.http.memory import release_freed_memory
from lab.http.quic_engine import (
    QH3_MAX_STREAMS,
    QuicEngine,
    end_qlog_trace,
    is_closing,
    load_engine,
)
from lab.http.quic_initial import invalid_token_close
from lab.http.sender_log import (
    SENDER_LOG_ENV,
    SENDER_LOG_HEADER,
    SENDER_SAMPLE_INTERVAL_S,
    write_samples,
)
from lab.http.settings import ServerConfig
from lab.http.tls import keylog_file
from lab.http.udp import UdpEndpoint

log = logging.getLogger(__name__)

Handler = Callable[[Request, ResponseWriter], Awaitable[None]]

MAX_TICKETS = 10_000
H3_NO_ERROR = 0x100
H3_INTERNAL_ERROR = 0x102
H3_REQUEST_REJECTED = 0x10B
H3_EXCESSIVE_LOAD = 0x107
H3_ID_ERROR = 0x108
H3_MESSAGE_ERROR = 0x10E


class TicketStore:
    """Server-side session tickets, in memory; each ticket can be used once (anti-replay)."""

    def __init__(self, capacity: int = MAX_TICKETS) -> None:
        self._tickets: OrderedDict[bytes, Any] = OrderedDict()
        self._capacity = capacity
        self.issued = 0
        self.redeemed = 0

    def add(self, ticket: Any) -> None:
        """session_ticket_handler: remember a ticket the server just issued."""
        self._tickets[ticket.ticket] = ticket
        self.issued += 1
        while len(self._tickets) > self._capacity:
            self._tickets.popitem(last=False)

    def pop(self, label: bytes) -> Any | None:
        """session_ticket_fetcher: the ticket for that label, removed so it works only once."""
        ticket = self._tickets.pop(label, None)
        if ticket is not None:
            self.redeemed += 1
        return ticket


@dataclass
class _RequestStream:
    stream_id: int
    headers: list[tuple[bytes, bytes]]
    body: bytearray = field(default_factory=bytearray)
    started: bool = False
    too_large: bool = False  # body over config.max_request_body_bytes: answered 413
    headers_sent: bool = False
    ended: bool = False  # our response is complete


class _Writer:
    """The ResponseWriter of one HTTP/3 request stream."""

    def __init__(self, conn: _ServerConnection, stream: _RequestStream) -> None:
        self._conn = conn
        self._stream = stream

    async def send_headers(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Send the response head (status + headers); must come first, once."""
        conn, stream = self._conn, self._stream
        if conn.stream_closed(stream.stream_id):
            raise StreamClosedError(f"stream {stream.stream_id} closed")
        if stream.headers_sent:
            raise RuntimeError("send_headers called twice")
        head = [(b":status", str(status).encode())]
        head += [(k.lower().encode(), v.encode()) for k, v in headers]
        conn.h3.send_headers(stream.stream_id, head, end_stream=False)
        stream.headers_sent = True
        await conn.transmit()

    async def send_data(
        self, data: bytes, end_stream: bool = False, *, stamp_ns: int | None = None
    ) -> None:
        """Send body bytes, waiting on QUIC flow control; end_stream finishes the response;
        `stamp_ns` (one watch event) is logged when the bytes leave (lab.http.h3_departures)."""
        stream = self._stream
        if not stream.headers_sent:
            raise RuntimeError("send_data before send_headers")
        if stream.ended:
            raise RuntimeError("response already ended")
        await self._conn.write_body(stream.stream_id, data, end_stream, stamp_ns)
        if end_stream:
            stream.ended = True


class _ServerConnection(QuicDriver):
    """One server-side QUIC connection and its request tasks."""

    def __init__(
        self, server: _H3Server, quic: Any, addr: Any, cids: list[bytes], nursery: trio.Nursery
    ) -> None:
        super().__init__(server.engine, quic, server.endpoint)
        self.departures = departure_stamps(server.engine.name, quic, server.departure_log)
        self.server = server
        self.addr = addr
        self.cids: set[bytes] = set(cids)
        self.nursery = nursery
        self.streams: dict[int, _RequestStream] = {}
        self.in_flight = 0
        self.goaway_stream_id: int | None = None
        self.next_request_stream_id = 0
        self.peer_goaways = GoawayWatcher()  # the client's control stream, for its GOAWAY ids
        self.peer_goaway_id: int | None = None  # the last push id a client GOAWAY named

    def ensure_h3(self) -> None:
        """Create the H3Connection (once); request heads are checked here, not by the engine
        (lab.http.h3_request_hook)."""
        if self.h3 is None:
            self.h3 = server_h3_connection(self.engine.h3)(self.quic)

    def on_quic_event(self, event: Any) -> None:
        events = self.engine.events
        if isinstance(event, events.HandshakeCompleted):
            self.server.handshake_completed(self)
        elif isinstance(event, events.ConnectionIdIssued):
            self.cids.add(event.connection_id)
            self.server.routes[event.connection_id] = self
        elif isinstance(event, events.ConnectionIdRetired):
            self.cids.discard(event.connection_id)
            if self.server.routes.get(event.connection_id) is self:
                del self.server.routes[event.connection_id]
        elif isinstance(event, events.StreamDataReceived) and event.stream_id % 4 == 2:
            for push_id in self.peer_goaways.feed(event.stream_id, event.data):  # client uni
                self._on_peer_goaway(push_id)

    def _on_peer_goaway(self, push_id: int) -> None:
        """A client's GOAWAY names a push id, which must never increase (RFC 9114 §5.2); the
        engines do not check it, so a larger id closes the connection with H3_ID_ERROR here."""
        last, self.peer_goaway_id = self.peer_goaway_id, push_id
        if last is not None and push_id > last:
            reason = f"GOAWAY push id increased from {last} to {push_id}"
            with contextlib.suppress(Exception):
                self.quic.close(error_code=H3_ID_ERROR, reason_phrase=reason)

    def on_h3_event(self, event: Any, rx_ns: int) -> None:
        h3e = self.engine.h3_events
        stream_id: int = getattr(event, "stream_id", -1)  # -1: not a stream event
        if isinstance(event, h3e.HeadersReceived):
            stream = self.streams.get(stream_id)
            if stream is not None:  # trailers: ignored, but they may end the request
                if event.stream_ended:
                    self._start(stream)
                return
            if self.goaway_stream_id is not None and stream_id >= self.goaway_stream_id:
                self._reject(stream_id, H3_REQUEST_REJECTED)
                return
            self.next_request_stream_id = max(self.next_request_stream_id, stream_id + 4)
            problem = request_problem(event.headers)
            if problem is not None:  # malformed: a stream error (RFC 9114 §4.1.2)
                log.debug("h3 stream %d: malformed request (%s)", stream_id, problem)
                self._reject(stream_id, H3_MESSAGE_ERROR)
                return
            stream = _RequestStream(stream_id, list(event.headers))
            self.streams[stream_id] = stream
            if event.stream_ended:
                self._start(stream)
        elif isinstance(event, h3e.DataReceived):
            stream = self.streams.get(stream_id)
            if stream is None or stream.started:
                return
            stream.body += event.data
            if len(stream.body) > self.server.config.max_request_body_bytes:
                stream.too_large = True
                stream.body.clear()
                self._start(stream)  # 413, then STOP_SENDING for the rest of the body
                return
            if event.stream_ended:
                self._start(stream)

    def _reject(self, stream_id: int, code: int) -> None:
        with contextlib.suppress(Exception):
            self.quic.reset_stream(stream_id, code)
        with contextlib.suppress(Exception):
            self.quic.stop_stream(stream_id, code)

    def _start(self, stream: _RequestStream) -> None:
        if stream.started:
            return
        stream.started = True
        self.in_flight += 1
        self.nursery.start_soon(self._run_request, stream)

    def _build_request(self, stream: _RequestStream) -> Request | None:
        """The Request; headers include the pseudo-headers, as on h2 (None: no method/path)."""
        headers = tuple((n.decode("latin-1"), v.decode("latin-1")) for n, v in stream.headers)
        pseudo = {n: v for n, v in headers if n.startswith(":")}
        method, path = pseudo.get(":method"), pseudo.get(":path")
        if not method or not path:
            return None
        return Request(
            method=method,
            path=path,
            headers=headers,
            body=bytes(stream.body),
            protocol="h3",
            stream_id=stream.stream_id,
            early_data=stream.stream_id in self.quic.zero_rtt_stream_ids,
        )

    async def _run_request(self, stream: _RequestStream) -> None:
        writer = _Writer(self, stream)
        try:
            request = self._build_request(stream)
            if request is None:
                await writer.send_headers(400, [("content-length", "0")])
                await writer.send_data(b"", end_stream=True)
                return
            if stream.too_large:
                msg = "request body too large"
                await respond_error(request, writer, self.server.config, 413, msg)
                with contextlib.suppress(Exception):
                    self.quic.stop_stream(stream.stream_id, H3_EXCESSIVE_LOAD)
                await self.transmit()
                return
            await self.server.handler(request, writer)
            if not stream.ended and not self.stream_closed(stream.stream_id):
                if not stream.headers_sent:
                    await writer.send_headers(500, [("content-length", "0")])
                await writer.send_data(b"", end_stream=True)
        except StreamClosedError:
            pass
        except Exception as exc:
            log.warning("h3 handler failed on stream %d: %r", stream.stream_id, exc, exc_info=exc)
            await self._abort(stream, writer)
        finally:
            self.in_flight -= 1
            self.streams.pop(stream.stream_id, None)
            self.server.request_done()

    async def _abort(self, stream: _RequestStream, writer: _Writer) -> None:
        if self.stream_closed(stream.stream_id) or stream.ended:
            return
        try:
            if not stream.headers_sent:
                await writer.send_headers(500, [("content-length", "0")])
                await writer.send_data(b"", end_stream=True)
            else:
                self.quic.reset_stream(stream.stream_id, H3_INTERNAL_ERROR)
                await self.transmit()
        except Exception:
            pass

    async def goaway(self) -> None:
        """Send H3 GOAWAY: requests on streams from `next_request_stream_id` on are refused."""
        if self.goaway_stream_id is not None or self.h3 is None or is_closing(self.quic):
            return
        self.goaway_stream_id = self.next_request_stream_id
        control = getattr(self.h3, "_local_control_stream_id", None)
        if control is not None:
            try:
                self.quic.send_stream_data(
                    control, self.engine.encode_goaway(self.goaway_stream_id)
                )
            except Exception as exc:
                self.fail(exc)
        await self.transmit()

    async def close(self) -> None:
        """Close with H3_NO_ERROR and send the CONNECTION_CLOSE."""
        if not is_closing(self.quic):
            with contextlib.suppress(Exception):
                self.quic.close(error_code=H3_NO_ERROR, reason_phrase="server shutdown")
            await self.transmit()

    def discard(self) -> None:
        """Drop the connection without a word (its handshake did not finish in time): like an
        idle timeout (RFC 9000 §10.1), nothing is sent and the state is freed now."""
        if self.terminated:
            return
        self.terminated = True
        with contextlib.suppress(Exception):
            end_qlog_trace(self.quic)
        self.on_terminated()

    def on_terminated(self) -> None:
        super().on_terminated()
        self.server.forget(self)


class _H3Server:
    """Routes datagrams to connections and owns the shared configuration and tickets."""

    def __init__(
        self,
        config: ServerConfig,
        handler: Handler,
        endpoint: UdpEndpoint,
        nursery: trio.Nursery,
        secrets_log: TextIO | None,
    ) -> None:
        self.config = config
        self.engine: QuicEngine = load_engine(config.quic.engine)
        self.handler = handler
        self.endpoint = endpoint
        self.nursery = nursery
        self.tickets = TicketStore()
        self.routes: dict[bytes, _ServerConnection] = {}
        self.connections: set[_ServerConnection] = set()
        # half-open connections → trio deadline, in creation (= deadline) order
        self.half_open: dict[_ServerConnection, float] = {}
        self._half_open_added = trio.Event()
        self.burst_half_open = 0  # the half-open peak since memory was last given back
        self.limits = config.quic_limits
        self.stats = H3Stats()
        self.departure_log = departure_log()  # None unless the runner asked for stamps
        self.accepting = True
        self._idle = trio.Event()
        cfg = self.engine.make_configuration(
            config.quic,
            is_client=False,
            secrets_log_file=secrets_log,
            qlog_dir=config.quic.qlog_dir,
        )
        if config.cert_file is None or config.key_file is None:
            raise ValueError("serve_h3 needs config.cert_file and config.key_file")
        self.engine.load_cert_chain(cfg, config.cert_file, config.key_file)
        self.quic_config = cfg
        self.cid_length = cfg.connection_id_length
        self.gate = Gate(self.limits, cfg.supported_versions)
        wanted = config.quic.max_concurrent_streams
        if self.engine.name == "qh3" and wanted != QH3_MAX_STREAMS:
            log.warning("qh3 fixes max streams at %d; %d ignored", QH3_MAX_STREAMS, wanted)

    async def receive_loop(self) -> None:
        """Read datagrams forever and route them."""
        while True:
            batch = await self.endpoint.receive_batch()
            touched: dict[int, _ServerConnection] = {}
            for data, addr, rx_ns in batch:
                conn = self._route(data, addr[:2])
                if conn is not None:
                    conn.receive(data, addr[:2], rx_ns)
                    touched[id(conn)] = conn
            for conn in touched.values():
                await conn.transmit()
                conn.wake()

    def _route(self, data: bytes, addr: Any) -> _ServerConnection | None:
        try:
            header = self.engine.pull_header(data, self.cid_length)
        except Exception:
            self.stats.note("drop_unparsable")
            return None  # not a QUIC packet
        conn = self.routes.get(header.destination_cid)
        if conn is not None:
            return conn
        initial = InitialHeader(
            is_initial=header.packet_type == self.engine.packet.QuicPacketType.INITIAL,
            version=header.version or 0,
            destination_cid=header.destination_cid,
            source_cid=header.source_cid,
            token=header.token or b"",
        )
        admission = self.gate.admit(
            initial,
            data,
            addr,
            half_open=len(self.half_open),
            accepting=self.accepting,
            now=time.monotonic(),
        )
        self.stats.note(admission.verdict)
        if admission.verdict == "accept":
            return self._accept(initial, admission, addr)
        if admission.verdict == "retry":
            self._send_retry(initial, addr)
        elif admission.verdict == "invalid_token":
            version, dcid, scid = initial.version, initial.destination_cid, initial.source_cid
            self._send_stateless(invalid_token_close(version, dcid, scid), addr)
        elif admission.verdict == "version_negotiation":
            self._send_version_negotiation(initial, addr)
        return None

    def _accept(self, header: InitialHeader, admission: Admission, addr: Any) -> _ServerConnection:
        quic = self.engine.connection_class(
            configuration=self.quic_config,
            original_destination_connection_id=admission.original_dcid,
            retry_source_connection_id=admission.retry_source_cid,
            session_ticket_fetcher=self.tickets.pop,
            session_ticket_handler=self.tickets.add,
        )
        self.engine.set_max_streams(quic, self.config.quic.max_concurrent_streams)
        # the original id too, after a Retry: late copies of the first Initial find this
        # connection (whose keys do not open them) instead of creating another one; never
        # taking over an id that routes elsewhere (the client chose it)
        cids = {header.destination_cid, quic.host_cid}
        if admission.original_dcid is not None and admission.original_dcid not in self.routes:
            cids.add(admission.original_dcid)
        conn = _ServerConnection(self, quic, addr, list(cids), self.nursery)
        for cid in cids:
            self.routes[cid] = conn
        self.connections.add(conn)
        self.half_open[conn] = trio.current_time() + self.limits.handshake_timeout_s
        self.stats.observe_half_open(len(self.half_open))
        self.burst_half_open = max(self.burst_half_open, len(self.half_open))
        self._half_open_added.set()
        self.nursery.start_soon(conn.timer_loop)
        return conn

    def _send_retry(self, header: InitialHeader, addr: Any) -> None:
        retry_source_cid = os.urandom(self.cid_length)
        token = self.gate.tokens.create(
            addr, header.destination_cid, retry_source_cid, time.monotonic()
        )
        packet = self.engine.packet.encode_quic_retry(
            version=header.version,
            source_cid=retry_source_cid,
            destination_cid=header.source_cid,
            original_destination_cid=header.destination_cid,
            retry_token=token,
        )
        self._send_stateless(packet, addr)

    def _send_version_negotiation(self, header: InitialHeader, addr: Any) -> None:
        packet = self.engine.packet.encode_quic_version_negotiation(
            source_cid=header.destination_cid,
            destination_cid=header.source_cid,
            supported_versions=self.quic_config.supported_versions,
        )
        self._send_stateless(packet, addr)

    def _send_stateless(self, packet: bytes, addr: Any) -> None:
        """Send an answer that belongs to no connection; lost when the socket buffer is full."""
        with contextlib.suppress(OSError):
            self.endpoint.sock.sendto(packet, addr)

    def handshake_completed(self, conn: _ServerConnection) -> None:
        """A connection is no longer half-open."""
        if self.half_open.pop(conn, None) is not None:
            self.stats.note("handshake_completed")

    async def expire_half_open(self) -> None:
        """Discard half-open connections at their handshake deadline (runs forever)."""
        while True:
            if not self.half_open:
                self._half_open_added = trio.Event()
                await self._half_open_added.wait()
                continue
            conn, deadline = next(iter(self.half_open.items()))
            if deadline > trio.current_time():
                await trio.sleep_until(deadline)
                continue
            del self.half_open[conn]
            self.stats.note("half_open_expired")
            conn.discard()

    async def report_stats(self) -> None:
        """Log the events of the last second and the state; give memory back after a burst of
        half-open connections (runs forever)."""
        while True:
            await trio.sleep(STATS_INTERVAL_S)
            burst = self.burst_half_open >= max(1, self.limits.retry_above_half_open)
            if burst and not self.half_open:
                self.burst_half_open = 0
                release_freed_memory()
                self.stats.note("memory_trimmed")
            for line in self.stats.tick_lines(len(self.connections), len(self.half_open)):
                log.info("%s", line)

    async def sample_senders(self, path: str) -> None:
        """Append each connection's congestion window and bytes in flight to `path` every
        SENDER_SAMPLE_INTERVAL_S (lab.http.sender_log; runs forever)."""
        with open(path, "w", encoding="ascii") as out:
            out.write(SENDER_LOG_HEADER)
            while True:
                try:
                    write_samples(out, ((id(c), c.quic) for c in self.connections))
                except Exception as e:  # a measurement must never take the server down
                    log.warning("sender sampling stopped: %s: %s", type(e).__name__, e)
                    return
                await trio.sleep(SENDER_SAMPLE_INTERVAL_S)

    def forget(self, conn: _ServerConnection) -> None:
        """Drop a terminated connection from the routing table."""
        self.connections.discard(conn)
        self.half_open.pop(conn, None)
        for cid in list(conn.cids):
            if self.routes.get(cid) is conn:
                del self.routes[cid]
        self.request_done()

    def request_done(self) -> None:
        """Wake the graceful shutdown when nothing is in flight any more."""
        if all(c.in_flight == 0 for c in self.connections):
            self._idle.set()

    async def shutdown(self, grace_s: float) -> None:
        """GOAWAY on every connection, wait for in-flight requests (≤ grace_s), close all."""
        self.accepting = False
        for conn in list(self.connections):
            await conn.goaway()
        with trio.move_on_after(grace_s):
            while any(c.in_flight for c in self.connections):
                self._idle = trio.Event()
                await self._idle.wait()
        for conn in list(self.connections):
            await conn.close()

    def end_qlog_traces(self) -> None:
        """Write the qlog of connections still closing when the server stops."""
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                end_qlog_trace(conn.quic)


async def serve_h3(
    config: ServerConfig,
    handler: Handler,
    *,
    shutdown: trio.Event,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve HTTP/3 on UDP config.host:config.port until `shutdown` is set, then drain.

    `task_status.started()` reports the bound (host, port) once the socket is bound.
    """
    keylog = keylog_file()
    endpoint = UdpEndpoint.bind(config.host, config.port)
    try:
        async with trio.open_nursery() as nursery:
            server = _H3Server(config, handler, endpoint, nursery, keylog)
            nursery.start_soon(server.receive_loop)
            nursery.start_soon(server.expire_half_open)
            nursery.start_soon(server.report_stats)
            sender_log = os.environ.get(SENDER_LOG_ENV)
            if sender_log:
                nursery.start_soon(server.sample_senders, sender_log)
            task_status.started(endpoint.local_address[:2])
            log.info("h3 listening on %s (engine %s)", endpoint.local_address, server.engine.name)
            await shutdown.wait()
            await server.shutdown(config.grace_s)
            started = time.monotonic()
            # give the CONNECTION_CLOSE a moment on the wire before the socket goes away
            await trio.sleep(max(0.0, 0.05 - (time.monotonic() - started)))
            server.end_qlog_traces()
            log.info("%s", server.stats.summary())
            nursery.cancel_scope.cancel()
    finally:
        endpoint.close()
        if keylog is not None:
            keylog.close()
