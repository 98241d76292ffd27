"""HTTP/2 front end of the reference server: trio drives h2's sans-I/O H2Connection over TLS.

One task reads the socket and feeds the engine; each request runs in its own task (in a
per-connection nursery) with its own cancel scope, cancelled when the peer resets the stream.
One writer task per connection (in that nursery, outside every stream's scope) owns the socket's
send side: other tasks queue frames in the engine, wake it and, for backpressure, wait until it has
written them. A reset stream only cancels its own wait, never a write that carries other streams'
bytes (which would drop them or break TLS mid-record). The read loop never waits for the writer.
Flow control is honoured: a stream waits for WINDOW_UPDATE when its window is empty.

Graceful shutdown: when `shutdown` is set, listeners close, every connection sends GOAWAY
(NO_ERROR, last stream id = highest received), refuses newer streams, lets in-flight requests
finish within `ServerConfig.grace_s`, then closes.

Bounds (`ServerConfig.h2_limits`, docs/http.md "Bounds"): idle connections get GOAWAY(NO_ERROR);
a stream blocked on the peer's window too long is reset (CANCEL); request bodies are held within
a per-connection and a server-wide budget (REFUSED_STREAM above); rapid resets and a peer that
lets our control-frame replies pile up get GOAWAY(ENHANCE_YOUR_CALM); frame rules h2 misses are
checked by `GoAwayFilter`. Each hit is one log line and a counter of the `h2 summary:` line
logged at shutdown.

Departure offsets (only when `tcp_offset_log()` is set, env LAB_TCP_OFFSET_LOG): TLS runs over a
`TcpOffsetStream`. Once all of a watch event's bytes are in the engine, its writer moves them to
`_out` and notes (stamp, position in `_out`); the writer hands the batch's stamps to the stream
with the batch (`expect` / `batch_sent`), which logs where each event's TLS record ends in the TCP
stream (the emulator says when those bytes left). Without the env var none of this runs.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import trio
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hpack.exceptions import HPACKError, OversizedHeaderListError
from hyperframe.frame import GoAwayFrame

from lab.http.app import Handler, PeerGone, Request, respond_error
from lab.http.departure_log import tcp_offset_log
from lab.http.h2_frames import (
    BoundedH2Connection,
    FrameRuleError,
    GoAwayFilter,
    count_control_frames,
)
from lab.http.h2_limits import BodyBudget, BoundEvent, ResetRate, ServerTotals
from lab.http.settings import ServerConfig
from lab.http.tcp import set_tcp_options
from lab.http.tcp_offsets import TcpOffsetStream
from lab.http.types import EARLY_DATA_HEADER

log = logging.getLogger(__name__)

RECEIVE_BYTES = 256 * 1024  # per receive_some
SEND_BATCH_BYTES = 1024 * 1024  # data queued in the engine per flush
HANDSHAKE_TIMEOUT_S = 10.0
GOAWAY_LINGER_S = 1.0  # after our GOAWAY: time for the peer to read it and close first (Go: 1 s)
_GOAWAY_BYTES = 17  # frame header + last stream id + error code, no debug data
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


def send_batch_bytes(notsent_lowat: int | None, max_frame_bytes: int) -> int:
    """DATA bytes one writer queues per flush. Unbounded socket (None): SEND_BATCH_BYTES. With
    TCP_NOTSENT_LOWAT the socket holds little unsent data, so a flush blocks until its batch is
    nearly sent; batches of max(lowat, one frame) let the writer interleave streams."""
    if notsent_lowat is None:
        return SEND_BATCH_BYTES
    return min(SEND_BATCH_BYTES, max(notsent_lowat, max_frame_bytes))


_HPACK_HARD_LIMIT_FACTOR = 4  # decoder hard limit = factor × app limit (431 below, GOAWAY above)


def _fix_goaway_code(queued: bytes, error: h2.exceptions.ProtocolError) -> bytes:
    """`queued` with its final GOAWAY carrying the code RFC 9113 asks for.

    h2 reports an undecodable field block as PROTOCOL_ERROR; RFC 9113 §4.3 requires
    COMPRESSION_ERROR (an oversized list stays ENHANCE_YOUR_CALM).
    """
    cause = error.__cause__
    if not isinstance(cause, HPACKError) or isinstance(cause, OversizedHeaderListError):
        return queued
    tail = queued[-_GOAWAY_BYTES:]
    if len(tail) != _GOAWAY_BYTES or tail[3] != GoAwayFrame.type:
        return queued
    frame = GoAwayFrame(0)
    frame.last_stream_id = int.from_bytes(tail[9:13], "big") & 0x7FFFFFFF
    frame.error_code = ErrorCodes.COMPRESSION_ERROR
    return queued[:-_GOAWAY_BYTES] + frame.serialize()


def _goaway_frame(error_code: ErrorCodes, last_stream_id: int) -> bytes:
    frame = GoAwayFrame(0)
    frame.last_stream_id = last_stream_id
    frame.error_code = error_code
    return frame.serialize()


def _text(b: bytes) -> str:
    return b.decode("latin-1")


class _Stream:
    """Per-stream state of one request on the server."""

    __slots__ = (
        "body",
        "headers",
        "id",
        "local_ended",
        "reserved_bytes",
        "reset",
        "scope",
        "started",
        "too_large",
        "window_event",
    )

    def __init__(self, stream_id: int, headers: list[tuple[bytes, bytes]]):
        self.id = stream_id
        self.headers = headers
        self.body = bytearray()
        self.scope = trio.CancelScope()
        self.window_event: trio.Event | None = None
        self.started = False
        self.local_ended = False
        self.reset = False  # the peer reset it, or we did
        self.too_large = False
        self.reserved_bytes = 0  # of the connection's BodyBudget, held until the stream ends


class _Writer:
    """ResponseWriter of one h2 stream (see lab.http.app.ResponseWriter)."""

    __slots__ = ("_c", "_st", "headers_sent")

    def __init__(self, c: H2ServerConnection, st: _Stream):
        self._c = c
        self._st = st
        self.headers_sent = False

    async def send_headers(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Queue the response head; it leaves with the first send_data (saves one write)."""
        st = self._st
        if st.reset or self._c.dead:
            raise PeerGone(f"stream {st.id} is gone")
        block = [(b":status", str(status).encode())]
        block += [(n.encode("latin-1"), v.encode("latin-1")) for n, v in headers]
        try:
            self._c.conn.send_headers(st.id, block)
        except h2.exceptions.ProtocolError as e:
            raise PeerGone(str(e)) from None
        self.headers_sent = True

    async def send_data(
        self, data: bytes, end_stream: bool = False, *, stamp_ns: int | None = None
    ) -> None:
        """Send `data` in frames as the flow-control windows allow; end_stream closes.
        `stamp_ns`: `data` is one watch event stamped so; logged when its bytes left (if on)."""
        c, st = self._c, self._st
        conn = c.conn
        view = memoryview(data)
        off, total = 0, len(view)
        stall_deadline: float | None = None  # set while the window stays empty
        while True:
            if st.reset or c.dead:
                raise PeerGone(f"stream {st.id} is gone")
            if off >= total:
                if end_stream:
                    try:
                        conn.end_stream(st.id)
                    except h2.exceptions.ProtocolError as e:
                        raise PeerGone(str(e)) from None
                    st.local_ended = True
                await c.flush()
                return
            try:
                window = conn.local_flow_control_window(st.id)
            except h2.exceptions.ProtocolError as e:
                raise PeerGone(str(e)) from None
            if window <= 0:
                if stall_deadline is None:
                    stall_deadline = trio.current_time() + c.limits.stream_stall_timeout_s
                event = st.window_event = trio.Event()  # before any await: no lost wake-up
                await c.flush()  # what is queued may be what the peer waits for
                if conn.local_flow_control_window(st.id) <= 0 and not st.reset:
                    with trio.move_on_at(stall_deadline):
                        await event.wait()
                    if not event.is_set() and not st.reset:
                        c.reset_stalled(st)
                        raise PeerGone(f"stream {st.id} stalled on flow control")
                continue
            stall_deadline = None
            budget = min(window, total - off, c.batch_bytes)
            frame = conn.max_outbound_frame_size
            end = off + budget
            try:
                while off < end:
                    n = min(frame, end - off)
                    last = end_stream and off + n == total
                    conn.send_data(st.id, view[off : off + n].tobytes(), end_stream=last)
                    off += n
                    if last:
                        st.local_ended = True
            except h2.exceptions.ProtocolError as e:
                raise PeerGone(str(e)) from None
            if stamp_ns is not None and off >= total and c.departures is not None:
                c.stamped(stamp_ns)  # before any flush: the event's bytes go in the next batch
                stamp_ns = None
            if st.local_ended:
                await c.flush()
                return
            await c.flush()


