"""A QUIC (and HTTP/3) client connection for the conformance cases: aioquic driven on trio.

aioquic is sans-I/O: `QuicWire.run` feeds it the datagrams of one UDP socket and its timers, and
keeps every event. With `h3=True` an aioquic `H3Connection` (or a subclass a case passes) reads the
streams; responses, resets and the server's GOAWAYs are recorded per stream. With `h3=False` the
case writes and reads the QUIC streams itself (raw HTTP/3 frames). `capture=True` keeps the sent
datagrams (a replay case re-sends them), and every received one is checked against the stateless
reset tokens the server announced (RFC 9000 §10.3: aioquic's client does not detect them).

Cases that reach into aioquic's internals (the catalogue's "I") go through `internals()`, which
refuses other aioquic versions than the one they were verified on (policy 8).
"""

from __future__ import annotations

import contextlib
import math
import socket
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aioquic
import trio
from aioquic.h3.connection import H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.events import (
    ConnectionTerminated,
    HandshakeCompleted,
    ProtocolNegotiated,
    StopSendingReceived,
    StreamDataReceived,
    StreamReset,
)
from aioquic.quic.logger import QuicFileLogger

from lab.conform.context import CaseContext
from lab.conform.waking import Waking
from lab.http.h3_control import GoawayWatcher
from lab.http.quic_engine import end_qlog_trace
from lab.http.response_head import ResponseHead

VERIFIED_AIOQUIC = "1.7.2"  # the I-class cases read internals of exactly this version
WINDOW_BYTES = 16 * 1024 * 1024
RESET_TOKEN_BYTES = 16
H3_NO_ERROR = 0x100
# transport error codes (RFC 9000 §20.1)
TRANSPORT_NO_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, STREAM_LIMIT_ERROR = 0x0, 0x1, 0x3, 0x4
TRANSPORT_PARAMETER_ERROR, PROTOCOL_VIOLATION, CRYPTO_ERROR_BASE = 0x8, 0xA, 0x100
# HTTP/3 (RFC 9114 §8.1) and QPACK (RFC 9204 §6) error codes
H3_ERRORS = {
    0x100: "H3_NO_ERROR",
    0x101: "H3_GENERAL_PROTOCOL_ERROR",
    0x102: "H3_INTERNAL_ERROR",
    0x103: "H3_STREAM_CREATION_ERROR",
    0x104: "H3_CLOSED_CRITICAL_STREAM",
    0x105: "H3_FRAME_UNEXPECTED",
    0x106: "H3_FRAME_ERROR",
    0x107: "H3_EXCESSIVE_LOAD",
    0x108: "H3_ID_ERROR",
    0x109: "H3_SETTINGS_ERROR",
    0x10A: "H3_MISSING_SETTINGS",
    0x10B: "H3_REQUEST_REJECTED",
    0x10C: "H3_REQUEST_CANCELLED",
    0x10D: "H3_REQUEST_INCOMPLETE",
    0x10E: "H3_MESSAGE_ERROR",
    0x10F: "H3_CONNECT_ERROR",
    0x110: "H3_VERSION_FALLBACK",
    0x200: "QPACK_DECOMPRESSION_FAILED",
    0x201: "QPACK_ENCODER_STREAM_ERROR",
    0x202: "QPACK_DECODER_STREAM_ERROR",
}
TRANSPORT_ERRORS = {
    0x0: "NO_ERROR",
    0x1: "INTERNAL_ERROR",
    0x2: "CONNECTION_REFUSED",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "STREAM_LIMIT_ERROR",
    0x5: "STREAM_STATE_ERROR",
    0x6: "FINAL_SIZE_ERROR",
    0x7: "FRAME_ENCODING_ERROR",
    0x8: "TRANSPORT_PARAMETER_ERROR",
    0x9: "CONNECTION_ID_LIMIT_ERROR",
    0xA: "PROTOCOL_VIOLATION",
    0xB: "INVALID_TOKEN",
    0xC: "APPLICATION_ERROR",
    0xD: "CRYPTO_BUFFER_EXCEEDED",
    0xE: "KEY_UPDATE_ERROR",
    0xF: "AEAD_LIMIT_REACHED",
    0x10: "NO_VIABLE_PATH",
}
H3_GENERIC = frozenset({0x101, 0x102})  # H3_GENERAL_PROTOCOL_ERROR, H3_INTERNAL_ERROR
TRANSPORT_GENERIC = frozenset({PROTOCOL_VIOLATION, INTERNAL_ERROR})


