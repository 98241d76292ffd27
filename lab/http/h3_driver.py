"""The trio side of one QUIC connection, shared by the HTTP/3 server and client.

`QuicDriver` feeds datagrams into a sans-I/O QuicConnection (aioquic or qh3), turns its events
into H3 events for a subclass, sends what the engine wants sent, runs the engine's loss/idle
timer on trio's clock, and offers a flow-controlled body writer. Engine time (`now`) is
`time.monotonic()` in seconds — the same CLOCK_MONOTONIC as the ns timestamps of the lab.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Protocol

import trio

from lab.http.app import PeerGone
from lab.http.quic_engine import QuicEngine, is_closing, send_backlog
from lab.http.udp import UdpEndpoint

log = logging.getLogger(__name__)

WRITE_CHUNK_BYTES = 64 * 1024  # body bytes handed to the engine per call
DRAIN_CAP_S = 2.0  # a closing connection is dropped after this even if the engine lingers


class StreamClosedError(PeerGone):
    """The stream was reset by the peer or its connection ended while writing."""


class DepartureStamps(Protocol):
    """When watch events left in a datagram (a server that stamps them; lab.http.h3_server)."""

    def queued(self, stream_id: int, stamp_ns: int) -> None:
        """The event stamped `stamp_ns` was just handed to the engine on `stream_id`."""

    def covered(self) -> list[int]:
        """The stamps of the events whose last byte the datagrams just built carry."""

    def left(self, stamps: list[int], left_ns: int) -> None:
        """Those events' datagrams went to the socket at `left_ns` (CLOCK_MONOTONIC ns)."""