class H2ServerConnection:
    """One accepted HTTP/2 connection (after TLS with ALPN h2)."""

    def __init__(
        self,
        transport: trio.abc.Stream,
        config: ServerConfig,
        handler: Handler,
        shutdown: trio.Event,
        peer: str = "?",
        totals: ServerTotals | None = None,
        departures: TcpOffsetStream | None = None,
    ):
        self.transport = transport
        self.departures = departures  # the TCP stream under `transport` when stamping
        self._stamps: list[tuple[int, int]] = []  # (sent_ns, end in `_out`) of queued events
        self.config = config
        self.handler = handler
        self.shutdown = shutdown
        self.peer = peer
        s = config.h2
        lim = self.limits = config.h2_limits
        self.totals = totals or ServerTotals(lim.max_buffered_request_bytes_total)
        self._bodies = BodyBudget(lim.max_buffered_request_bytes_per_connection, self.totals.bodies)
        self._resets = ResetRate(lim.rapid_reset_limit, trio.current_time())
        self._control_queued = 0  # control frames in `_out`, not yet taken by the writer
        self._calm: tuple[BoundEvent, str] | None = None  # abuse seen: GOAWAY(ENHANCE_YOUR_CALM)
        self.conn = BoundedH2Connection(
            h2.config.H2Configuration(
                client_side=False,
                header_encoding=None,
                # our own response heads are lowercase and valid: skip h2's per-field checks
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: s.max_concurrent_streams,
                SettingCodes.INITIAL_WINDOW_SIZE: s.initial_stream_window_bytes,
                SettingCodes.MAX_FRAME_SIZE: s.max_frame_size_bytes,
                SettingCodes.ENABLE_CONNECT_PROTOCOL: 0,
            },
        )
        self.conn.decoder.max_header_list_size = (
            _HPACK_HARD_LIMIT_FACTOR * config.max_request_header_bytes
        )
        self.streams: dict[int, _Stream] = {}
        self.highest_stream_id = 0
        self.goaway_last_id: int | None = None  # set once we sent a graceful GOAWAY
        self.dead = False
        self._goaways = GoAwayFilter(server_side=True, max_frame_bytes=s.max_frame_size_bytes)
        self._out = bytearray()  # frames taken from the engine, not yet given to the socket
        self._wake = trio.Event()  # set: the writer has something to send
        self._flushed = trio.Event()  # set once the writer's next write is in the socket
        self._sending: trio.Event | None = None  # set once the write in progress is done
        self._idle = trio.Event()  # set exactly while no stream is open
        self._idle.set()
        self._idle_since = trio.current_time()
        self._nursery: trio.Nursery | None = None
        self.requests = 0
        self.batch_bytes = send_batch_bytes(s.tcp_notsent_lowat_bytes, s.max_frame_size_bytes)

    # --- I/O -----------------------------------------------------------------------------
    def stamped(self, sent_ns: int) -> None:
        """The watch event stamped `sent_ns` is all in the engine: move it to `_out` and note
        where it ends there (stamping only)."""
        self._out += self.conn.data_to_send()
        self._stamps.append((sent_ns, len(self._out)))

    def _queue(self, extra: bytes = b"") -> None:
        """Hand what the engine has queued (then `extra` raw frames) to the writer; no wait."""
        self._out += self.conn.data_to_send()
        self._out += extra
        if self._out:
            self._wake.set()

    async def flush(self, extra: bytes = b"") -> None:
        """Queue as `_queue` does, then wait until the writer has put it (and any write in
        progress) in the socket; PeerGone if dead. Cancelling the wait never cancels a write."""
        self._queue(extra)
        done = self._flushed if self._out else self._sending
        if done is None:
            return
        if self.dead:
            raise PeerGone("connection closed")
        await done.wait()
        if self.dead:
            raise PeerGone("connection lost")

    async def _write_loop(self) -> None:
        """The only sender on the socket; runs in the connection's nursery until it closes."""
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            self._out += self.conn.data_to_send()
            if not self._out:
                continue
            data, self._out = self._out, bytearray()
            stamps = self._stamps
            if stamps:
                assert self.departures is not None
                self._stamps = []
                self.departures.expect(len(data), stamps)
            self._control_queued = 0
            done = self._sending = self._flushed
            self._flushed = trio.Event()
            try:
                await self.transport.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
                log.debug("h2 peer %s: write failed: %r", self.peer, e)
                self._die()
                return
            finally:
                self._sending = None
                done.set()
            if stamps:
                assert self.departures is not None
                self.departures.batch_sent()

    def _die(self) -> None:
        self.dead = True
        self._flushed.set()  # wake waiters: they see `dead`
        for st in self.streams.values():
            st.scope.cancel()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    async def run(self) -> None:
        """Serve the connection until the peer leaves, an error closes it or shutdown drains it."""
        s = self.config.h2
        self.totals.stats.connections += 1
        self.conn.initiate_connection()
        grow = s.connection_window_bytes - self.conn.inbound_flow_control_window
        if grow > 0:
            self.conn.increment_flow_control_window(grow)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write_loop)
                await self.flush()
                nursery.start_soon(self._drain_on_shutdown)
                nursery.start_soon(self._close_when_idle)
                await self._read_loop()
                self._die()
        except PeerGone:
            pass
        finally:
            self.dead = True
            self._bodies.close()  # bodies of streams that never started
            with trio.CancelScope(shield=True), trio.move_on_after(1), contextlib.suppress(*_GONE):
                await self.transport.aclose()

    async def _read_loop(self) -> None:
        while not self.dead:
            try:
                data = await self.transport.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            try:
                data, goaways = self._goaways.feed(data)
            except FrameRuleError as e:
                self._bound("protocol_error_goaways", f"{e}: GOAWAY {e.error_code.name}")
                await self._goaway_then_linger(_goaway_frame(e.error_code, self.highest_stream_id))
                return
            try:
                events = self.conn.receive_data(data) if data else []
            except h2.exceptions.ProtocolError as e:
                # h2 has queued GOAWAY with the error's code; send it and close.
                self._bound("protocol_error_goaways", f"{e} ({type(e).__name__}): GOAWAY")
                await self._goaway_then_linger(_fix_goaway_code(self.conn.data_to_send(), e))
                return
            except Exception:
                log.exception("h2 peer %s: engine failure", self.peer)
                with contextlib.suppress(Exception):
                    self.conn.close_connection(ErrorCodes.INTERNAL_ERROR)
                await self._flush_quietly()
                return
            replies = self.conn.data_to_send()  # what h2 answered by itself: ACKs, RST_STREAMs
            self._out += replies
            self._control_queued += count_control_frames(replies)
            if self._control_queued > self.limits.max_queued_control_frames:
                # the peer does not read what it makes us send: drop it all, say why, close
                self._out.clear()
                self._stamps.clear()  # their bytes are gone
                self.conn.clear_outbound_data_buffer()
                self._calm = ("control_flood_goaways", f"{self._control_queued} replies queued")
            for ev in events:
                if self._calm is not None:
                    break
                self._dispatch(ev)
            if self._calm is not None:
                event, why = self._calm
                self._bound(event, f"{why}: GOAWAY ENHANCE_YOUR_CALM")
                code = ErrorCodes.ENHANCE_YOUR_CALM
                await self._goaway_then_linger(_goaway_frame(code, self.highest_stream_id))
                return
            for g in goaways:
                # the peer opens no new streams; in-flight ones finish, then it closes
                if g.error_code != ErrorCodes.NO_ERROR:
                    log.info("h2 peer %s sent GOAWAY %s", self.peer, g.error_code)
                    await self._flush_quietly()
                    return
            self._queue()  # no wait: a peer blocked writing to us must still be read

    async def _goaway_then_linger(self, frames: bytes) -> None:
        """Queue `frames` (ending with our GOAWAY), then read and discard what the peer still
        sends for up to GOAWAY_LINGER_S, until it closes. Closing at once would answer its
        unread bytes with a TCP RST, which can destroy the GOAWAY before the peer reads it."""
        self._queue(frames)
        with trio.move_on_after(GOAWAY_LINGER_S):
            while not self.dead:
                try:
                    if not await self.transport.receive_some(RECEIVE_BYTES):
                        return
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return

    async def _flush_quietly(self, extra: bytes = b"") -> None:
        try:
            with trio.move_on_after(1):
                await self.flush(extra)
        except PeerGone:
            pass

    def _bound(self, event: BoundEvent, detail: str) -> None:
        """A bound was hit: one log line, one count."""
        log.info("h2 bound %s: peer %s: %s", event, self.peer, detail)
        self.totals.stats.note(event)

    async def _close_when_idle(self) -> None:
        """GOAWAY(NO_ERROR) and close once no stream was open for idle_timeout_s."""
        timeout = self.limits.idle_timeout_s
        while True:
            await self._idle.wait()
            since = self._idle_since
            await trio.sleep_until(since + timeout)
            if self._idle.is_set() and self._idle_since == since:
                break
        last = self.highest_stream_id
        self.goaway_last_id = last  # a stream racing the GOAWAY is refused
        self._bound("idle_closed", f"no open stream for {timeout:g} s: GOAWAY NO_ERROR")
        self._queue(_goaway_frame(ErrorCodes.NO_ERROR, last))  # no wait: the peer may not read
        await trio.sleep(GOAWAY_LINGER_S)  # the peer closes first; its EOF ends the connection
        self._die()

    def reset_stalled(self, st: _Stream) -> None:
        """Reset a stream whose send side waited stream_stall_timeout_s for window."""
        st.reset = True
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.conn.reset_stream(st.id, ErrorCodes.CANCEL)
        self._queue()
        timeout = self.limits.stream_stall_timeout_s
        self._bound("stalled_resets", f"stream {st.id} without window for {timeout:g} s: CANCEL")

    async def _drain_on_shutdown(self) -> None:
        await self.shutdown.wait()
        last = self.highest_stream_id
        self.goaway_last_id = last
        await self.flush(_goaway_frame(ErrorCodes.NO_ERROR, last))
        if self.streams:
            await self._idle.wait()
        self.conn.close_connection(ErrorCodes.NO_ERROR, last_stream_id=last)
        await self.flush()
        self._die()

    # --- events --------------------------------------------------------------------------
    def _dispatch(self, ev: h2.events.Event) -> None:
        if isinstance(ev, h2.events.RequestReceived):
            self._on_request(ev.stream_id, ev.headers or [])
        elif isinstance(ev, h2.events.DataReceived):
            self._on_data(ev)
        elif isinstance(ev, h2.events.StreamEnded):
            st = self.streams.get(ev.stream_id)
            if st is not None and not st.started:
                self._start(st)
        elif isinstance(ev, h2.events.StreamReset):
            st = self.streams.get(ev.stream_id)
            if st is not None:
                st.reset = True
                st.scope.cancel()
                if st.window_event is not None:
                    st.window_event.set()
                if not st.started:  # no task will remove it
                    self._drop(st)
                if not self._resets.take(trio.current_time()):
                    rate = self.limits.rapid_reset_limit
                    self._calm = ("rapid_reset_goaways", f"more than {rate} resets per second")
        elif isinstance(ev, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            sid = getattr(ev, "stream_id", 0)
            targets = self.streams.values() if not sid else [self.streams.get(sid)]
            for st in targets:
                if st is not None and st.window_event is not None:
                    st.window_event.set()
        elif isinstance(ev, h2.events.ConnectionTerminated):
            if ev.error_code != ErrorCodes.NO_ERROR:
                log.info("h2 peer %s sent GOAWAY %s", self.peer, ev.error_code)
                self._die()
            elif self.goaway_last_id is None:
                self.goaway_last_id = self.highest_stream_id
                if not self.streams:
                    self._die()

    def _on_request(self, stream_id: int, headers: list) -> None:
        if self.goaway_last_id is not None and stream_id > self.goaway_last_id:
            self.conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        self.highest_stream_id = max(self.highest_stream_id, stream_id)
        self.streams[stream_id] = _Stream(stream_id, headers)
        self._streams_changed()

    def _streams_changed(self) -> None:
        """Keep `_idle` set exactly when no stream is open (graceful shutdown and the idle
        timeout wait on it), `_idle_since` when that began."""
        if not self.streams:
            if not self._idle.is_set():
                self._idle.set()
                self._idle_since = trio.current_time()
        elif self._idle.is_set():
            self._idle = trio.Event()

    def _drop(self, st: _Stream) -> None:
        """Forget a stream no task runs for, and give its body's bytes back."""
        self._bodies.release(st.reserved_bytes)
        st.reserved_bytes = 0
        st.body = bytearray()
        del self.streams[st.id]
        self._streams_changed()

    def _on_data(self, ev: h2.events.DataReceived) -> None:
        sid = ev.stream_id
        with contextlib.suppress(h2.exceptions.ProtocolError):  # includes StreamClosedError
            self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
        st = self.streams.get(sid)
        if st is None or st.too_large:
            return
        data = ev.data or b""
        if len(st.body) + len(data) > self.config.max_request_body_bytes:
            st.too_large = True
            st.body = bytearray()
            self._bodies.release(st.reserved_bytes)
            st.reserved_bytes = 0
            self._start(st)
            return
        if not self._bodies.reserve(len(data)):
            # RFC 9113 §8.7: REFUSED_STREAM = not processed at all, safe to retry later
            held = self._bodies.used_bytes
            self._bound(
                "body_refused",
                f"stream {sid}: {held} B of bodies held on this connection, "
                f"{self.totals.bodies.used_bytes} B in all: REFUSED_STREAM",
            )
            st.reset = True
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.conn.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            self._drop(st)
            return
        st.reserved_bytes += len(data)
        st.body += data

    def _start(self, st: _Stream) -> None:
        st.started = True
        assert self._nursery is not None
        self._nursery.start_soon(self._run_stream, st)

    def _request(self, st: _Stream) -> Request:
        method = path = ""
        headers: list[tuple[str, str]] = []
        for n, v in st.headers:
            name, value = _text(n), _text(v)
            if name == ":method":
                method = value
            elif name == ":path":
                path = value
            headers.append((name, value))
        body, st.body = bytes(st.body), bytearray()  # one copy held, not two
        return Request(method, path, tuple(headers), body, "h2", st.id, False)

    async def _run_stream(self, st: _Stream) -> None:
        self.requests += 1
        self.totals.stats.requests += 1
        writer = _Writer(self, st)
        try:
            with st.scope:
                request = self._request(st)
                if st.too_large:
                    await respond_error(request, writer, self.config, 413, "request body too large")
                else:
                    await self.handler(request, writer)
                if not st.local_ended and not st.reset:
                    if not writer.headers_sent:
                        await respond_error(request, writer, self.config, 500, "no response")
                    else:
                        await writer.send_data(b"", end_stream=True)
        except PeerGone:
            pass
        except Exception:
            log.exception("h2 stream %d of %s failed", st.id, self.peer)
            if not st.reset and not self.dead:
                st.reset = True
                try:
                    self.conn.reset_stream(st.id, ErrorCodes.INTERNAL_ERROR)
                    await self.flush()
                except (h2.exceptions.ProtocolError, PeerGone):
                    pass
        finally:
            if st.too_large and not st.reset and not self.dead:
                # RFC 9113 §8.1: a complete response may precede the rest of the request body.
                with contextlib.suppress(h2.exceptions.ProtocolError):
                    self.conn.reset_stream(st.id, ErrorCodes.NO_ERROR)
            self._bodies.release(st.reserved_bytes)
            st.reserved_bytes = 0
            self.streams.pop(st.id, None)
            self._streams_changed()


async def _http11(stream: trio.abc.Stream, config: ServerConfig) -> None:
    """ALPN http/1.1 (or none): read the request head, answer 505 and close. Kept minimal."""
    buf = b""
    with trio.move_on_after(5):
        while b"\r\n\r\n" not in buf and len(buf) < config.max_request_header_bytes:
            data = await stream.receive_some(16384)
            if not data:
                return
            buf += data
    body = b"this server speaks HTTP/2 (ALPN h2) and HTTP/3\n"
    head = (
        "HTTP/1.1 505 HTTP Version Not Supported\r\n"
        f'alt-svc: h3=":{config.port}"; ma=86400\r\n{EARLY_DATA_HEADER}: 0\r\n'
        f"content-type: text/plain\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    await stream.send_all(head.encode() + body)


async def _serve_one(
    sock_stream: trio.SocketStream,
    ssl_context: ssl.SSLContext,
    config: ServerConfig,
    handler: Handler,
    shutdown: trio.Event,
    totals: ServerTotals,
) -> None:
    departures: TcpOffsetStream | None = None
    try:
        peer = "?"
        try:
            p = sock_stream.socket.getpeername()
            peer = f"[{p[0]}]:{p[1]}"
        except OSError:
            pass
        set_tcp_options(
            sock_stream.socket, config.h2.tcp_congestion, config.h2.tcp_notsent_lowat_bytes
        )
        if (offset_file := tcp_offset_log()) is not None:  # before TLS: count from ISN + 1
            departures = TcpOffsetStream.open(sock_stream, offset_file)
        tls = trio.SSLStream(departures or sock_stream, ssl_context, server_side=True)
        with trio.move_on_after(HANDSHAKE_TIMEOUT_S) as hs:
            await tls.do_handshake()
        if hs.cancelled_caught:
            await trio.aclose_forcefully(tls)
            return
        if tls.selected_alpn_protocol() != "h2":
            try:
                await _http11(tls, config)
                with trio.move_on_after(1):
                    await tls.aclose()  # close_notify, so the client sees a clean end
            finally:
                await trio.aclose_forcefully(tls)
            return
        connection = H2ServerConnection(tls, config, handler, shutdown, peer, totals, departures)
        await connection.run()
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
        log.debug("h2 connection ended: %r", e)
        await trio.aclose_forcefully(departures or sock_stream)
    except Exception:
        log.exception("h2 connection failed")
        await trio.aclose_forcefully(departures or sock_stream)


async def serve_h2(
    config: ServerConfig,
    handler: Handler,
    ssl_context: ssl.SSLContext,
    listeners: list[socket.socket],
    *,
    shutdown: trio.Event,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept TLS connections on the bound `listeners` until `shutdown`, then drain and return.

    After `shutdown`, connections get `config.grace_s` to finish in-flight requests; whatever
    is still running then is cancelled. Logs the `h2 summary:` line (the bounds' counters) at
    the end.
    """
    trio_listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in listeners]
    for s in listeners:
        set_tcp_options(s, config.h2.tcp_congestion, config.h2.tcp_notsent_lowat_bytes)
    totals = ServerTotals(config.h2_limits.max_buffered_request_bytes_total)
    args = (ssl_context, config, handler, shutdown, totals)
    try:
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as acceptors:
                for lst in trio_listeners:
                    acceptors.start_soon(_accept_loop, lst, connections, *args)
                task_status.started()
                await shutdown.wait()
                acceptors.cancel_scope.cancel()
            for lst in trio_listeners:
                await lst.aclose()
            connections.cancel_scope.deadline = trio.current_time() + config.grace_s
    finally:
        for lst in trio_listeners:
            with trio.CancelScope(shield=True):
                await lst.aclose()
        log.info("%s", totals.summary())


async def _accept_loop(
    listener: trio.SocketListener,
    connections: trio.Nursery,
    ssl_context: ssl.SSLContext,
    config: ServerConfig,
    handler: Handler,
    shutdown: trio.Event,
    totals: ServerTotals,
) -> None:
    while True:
        try:
            stream = await listener.accept()
        except OSError as e:  # EMFILE and friends: back off instead of spinning
            log.warning("accept failed: %s", e)
            await trio.sleep(0.1)
            continue
        args = (ssl_context, config, handler, shutdown, totals)
        connections.start_soon(_serve_one, stream, *args)
