"""HTTP/2 client on trio: h2's sans-I/O H2Connection over trio.SSLStream, every step stamped.

Timestamps are `time.monotonic_ns()` (CLOCK_MONOTONIC ns): connect start (before the socket
connects), TCP connected, TLS handshake done, request sent (after its last byte went to the
kernel), first response-body byte and each DATA frame (stamped when the read that carried it
returned), end. Resumption reuses an `ssl.SSLSession` from the TicketStore; Python's ssl has no
TLS early data, so mode "zero_rtt" behaves as "resumed" and says so in `timings.note`.

One writer task per connection owns the socket's send side: requests queue frames in h2's engine,
wake it and wait until it has written them, so cancelling a request (which resets its stream with
RST_STREAM CANCEL) never cancels a write that carries other streams' bytes or breaks TLS. The read
loop never waits for the writer, so both peers uploading at once cannot deadlock.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from lab.http.exchange import ClientConnection, Exchange, Head, authority_of
from lab.http.h2_frames import BoundedH2Connection, GoAwayFilter
from lab.http.tcp import congestion_of, set_notsent_lowat, set_tcp_options
from lab.http.tls import client_ssl_context
from lab.http.types import (
    ChunkCallback,
    ConnectionTimings,
    ConnectOptions,
    HttpProtocol,
    RequestFailed,
)

RECEIVE_BYTES = 256 * 1024
SEND_BATCH_BYTES = 1024 * 1024
ASSUMED_MAX_STREAMS = 100  # until the server's SETTINGS arrive (RFC 9113 §6.5.2 advice)
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_contexts: dict[Path | None, ssl.SSLContext] = {}


def client_context(ca_file: Path | None) -> ssl.SSLContext:
    """One shared TLS context per CA file: an ssl.SSLSession only resumes on its own context."""
    ctx = _contexts.get(ca_file)
    if ctx is None:
        ctx = _contexts[ca_file] = client_ssl_context(ca_file, ("h2",))
    return ctx


def _code(error_code: int) -> ErrorCodes | int:
    """An HTTP/2 error code as the ErrorCodes member when it is a known one."""
    try:
        return ErrorCodes(error_code)
    except ValueError:
        return error_code


class _H2Exchange(Exchange):
    """One request in flight, and the event its body sender waits on for flow-control credit."""

    __slots__ = ("window_event",)

    def __init__(self, stream_id: int, keep_body: bool, on_chunk: ChunkCallback | None):
        super().__init__(stream_id, keep_body, on_chunk)
        self.window_event: trio.Event | None = None


class H2ClientConnection(ClientConnection[_H2Exchange]):
    """An open HTTP/2 connection (implements lab.http.types.Connection)."""

    protocol: HttpProtocol = "h2"

    def __init__(self, tls: trio.SSLStream, opts: ConnectOptions, timings: ConnectionTimings):
        self.tls = tls
        self.opts = opts
        self.timings = timings
        s = opts.h2
        self.conn = BoundedH2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.local_settings = h2.settings.Settings(
            client=True,
            initial_values={
                SettingCodes.ENABLE_PUSH: 0,
                SettingCodes.MAX_CONCURRENT_STREAMS: s.max_concurrent_streams,
                SettingCodes.INITIAL_WINDOW_SIZE: s.initial_stream_window_bytes,
                SettingCodes.MAX_FRAME_SIZE: s.max_frame_size_bytes,
            },
        )
        self.authority = authority_of(opts.server_name, opts.port)
        self._streams: dict[int, _H2Exchange] = {}
        self._out = bytearray()  # frames taken from the engine, not yet given to the socket
        self._wake = trio.Event()  # set: the writer has something to send
        self._flushed = trio.Event()  # set once the writer's next write is in the socket
        self._sending: trio.Event | None = None  # set once the write in progress is done
        self._lost: RequestFailed | None = None  # why the writer stopped
        self._slot = trio.Event()
        self._settings_seen = False
        self.closed = False
        self.goaway_code: ErrorCodes | int | None = None
        self._goaways = GoAwayFilter()
        self.congestion: str | None = None

    # --- plumbing ------------------------------------------------------------------------
    def _queue(self) -> None:
        """Hand what the engine has queued to the writer; no wait."""
        self._out += self.conn.data_to_send()
        if self._out:
            self._wake.set()

    async def _flush(self) -> None:
        """Queue, then wait until the writer has put it (and any write in progress) in the
        socket; RequestFailed if the connection is lost. Cancelling the wait cancels no write."""
        self._queue()
        done = self._flushed if self._out else self._sending
        if done is not None and self._lost is None:
            await done.wait()
        if self._lost is not None:
            raise self._lost

    async def _write_loop(self) -> None:
        """The only sender on the socket; runs in the connection's nursery until it closes."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self._out += self.conn.data_to_send()
            if not self._out:
                continue
            data, self._out = self._out, bytearray()
            done = self._sending = self._flushed
            self._flushed = trio.Event()
            try:
                await self.tls.send_all(data)
            except _GONE as e:
                self._lost = RequestFailed(f"h2 connection lost: {e!r}")
                self._fail_all(self._lost)
                self._flushed.set()
                return
            finally:
                self._sending = None
                done.set()

    def _fail_all(self, error: RequestFailed) -> None:
        self.closed = True
        for st in list(self._streams.values()):
            st.fail(error)
            if st.window_event is not None:
                st.window_event.set()
        self._streams.clear()
        self._slot.set()

    async def _start(self) -> None:
        s = self.opts.h2
        self.conn.initiate_connection()
        grow = s.connection_window_bytes - self.conn.inbound_flow_control_window
        if grow > 0:
            self.conn.increment_flow_control_window(grow)
        await self._flush()

    async def _read_loop(self) -> None:
        error = RequestFailed("h2 connection closed by the server")
        try:
            while True:
                data = await self.tls.receive_some(RECEIVE_BYTES)
                now = time.monotonic_ns()
                if not data:
                    break
                data, goaways = self._goaways.feed(data)
                try:
                    events = self.conn.receive_data(data) if data else []
                except h2.exceptions.ProtocolError as e:
                    error = RequestFailed(f"h2 protocol error from the server: {e}")
                    with contextlib.suppress(RequestFailed):
                        await self._flush()
                    break
                for ev in events:
                    self._dispatch(ev, now)
                for g in goaways:
                    self._on_goaway(g.last_stream_id, g.error_code)
                self._queue()  # no wait: a server blocked writing to us must still be read
                self._save_ticket()
                if self.goaway_code not in (None, ErrorCodes.NO_ERROR):
                    error = RequestFailed(f"h2 GOAWAY from the server: {self.goaway_code!r}")
                    break
        except _GONE as e:
            error = RequestFailed(f"h2 connection lost: {e!r}")
        except RequestFailed as e:
            error = e
        finally:
            self._fail_all(error)

    def _dispatch(self, ev: h2.events.Event, now: int) -> None:
        if isinstance(ev, h2.events.DataReceived):
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            st = self._streams.get(ev.stream_id)
            if st is None:
                return
            st.on_data(ev.data or b"", now)
        elif isinstance(ev, h2.events.ResponseReceived):
            st = self._streams.get(ev.stream_id)
            if st is not None:
                st.on_head(ev.headers or [])
        elif isinstance(ev, h2.events.StreamEnded):
            st = self._streams.pop(ev.stream_id, None)
            if st is not None:
                st.end(now)
            self._slot.set()
        elif isinstance(ev, h2.events.StreamReset):
            st = self._streams.pop(ev.stream_id, None)
            if st is not None:
                code = _code(ev.error_code or 0)
                st.fail(RequestFailed(f"h2 stream {ev.stream_id} reset by the server: {code!r}"))
                if st.window_event is not None:
                    st.window_event.set()
            self._slot.set()
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            self._settings_seen = True
            self._wake_all()
        elif isinstance(ev, h2.events.WindowUpdated):
            if ev.stream_id:
                st = self._streams.get(ev.stream_id)
                if st is not None and st.window_event is not None:
                    st.window_event.set()
            else:
                self._wake_all()
        elif isinstance(ev, h2.events.ConnectionTerminated):  # not reached: see GoAwayFilter
            self._on_goaway(ev.last_stream_id or 0, ev.error_code or 0)

    def _on_goaway(self, last_stream_id: int, error_code: int) -> None:
        """Streams above `last_stream_id` were not processed; the others may still complete."""
        self.goaway_code = _code(error_code)
        self.timings.goaway_received = True
        for sid in [sid for sid in self._streams if sid > last_stream_id]:
            st = self._streams.pop(sid)
            st.fail(RequestFailed(f"h2 stream {sid} not processed (GOAWAY {self.goaway_code!r})"))
        self._slot.set()

    def _wake_all(self) -> None:
        self._slot.set()
        for st in self._streams.values():
            if st.window_event is not None:
                st.window_event.set()

    def _save_ticket(self) -> None:
        tickets = self.opts.tickets
        if tickets is None:
            return
        session = self.tls.session
        if session is not None and session.has_ticket:
            tickets.put("h2", self.opts.host, self.opts.port, session)

    def _max_streams(self) -> int:
        remote = self.conn.remote_settings.max_concurrent_streams
        return remote if self._settings_seen else min(remote, ASSUMED_MAX_STREAMS)

    async def _send_body(self, st: _H2Exchange, body: bytes) -> None:
        view = memoryview(body)
        off = 0
        while off < len(view):
            if st.done.is_set() or self.closed:
                return
            try:
                window = self.conn.local_flow_control_window(st.stream_id)
            except h2.exceptions.ProtocolError:  # reset or closed: request() reports why
                return
            if window <= 0:
                st.window_event = trio.Event()
                await st.window_event.wait()
                continue
            end = off + min(window, len(view) - off, SEND_BATCH_BYTES)
            frame = self.conn.max_outbound_frame_size
            try:
                while off < end:
                    n = min(frame, end - off)
                    last = off + n == len(view)
                    self.conn.send_data(
                        st.stream_id, view[off : off + n].tobytes(), end_stream=last
                    )
                    off += n
            except h2.exceptions.ProtocolError:
                return
            await self._flush()

    # --- the exchange hooks of ClientConnection.request ----------------------------------
    async def _open_exchange(self, keep_body: bool, on_chunk: ChunkCallback | None) -> _H2Exchange:
        """Wait for a free stream slot (the server's SETTINGS_MAX_CONCURRENT_STREAMS)."""
        while (
            not self.closed
            and self.goaway_code is None
            and self.conn.open_outbound_streams >= self._max_streams()
        ):
            if self._slot.is_set():
                self._slot = trio.Event()
            await self._slot.wait()
        if self.goaway_code is not None:
            raise RequestFailed(f"h2 server sent GOAWAY ({self.goaway_code!r})")
        if self.closed:
            raise RequestFailed("h2 connection is closed")
        sid = self.conn.get_next_available_stream_id()
        st = _H2Exchange(sid, keep_body, on_chunk)
        self._streams[sid] = st
        return st

    async def _send_request(self, exchange: _H2Exchange, head: Head, body: bytes) -> None:
        self.conn.send_headers(exchange.stream_id, head, end_stream=not body)
        await self._flush()
        if body:
            await self._send_body(exchange, body)
        exchange.request_sent_ns = time.monotonic_ns()

    def _close_exchange(self, exchange: _H2Exchange) -> None:
        """A request left before its stream ended (cancelled): reset it (CANCEL), free its slot."""
        if self._streams.get(exchange.stream_id) is not exchange:
            return
        del self._streams[exchange.stream_id]
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.reset_stream(exchange.stream_id, ErrorCodes.CANCEL)
            self._queue()
        self._slot.set()

    # --- API (request() is ClientConnection's) -------------------------------------------
    async def aclose(self) -> None:
        """GOAWAY, close_notify, close the socket; keeps the TLS session for resumption."""
        if self.tls is None:
            return
        with contextlib.suppress(Exception):
            self._save_ticket()
        if not self.closed:
            self.closed = True
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.conn.close_connection()
            with trio.move_on_after(1), contextlib.suppress(RequestFailed):
                await self._flush()
        with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(*_GONE):
            await self.tls.aclose()