class InternalsUnavailable(RuntimeError):
    """This aioquic is not the version whose internals a case was written against."""


def internals() -> None:
    """Raise InternalsUnavailable unless aioquic is the verified version (policy 8)."""
    if aioquic.__version__ != VERIFIED_AIOQUIC:
        raise InternalsUnavailable(
            f"needs aioquic {VERIFIED_AIOQUIC} internals (installed: {aioquic.__version__})"
        )


def error_name(code: int) -> str:
    """`H3_FRAME_UNEXPECTED`, `FLOW_CONTROL_ERROR`, `CRYPTO_ERROR 0x178`, or the number."""
    if code in H3_ERRORS:
        return H3_ERRORS[code]
    if code in TRANSPORT_ERRORS:
        return TRANSPORT_ERRORS[code]
    if CRYPTO_ERROR_BASE <= code < CRYPTO_ERROR_BASE + 0x100:
        return f"CRYPTO_ERROR 0x{code:x}"
    return f"0x{code:x}"


@dataclass
class H3Stream(ResponseHead):
    """What the server sent on one request stream (`headers`: the response head)."""

    body: bytearray = field(default_factory=bytearray)
    ended: bool = False  # FIN after the response
    reset: int | None = None  # RESET_STREAM from the server: its error code
    stop_sending: int | None = None  # STOP_SENDING from the server: its error code
    data: bytearray = field(default_factory=bytearray)  # raw stream bytes (h3=False)

    def done(self) -> bool:
        """The response ended or was reset."""
        return self.ended or self.reset is not None


def client_configuration(ctx: CaseContext, alpn: tuple[str, ...] = ("h3",)) -> QuicConfiguration:
    """The client's QuicConfiguration: big windows, the target's name, its CA (or none), and
    the case's qlog and keylog when artifacts are kept."""
    ep = ctx.endpoint
    cfg = QuicConfiguration(
        is_client=True,
        alpn_protocols=list(alpn),
        server_name=ep.server_name,
        max_data=WINDOW_BYTES,
        max_stream_data=WINDOW_BYTES,
        idle_timeout=30.0,
        congestion_control_algorithm="cubic",
    )
    if ep.ca_file is None:
        cfg.verify_mode = ssl.CERT_NONE
    else:
        cfg.verify_mode = ssl.CERT_REQUIRED
        cfg.load_verify_locations(cafile=str(ep.ca_file))
    if ctx.artifacts is not None:
        ctx.artifacts.mkdir(parents=True, exist_ok=True)
        cfg.quic_logger = QuicFileLogger(str(ctx.artifacts))
        cfg.secrets_log_file = (ctx.artifacts / "keylog.txt").open("a")
    return cfg