class QuicDriver:
    """Runs one QUIC connection with HTTP/3 on top; subclasses handle the H3 events."""

    def __init__(self, engine: QuicEngine, quic: Any, endpoint: UdpEndpoint) -> None:
        self.engine = engine
        self.quic = quic
        self.endpoint = endpoint
        self.h3: Any = None
        self.terminated = False
        self.close_reason: Any = None
        self.reset_streams: set[int] = set()
        self._progress = trio.Event()
        self._waiting = False  # a task waits on _progress
        self._timer_scope: trio.CancelScope | None = None
        self._closing_since: float | None = None  # trio time the engine started closing
        # backlog above which a writer waits: the engine's buffer must cover the bandwidth-delay
        # product (aioquic counts unacknowledged bytes, qh3 only unsent ones)
        self.high_water_bytes = 4 * 1024 * 1024 if engine.name == "aioquic" else 1024 * 1024
        self.departures: DepartureStamps | None = None  # None: events are not stamped

    # --- receiving -------------------------------------------------------------------------

    def receive(self, data: bytes, addr: Any, rx_ns: int) -> None:
        """Feed one datagram (received at rx_ns, CLOCK_MONOTONIC ns) and handle its events."""
        if self.terminated:
            return
        try:
            self.quic.receive_datagram(data, addr, now=rx_ns / 1e9)
            self.pump_events(rx_ns)
        except Exception as exc:  # an engine bug or a peer input the engine did not catch
            self.fail(exc)

    def receive_many(self, datagrams: list[bytes], addr: Any, rx_ns: int) -> None:
        """Feed several datagrams from one peer at once (qh3's native batch path)."""
        if self.terminated:
            return
        try:
            self.quic.receive_many_datagrams(datagrams, addr, now=rx_ns / 1e9)
            self.pump_events(rx_ns)
        except Exception as exc:
            self.fail(exc)

    def pump_events(self, rx_ns: int) -> None:
        """Drain the engine's QUIC events, pass them to H3, and hand H3 events to subclasses."""
        events = self.engine.events
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, events.ProtocolNegotiated | events.StreamDataReceived):
                self.ensure_h3()
            if isinstance(event, events.ConnectionTerminated):
                self.terminated = True
                self.close_reason = event
            elif isinstance(event, events.StreamReset | events.StopSendingReceived):
                self.reset_streams.add(event.stream_id)
            self.on_quic_event(event)
            if self.h3 is not None and not self.terminated:
                for h3_event in self.h3.handle_event(event):
                    self.on_h3_event(h3_event, rx_ns)
        if self.terminated:
            self.on_terminated()

    def ensure_h3(self) -> None:
        """Create the H3Connection (once)."""
        if self.h3 is None:
            self.h3 = self.engine.h3.H3Connection(self.quic)

    def on_quic_event(self, event: Any) -> None:
        """A QUIC-level event (connection ids, handshake, termination); default: ignore."""

    def on_h3_event(self, event: Any, rx_ns: int) -> None:
        """An H3 event (HeadersReceived, DataReceived, …) from a datagram received at rx_ns."""

    def on_terminated(self) -> None:
        """The connection ended (after draining); default: stop the timer, wake writers."""
        self.wake()
        if self._timer_scope is not None:
            self._timer_scope.cancel()

    def fail(self, exc: BaseException) -> None:
        """Close the connection after an unexpected error, without raising."""
        log.warning("QUIC connection failed: %r", exc, exc_info=exc)
        try:
            self.quic.close(error_code=0x1, reason_phrase="internal error")  # INTERNAL_ERROR
        except Exception:
            self.terminated = True
        self.wake()

    # --- sending ---------------------------------------------------------------------------

    async def transmit(self) -> None:
        """Send every datagram the engine has ready and re-arm its timer."""
        try:
            datagrams = self.quic.datagrams_to_send(now=time.monotonic())
        except Exception as exc:
            self.fail(exc)
            return
        self._rearm()
        stamps = self.departures
        # the events these datagrams carry, and when they go to the socket: taken before the
        # send (a send that waits on a full socket buffer is not counted); logged after it
        departed = stamps.covered() if stamps is not None else None
        left_ns = time.monotonic_ns() if departed else 0
        if datagrams:
            await self.endpoint.send_many(datagrams)
        if stamps is not None and departed:
            stamps.left(departed, left_ns)

    def wake(self) -> None:
        """Wake the writers waiting for flow-control / congestion progress (call after input
        was processed: a batch of datagrams, a timer, a termination)."""
        if self._waiting:
            self._waiting = False
            self._progress.set()
            self._progress = trio.Event()

    async def wait_progress(self) -> None:
        """Wait until the engine processed input (ACKs, window updates) or its timer fired."""
        self._waiting = True
        await self._progress.wait()

    def stream_closed(self, stream_id: int) -> bool:
        """True when nothing more can be written on a stream."""
        return self.terminated or stream_id in self.reset_streams or is_closing(self.quic)

    async def write_body(
        self, stream_id: int, data: bytes, end_stream: bool, stamp_ns: int | None = None
    ) -> None:
        """Write body bytes as H3 DATA, waiting while the engine's send backlog is high.
        `stamp_ns`: the bytes are one watch event with that stamp, for `departures`.

        Raises StreamClosedError when the peer reset the stream or the connection ended.
        """
        view = memoryview(data)
        offset = 0
        while True:
            if self.stream_closed(stream_id):
                raise StreamClosedError(f"stream {stream_id} closed")
            if send_backlog(self.engine, self.quic, stream_id) > self.high_water_bytes:
                await self.wait_progress()
                continue
            chunk = view[offset : offset + WRITE_CHUNK_BYTES]
            offset += len(chunk)
            last = offset >= len(view)
            try:
                self.h3.send_data(stream_id, bytes(chunk), end_stream=end_stream and last)
            except self.engine.connection.QuicConnectionError as exc:
                raise StreamClosedError(str(exc)) from exc
            if last and stamp_ns is not None and self.departures is not None:
                self.departures.queued(stream_id, stamp_ns)
            await self.transmit()
            if last:
                return

    # --- timer -----------------------------------------------------------------------------

    def _deadline(self) -> float:
        timer = self.quic.get_timer()
        deadline = math.inf if timer is None else trio.current_time() + (timer - time.monotonic())
        if self._closing_since is None and is_closing(self.quic):
            self._closing_since = trio.current_time()
        if self._closing_since is not None:
            # qh3 keeps a peer-closed connection until its idle timeout; RFC 9000 §10.2
            # asks for ~3 PTO of draining, which DRAIN_CAP_S covers up to PTO ≈ 0.6 s
            deadline = min(deadline, self._closing_since + DRAIN_CAP_S)
        return deadline

    def _rearm(self) -> None:
        if self._timer_scope is not None:
            self._timer_scope.deadline = self._deadline()

    async def timer_loop(self) -> None:
        """Run the engine's timer (loss detection, idle timeout, ACK delay) until termination."""
        while not self.terminated:
            with trio.CancelScope(deadline=self._deadline()) as scope:
                self._timer_scope = scope
                await trio.sleep_forever()
            self._timer_scope = None
            if self.terminated:
                break
            if self._closing_since is not None and (
                trio.current_time() >= self._closing_since + DRAIN_CAP_S
            ):
                self.terminated = True
                self.on_terminated()
                break
            timer = self.quic.get_timer()
            now = time.monotonic()
            if timer is not None and timer <= now:
                try:
                    self.quic.handle_timer(now=now)
                    self.pump_events(time.monotonic_ns())
                except Exception as exc:
                    self.fail(exc)
                await self.transmit()
                self.wake()
                await trio.sleep(0)