async def _tcp_connect(opts: ConnectOptions, timings: ConnectionTimings) -> trio.socket.SocketType:
    infos = await trio.socket.getaddrinfo(opts.host, opts.port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"cannot resolve {opts.host}")
    family, type_, proto, _, addr = infos[0]
    sock = trio.socket.socket(family, type_, proto)
    try:
        set_tcp_options(sock, opts.h2.tcp_congestion, opts.h2.tcp_notsent_lowat_bytes)
        timings.connect_start_ns = time.monotonic_ns()
        await sock.connect(addr)
        timings.tcp_connected_ns = time.monotonic_ns()
    except BaseException:
        sock.close()
        raise
    return sock


@contextlib.asynccontextmanager
async def open_h2(opts: ConnectOptions) -> AsyncIterator[H2ClientConnection]:
    """Open an HTTP/2 connection (cold, resumed, or zero_rtt = resumed) and close it after use."""
    timings = ConnectionTimings(connect_start_ns=time.monotonic_ns())
    ctx = client_context(opts.ca_file)
    with trio.fail_after(opts.connect_timeout_s):
        sock = await _tcp_connect(opts, timings)
        stream = trio.SocketStream(sock)
        set_notsent_lowat(sock, opts.h2.tcp_notsent_lowat_bytes)  # SocketStream set 16 KiB
        tls = trio.SSLStream(stream, ctx, server_hostname=opts.server_name)
        if opts.mode != "cold" and opts.tickets is not None:
            session = opts.tickets.get("h2", opts.host, opts.port)
            if isinstance(session, ssl.SSLSession):
                with contextlib.suppress(ValueError):  # a session of another context
                    tls.session = session
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        timings.handshake_done_ns = time.monotonic_ns()
    timings.resumed = bool(tls.session_reused)
    if opts.mode == "zero_rtt":
        timings.note = "h2: Python's ssl has no TLS early data; zero_rtt ran as resumed"
    if tls.selected_alpn_protocol() != "h2":
        await trio.aclose_forcefully(tls)
        raise RequestFailed(f"server did not select ALPN h2 ({tls.selected_alpn_protocol()!r})")
    conn = H2ClientConnection(tls, opts, timings)
    conn.congestion = congestion_of(sock)
    async with trio.open_nursery() as nursery:
        try:
            nursery.start_soon(conn._write_loop)
            await conn._start()
            nursery.start_soon(conn._read_loop)
            yield conn
        finally:
            with trio.CancelScope(shield=True):
                await conn.aclose()
            nursery.cancel_scope.cancel()