class QuicWire(Waking):
    """One client QUIC connection and everything it saw. Use `open_quic`."""

    def __init__(
        self,
        ctx: CaseContext,
        quic: QuicConnection,
        *,
        capture: bool = False,
        blackhole: bool = False,
    ) -> None:
        self.ctx = ctx
        self.quic = quic
        self.h3: H3Connection | None = None
        self.h3_class: type[H3Connection] | None = None  # started at HandshakeCompleted
        self.peer = (ctx.endpoint.host, ctx.endpoint.port)
        self.raw_sock, self.sock = self._new_socket()
        self.capture = capture
        self.blackhole = blackhole  # drop every datagram we send (a UDP blackhole)
        self.sent: list[bytes] = []  # datagrams sent (capture=True)
        self.bytes_sent = 0
        self.bytes_received = 0
        self.datagrams_received = 0
        self.events: list[Any] = []  # every QUIC event
        self.streams: dict[int, H3Stream] = {}
        self.peer_uni_types: dict[int, int] = {}  # server uni stream → its stream type
        self.goaways: list[int] = []  # ids of the server's GOAWAY frames, in order
        self.tickets: list[Any] = []
        self.handshake: HandshakeCompleted | None = None
        self.alpn: str | None = None
        self.terminated: ConnectionTerminated | None = None
        self.stateless_reset = False  # a datagram ended with a token the server announced
        self.first_flight = 0  # datagrams sent before the handshake completed (capture=True)
        self.peer_limits: dict[str, int] = {}  # the server's transport limits at the handshake
        self._goaway_watcher = GoawayWatcher()
        self._progress = trio.Event()
        self._wait_scope: trio.CancelScope | None = None
        self._retired: list[trio.socket.SocketType] = []  # sockets left by `rebind`

    def _new_socket(self) -> tuple[socket.socket, trio.socket.SocketType]:
        raw = self.ctx.socket(socket.SOCK_DGRAM)
        raw.connect(self.peer)
        return raw, trio.socket.from_stdlib_socket(raw)

    # --- I/O ----------------------------------------------------------------------------
    def transmit(self) -> None:
        """Send what aioquic has queued, now (and let the pump recompute its timer)."""
        for data, _addr in self.quic.datagrams_to_send(now=time.monotonic()):
            self.send_raw(data)
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def send_raw(self, data: bytes) -> None:
        """One datagram as it is (lost when the socket buffer is full, as UDP is)."""
        if self.capture:
            self.sent.append(data)
        if self.blackhole:
            return
        self.bytes_sent += len(data)
        with contextlib.suppress(OSError):  # BlockingIOError included
            self.raw_sock.send(data)

    def rebind(self) -> None:
        """Continue from a new UDP socket (a new client port: NAT rebinding, RFC 9000 §9). The
        old one closes with the connection: the pump may still be reading it right now."""
        self._retired.append(self.sock)
        self.raw_sock, self.sock = self._new_socket()
        if self._wait_scope is not None:
            self._wait_scope.cancel()

    def close_sockets(self) -> None:
        for sock in (*self._retired, self.sock):
            sock.close()

    async def run(self) -> None:
        """The pump: datagrams and timers into aioquic, its datagrams out, until it ends."""
        while self.terminated is None:
            self.transmit()
            timer = self.quic.get_timer()
            wait = math.inf if timer is None else max(0.0, timer - time.monotonic())
            data: bytes | None = None
            with trio.CancelScope() as scope:
                self._wait_scope = scope
                scope.deadline = trio.current_time() + wait
                try:
                    data = await self.sock.recv(65_536)
                except OSError:  # an ICMP error (port unreachable) on the connected socket
                    await trio.sleep(0.01)
                except trio.ClosedResourceError:  # the socket closed under us: the end
                    return
            self._wait_scope = None
            now = time.monotonic()
            if data is not None:
                self.bytes_received += len(data)
                self.datagrams_received += 1
                self._check_stateless_reset(data)
                self.quic.receive_datagram(data, self.peer, now)
            if timer is not None and now >= timer:
                self.quic.handle_timer(now)
            self._drain_events()
            self._early_close()
            self._wake()
        self.transmit()
        self._wake()

    def _early_close(self) -> None:
        """aioquic queues ConnectionTerminated only after the draining period (3 PTO); its
        internal close record says at once that a CONNECTION_CLOSE arrived (or was sent)."""
        if self.terminated is None and aioquic.__version__ == VERIFIED_AIOQUIC:
            self.terminated = self.quic._close_event

    def _check_stateless_reset(self, data: bytes) -> None:
        if len(data) < 21 or data[0] & 0x80:  # RFC 9000 §10.3: short header, ≥ 21 bytes
            return
        tail = data[-RESET_TOKEN_BYTES:]
        if tail in self.reset_tokens():
            self.stateless_reset = True

    def reset_tokens(self) -> set[bytes]:
        """The stateless reset tokens the server announced (transport parameter and
        NEW_CONNECTION_ID); aioquic internals, empty on other versions."""
        if aioquic.__version__ != VERIFIED_AIOQUIC:
            return set()
        cids = [self.quic._peer_cid, *self.quic._peer_cid_available]
        return {c.stateless_reset_token for c in cids if c.stateless_reset_token}

    def _drain_events(self) -> None:
        while (event := self.quic.next_event()) is not None:
            self.events.append(event)
            if isinstance(event, HandshakeCompleted):
                self.handshake = event
                self.alpn = event.alpn_protocol
                self.first_flight = len(self.sent)
                self.peer_limits = transport_limits(self.quic)
                if self.h3 is None and self.h3_class is not None:
                    self.h3 = self.h3_class(self.quic)  # before the server's streams arrive
            elif isinstance(event, ProtocolNegotiated):
                self.alpn = event.alpn_protocol
            elif isinstance(event, ConnectionTerminated):
                self.terminated = event
            elif isinstance(event, StreamReset):
                self.stream(event.stream_id).reset = event.error_code
            elif isinstance(event, StopSendingReceived):
                self.stream(event.stream_id).stop_sending = event.error_code
            elif isinstance(event, StreamDataReceived):
                self._on_stream_data(event)
            if self.h3 is not None:
                for h3_event in self.h3.handle_event(event):
                    self._on_h3_event(h3_event)

    def _on_stream_data(self, event: StreamDataReceived) -> None:
        sid = event.stream_id
        if sid % 4 == 3:  # a server-initiated unidirectional stream
            if sid not in self.peer_uni_types and event.data:
                self.peer_uni_types[sid] = _first_varint(event.data)
            self.goaways += self._goaway_watcher.feed(sid, event.data)
        elif self.h3 is None:
            st = self.stream(sid)
            st.data += event.data
            st.ended = st.ended or event.end_stream

    def _on_h3_event(self, event: Any) -> None:
        if isinstance(event, HeadersReceived):
            st = self.stream(event.stream_id)
            st.headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers]
            st.ended = st.ended or event.stream_ended
        elif isinstance(event, DataReceived):
            st = self.stream(event.stream_id)
            st.body += event.data
            st.ended = st.ended or event.stream_ended

    def stream(self, stream_id: int) -> H3Stream:
        return self.streams.setdefault(stream_id, H3Stream())

    @property
    def settings(self) -> dict[int, int] | None:
        """The server's HTTP/3 SETTINGS once they arrived (possibly empty), else None."""
        return None if self.h3 is None else self.h3.received_settings

    # --- requests -----------------------------------------------------------------------
    def request_headers(
        self, method: str, path: str, extra: list[tuple[bytes, bytes]] | None = None
    ) -> list[tuple[bytes, bytes]]:
        """The four pseudo-headers (authority: the target's), then `extra`."""
        head = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", self.ctx.endpoint.authority.encode()),
            (b":path", path.encode()),
        ]
        return head + (extra or [])

    def send_request(
        self,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        *,
        end_stream: bool = True,
        stream_id: int | None = None,
    ) -> int:
        """HEADERS (unvalidated) and, with `body`, one DATA frame, on a new stream."""
        assert self.h3 is not None, "open_quic(h3=True) for requests"
        sid = self.quic.get_next_available_stream_id() if stream_id is None else stream_id
        self.h3.send_headers(sid, headers, end_stream=end_stream and not body)
        if body:
            self.h3.send_data(sid, body, end_stream=end_stream)
        self.transmit()
        return sid

    def get(self, path: str, extra: list[tuple[bytes, bytes]] | None = None) -> int:
        return self.send_request(self.request_headers("GET", path, extra))

    async def response(self, stream_id: int, timeout_s: float) -> H3Stream:
        """Wait until the response on `stream_id` ended or was reset (or the time passed)."""
        st = self.stream(stream_id)
        await self.wait_for(lambda: st.ended or st.reset is not None, timeout_s)
        return st

    async def transfer(self, stream_id: int, stall_s: float, limit_s: float) -> H3Stream:
        """Like `response`, but give up as soon as no body byte arrived for `stall_s`."""
        st = self.stream(stream_id)
        deadline = trio.current_time() + limit_s
        while not (st.ended or st.reset is not None or self.terminated is not None):
            seen = len(st.body)
            left = deadline - trio.current_time()
            if left <= 0:
                break

            def moved(before: int = seen) -> bool:
                return st.ended or st.reset is not None or len(st.body) > before

            await self.wait_for(moved, min(stall_s, left))
            if len(st.body) == seen and not st.ended:
                break
        return st

    # --- waiting ------------------------------------------------------------------------
    def _ended(self) -> bool:
        return self.terminated is not None

    @property
    def close_code(self) -> int | None:
        """The error code of the CONNECTION_CLOSE that ended the connection, or None."""
        return None if self.terminated is None else self.terminated.error_code

    def close_text(self) -> str:
        """How the connection ended, for a reason line."""
        t = self.terminated
        if t is None:
            return "connection open"
        phrase = f" ({t.reason_phrase})" if t.reason_phrase else ""
        return f"CONNECTION_CLOSE {error_name(t.error_code)}{phrase}"


LIMITS = (
    "max_data",
    "max_stream_data_bidi_local",
    "max_stream_data_bidi_remote",
    "max_stream_data_uni",
    "max_streams_bidi",
    "max_streams_uni",
)


def transport_limits(quic: QuicConnection) -> dict[str, int]:
    """The peer's flow-control and stream limits as aioquic holds them (internals; empty on
    other versions)."""
    if aioquic.__version__ != VERIFIED_AIOQUIC:
        return {}
    return {name: int(getattr(quic, f"_remote_{name}")) for name in LIMITS}


def _first_varint(data: bytes) -> int:
    n = 1 << (data[0] >> 6)
    value = data[0] & 0x3F
    for b in data[1:n]:
        value = (value << 8) | b
    return value


@contextlib.asynccontextmanager
async def open_quic(
    ctx: CaseContext,
    config: QuicConfiguration | None = None,
    *,
    h3: bool = True,
    connection_class: type[QuicConnection] = QuicConnection,
    h3_class: type[H3Connection] = H3Connection,
    handshake: bool = True,
    capture: bool = False,
    close: bool = True,
    blackhole: bool = False,
    handshake_timeout_s: float | None = None,
) -> AsyncIterator[QuicWire]:
    """Connect; with `handshake` wait until it completed (ConnectionError if it did not) and
    then start HTTP/3 (`h3`); without it HTTP/3 starts at once (its SETTINGS and requests leave
    in 0-RTT when the configuration's ticket allows). Closes with H3_NO_ERROR on exit (unless
    `close` is False: the case closes it or lets it die)."""
    cfg = config or client_configuration(ctx)
    tickets: list[Any] = []
    quic = connection_class(configuration=cfg, session_ticket_handler=tickets.append)
    wire = QuicWire(ctx, quic, capture=capture, blackhole=blackhole)
    wire.tickets = tickets
    try:
        async with trio.open_nursery() as nursery:
            quic.connect(wire.peer, now=time.monotonic())
            if h3 and not handshake:
                wire.h3 = h3_class(quic)
            elif h3:
                wire.h3_class = h3_class
            nursery.start_soon(wire.run)
            try:
                if handshake:
                    limit = handshake_timeout_s or ctx.wait(5.0)
                    ok = await wire.wait_for(lambda: wire.handshake is not None, limit)
                    if not ok:
                        raise ConnectionError(
                            f"QUIC handshake did not complete: {wire.close_text()}"
                        )
                yield wire
            finally:
                if close and wire.terminated is None:
                    quic.close(error_code=H3_NO_ERROR if h3 else TRANSPORT_NO_ERROR)
                    wire.transmit()
                nursery.cancel_scope.cancel()
    finally:
        wire.close_sockets()
        if cfg.quic_logger is not None:
            with contextlib.suppress(Exception):  # a trace that cannot be written is no result
                end_qlog_trace(quic)
        if cfg.secrets_log_file is not None:
            cfg.secrets_log_file.close()
