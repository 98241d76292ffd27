"""A deliberately broken HTTP/2 + HTTP/3 server, for showing that each `lab conform` case can fail.

Test-only. It serves the lab's routes (lab.http.app.handle: /healthz, /bytes/{n}, /counter, /echo,
the watch) on one port, TCP and UDP, but:

- HTTP/2 is a lenient raw-frame loop (hyperframe + hpack): no preface, frame-size, stream-state,
  flow-control, concurrency, header or HPACK checks; CONTINUATION is buffered without bound.
- HTTP/3 runs aioquic's H3Connection with every HTTP/3 and QPACK error swallowed (no close).
- SIGTERM exits at once: no GOAWAY, no drain.

and `--break A,B` switches on further misbehaviours (BREAKS). Run:

    python tests/conform_broken_server.py --port 8443 --cert-dir DIR [--break quic-retry,...]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import ssl
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hpack
import trio
from aioquic import tls as aioquic_tls
from aioquic.buffer import Buffer, BufferReadError
from aioquic.h3.connection import H3Connection, ProtocolError, StreamType
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import (
    ConnectionIdIssued,
    ConnectionTerminated,
    HandshakeCompleted,
    StreamDataReceived,
)
from aioquic.quic.packet import (
    QuicPacketType,
    encode_quic_retry,
    encode_quic_version_negotiation,
    pull_quic_header,
    pull_quic_transport_parameters,
    push_quic_transport_parameters,
)

from lab.http import app, tls
from lab.http.quic_engine import load_engine
from lab.http.settings import ServerConfig

BREAKS = {
    "h2-no-settings-ack": "never ACK the client's SETTINGS (H2-01)",
    "h2-ping-no-ack": "never answer PING (H2-12)",
    "h2-slow-reset": "every RST_STREAM blocks the process 5 ms (H2-14)",
    "h3-any-alpn": "accept ALPN `dummy` too (H3-01)",
    "h3-no-control-stream": "open no HTTP/3 control stream (H3-02)",
    "h3-reject-grease": "close on reserved frames, stream types and settings (H3-05)",
    "h3-ignore-stop-sending": "keep sending after STOP_SENDING (H3-10)",
    "h3-close-on-big-headers": "close the connection on a header section > 64 KiB (H3-13)",
    "quic-retry": "answer every Initial with Retry (Q-01)",
    "quic-bad-retry": "Retry, then omit retry_source_connection_id (Q-04)",
    "quic-no-vn": "no Version Negotiation (Q-02)",
    "quic-no-amplification-limit": "treat every address as validated (Q-05)",
    "quic-accept-small-initial": "accept Initials in datagrams < 1200 bytes (Q-06)",
    "quic-lenient-tp": "accept invalid client transport parameters (Q-07)",
    "quic-stream-limits": "accept streams above the advertised limit (Q-08)",
    "quic-ignore-flow-control": "send beyond the client's windows (Q-09)",
    "quic-no-key-update": "drop packets in a new key phase (Q-10)",
    "quic-drop-new-path": "drop datagrams from a new client address (Q-11)",
    "quic-short-idle": "advertise a 1 s idle timeout, keep the state forever (Q-12)",
    "corrupt-bytes": "flip a byte of /bytes bodies over HTTP/3 (Q-14, D-03)",
    "zero-rtt-drop-early": "accept 0-RTT but drop the request it carries (Z-01)",
    "zero-rtt-unsafe": "process unsafe requests from 0-RTT (Z-02)",
    "reusable-tickets": "session tickets are reusable (Z-03)",
    "ignore-early-data-header": "ignore `Early-Data: 1` (Z-04)",
    "reduce-limits-on-resume": "smaller limits once a session ticket was issued (Z-05)",
    "no-alt-svc": "no Alt-Svc header (D-01)",
    "alt-svc-wrong-port": "Alt-Svc names port + 1 (D-02)",
    "reject-alt-used": "400 for requests with Alt-Used (D-04)",
    "bad-altsvc-frame": "an ALTSVC frame on stream 0 without an origin (D-05)",
    "block-on-initial": "every new QUIC connection blocks the process 200 ms (D-06)",
}
H3_INTERNAL_ERROR, H3_FRAME_UNEXPECTED, H3_STREAM_CREATION_ERROR = 0x102, 0x105, 0x103
RESERVED_FRAME_BASE, RESERVED_STEP = 0x21, 0x1F
KNOWN_SETTINGS = {0x1, 0x6, 0x7, 0x8, 0x33, 0x21}
BIG_WINDOW = 16 * 1024 * 1024
HEADER_LIMIT = 64 * 1024
CID_BYTES = 8


def _reserved(kind: int) -> bool:
    return kind >= RESERVED_FRAME_BASE and (kind - RESERVED_FRAME_BASE) % RESERVED_STEP == 0


class Server:
    """Shared state: the flags, the app's config, session tickets, the QUIC configuration."""

    def __init__(self, port: int, cert_dir: Path, breaks: set[str]) -> None:
        self.breaks = breaks
        self.port = port
        self.certs = tls.ensure_certs(cert_dir, pad_bytes=9_000)
        self.config = ServerConfig(port=port, cert_file=self.certs.cert, key_file=self.certs.key)
        self.tickets: dict[bytes, Any] = {}

    def on(self, flag: str) -> bool:
        return flag in self.breaks

    # --- the routes, with the header misbehaviours ----------------------------------------
    async def serve(self, request: app.Request, writer: Any) -> None:
        headers = request.headers
        if self.on("ignore-early-data-header"):
            headers = tuple(h for h in headers if h[0] != "early-data")
        if self.on("reject-alt-used") and any(n == "alt-used" for n, _ in headers):
            await writer.send_headers(400, [("content-length", "0")])
            await writer.send_data(b"", end_stream=True)
            return
        early = request.early_data and not self.on("zero-rtt-unsafe")
        req = app.Request(
            request.method,
            request.path,
            headers,
            request.body,
            request.protocol,
            request.stream_id,
            early,
        )
        try:
            await app.handle(req, writer, self.config)
        except Exception:  # a stream the client reset, a connection it closed: never fatal
            traceback.print_exc()

    def response_headers(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        if self.on("no-alt-svc"):
            return [h for h in headers if h[0] != "alt-svc"]
        if self.on("alt-svc-wrong-port"):
            return [(n, f'h3=":{self.port + 1}"' if n == "alt-svc" else v) for n, v in headers]
        return headers


# --- HTTP/2: a lenient raw-frame server ---------------------------------------------------
def _frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes([kind, flags])
        + stream_id.to_bytes(4, "big")
        + payload
    )


class H2Writer:
    def __init__(self, conn: H2Conn, stream_id: int) -> None:
        self.conn, self.sid = conn, stream_id

    async def send_headers(self, status: int, headers: list[tuple[str, str]]) -> None:
        fields = [(":status", str(status)), *self.conn.server.response_headers(headers)]
        await self.conn.send(_frame(0x1, 0x4, self.sid, self.conn.encoder.encode(fields)))

    async def send_data(
        self, data: bytes, end_stream: bool = False, *, stamp_ns: int | None = None
    ) -> None:
        view = memoryview(data)
        chunks = [view[i : i + 16_384] for i in range(0, len(view), 16_384)] or [view]
        for i, chunk in enumerate(chunks):  # no flow control at all
            last = end_stream and i == len(chunks) - 1
            await self.conn.send(_frame(0x0, 0x1 if last else 0, self.sid, bytes(chunk)))


class H2Conn:
    def __init__(self, server: Server, stream: trio.SSLStream, nursery: trio.Nursery) -> None:
        self.server, self.stream, self.nursery = server, stream, nursery
        self.encoder, self.decoder = hpack.Encoder(), hpack.Decoder()
        self.lock = trio.Lock()
        self.blocks: dict[int, bytearray] = {}
        self.requests: dict[int, dict[str, Any]] = {}

    async def send(self, data: bytes) -> None:
        try:
            async with self.lock:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            raise app.PeerGone("connection gone") from None

    async def run(self) -> None:
        s = self.server
        settings = (0x3).to_bytes(2, "big") + (100).to_bytes(4, "big")
        settings += (0x4).to_bytes(2, "big") + BIG_WINDOW.to_bytes(4, "big")
        hello = _frame(0x4, 0, 0, settings) + _frame(0x8, 0, 0, BIG_WINDOW.to_bytes(4, "big"))
        if s.on("bad-altsvc-frame"):
            hello += _frame(0xA, 0, 0, b"\x00\x00" + b'h3=":1"')  # stream 0, empty origin
        await self.send(hello)
        buf = b""
        preface = 24
        while True:
            data = await self.stream.receive_some(65_536)
            if not data:
                return
            buf += data
            if preface:
                cut = min(preface, len(buf))
                buf, preface = buf[cut:], preface - cut  # whatever it is: not checked
            while len(buf) >= 9:
                length = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + length:
                    break
                kind, flags, sid = buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF
                payload, buf = buf[9 : 9 + length], buf[9 + length :]
                await self.frame(kind, flags, sid, payload)

    async def frame(self, kind: int, flags: int, sid: int, payload: bytes) -> None:
        s = self.server
        if kind == 0x4 and not flags & 0x1 and not s.on("h2-no-settings-ack"):
            await self.send(_frame(0x4, 0x1, 0, b""))
        elif kind == 0x6 and not flags & 0x1 and not s.on("h2-ping-no-ack"):
            await self.send(_frame(0x6, 0x1, 0, payload))
        elif kind == 0x3 and s.on("h2-slow-reset"):
            time.sleep(0.005)  # deliberately blocks the whole process
        elif kind in (0x1, 0x9):
            if kind == 0x1:
                pad = payload[0] if flags & 0x8 else 0
                start = (1 if flags & 0x8 else 0) + (5 if flags & 0x20 else 0)
                payload = payload[start : len(payload) - pad]
                self.requests.setdefault(sid, {"body": bytearray(), "ended": bool(flags & 0x1)})
            self.blocks.setdefault(sid, bytearray()).extend(payload)  # unbounded
            if flags & 0x4:
                block = bytes(self.blocks.pop(sid, b""))
                try:
                    fields = self.decoder.decode(block)
                except Exception:
                    return  # undecodable: ignored
                req = self.requests.setdefault(sid, {"body": bytearray(), "ended": False})
                req["headers"] = [(str(n), str(v)) for n, v in fields]
                if req["ended"]:
                    self.start(sid)
        elif kind == 0x0:
            req = self.requests.get(sid)
            if req is None:
                return  # DATA on an idle stream: ignored
            req["body"] += payload
            if flags & 0x1:
                req["ended"] = True
                if "headers" in req:
                    self.start(sid)

    def start(self, sid: int) -> None:
        req = self.requests.pop(sid)
        h = dict(req["headers"])
        request = app.Request(
            h.get(":method", "GET"),
            h.get(":path", "/"),
            tuple(req["headers"]),
            bytes(req["body"]),
            "h2",
            sid,
            False,
        )
        self.nursery.start_soon(self.server.serve, request, H2Writer(self, sid))


async def _http11(stream: trio.SSLStream, server: Server) -> None:
    with trio.move_on_after(5):
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(16_384)
            if not chunk:
                return
            data += chunk
    headers = server.response_headers([("alt-svc", f'h3=":{server.port}"; ma=86400')])
    lines = "".join(f"{n}: {v}\r\n" for n, v in headers)
    await stream.send_all(
        f"HTTP/1.1 505 HTTP Version Not Supported\r\n{lines}content-length: 0\r\n"
        "connection: close\r\n\r\n".encode()
    )


async def serve_tcp(server: Server, ctx: ssl.SSLContext, host: str) -> None:
    async def one(stream: trio.SSLStream) -> None:
        try:
            await stream.do_handshake()
            if stream.selected_alpn_protocol() == "h2":
                async with trio.open_nursery() as nursery:
                    await H2Conn(server, stream, nursery).run()
                    nursery.cancel_scope.cancel()
            else:
                await _http11(stream, server)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            pass
        except Exception:  # broken on purpose, but it must not die: log and go on
            traceback.print_exc()
        finally:
            await trio.aclose_forcefully(stream)

    await trio.serve_ssl_over_tcp(one, server.port, ctx, host=host)


# --- HTTP/3: aioquic with errors swallowed ------------------------------------------------
def h3_class(server: Server) -> type[H3Connection]:
    class BrokenH3(H3Connection):
        def handle_event(self, event: Any) -> list[Any]:
            grease = server.on("h3-reject-grease") and isinstance(event, StreamDataReceived)
            if grease and self._grease(event):
                return []
            try:
                if isinstance(event, StreamDataReceived):
                    return self._receive_stream_data(event)
            except ProtocolError:
                pass  # deliberately no CONNECTION_CLOSE
            return []

        def _grease(self, event: StreamDataReceived) -> bool:
            data, sid = event.data, event.stream_id
            if not data:
                return False
            try:
                kind = Buffer(data=data).pull_uint_var()
            except BufferReadError:
                return False
            if sid % 4 == 2 and sid not in self._stream and kind not in (0, 2, 3):
                self._quic.close(error_code=H3_STREAM_CREATION_ERROR)
                return True
            if sid % 4 == 0 and sid not in self._stream and _reserved(kind):
                self._quic.close(error_code=H3_FRAME_UNEXPECTED)
                return True
            return False

        def _validate_settings(self, settings: dict[int, int]) -> None:
            if server.on("h3-reject-grease") and set(settings) - KNOWN_SETTINGS:
                self._quic.close(error_code=0x109)
            return None

        def _init_connection(self) -> None:
            if not server.on("h3-no-control-stream"):
                super()._init_connection()
                return
            self._local_encoder_stream_id = self._create_uni_stream(StreamType.QPACK_ENCODER)
            self._local_decoder_stream_id = self._create_uni_stream(StreamType.QPACK_DECODER)

    return BrokenH3


def quic_class(server: Server) -> type:
    base = load_engine("aioquic").connection_class  # records the streams of 0-RTT packets

    class BrokenQuic(base):  # type: ignore[misc, valid-type]
        def _handle_stop_sending_frame(self, context: Any, frame_type: int, buf: Any) -> None:
            if not server.on("h3-ignore-stop-sending"):
                super()._handle_stop_sending_frame(context, frame_type, buf)
                return
            buf.pull_uint_var()
            buf.pull_uint_var()

        def _parse_transport_parameters(
            self, data: bytes, from_session_ticket: bool = False
        ) -> None:
            if server.on("quic-lenient-tp"):
                params = pull_quic_transport_parameters(Buffer(data=data))
                params.stateless_reset_token = None
                params.ack_delay_exponent = None
                if params.max_udp_payload_size is not None and params.max_udp_payload_size < 1200:
                    params.max_udp_payload_size = None
                out = Buffer(capacity=4096)
                push_quic_transport_parameters(out, params)
                data = out.data
            super()._parse_transport_parameters(data, from_session_ticket)

        def receive_datagram(self, data: bytes, addr: Any, now: float) -> None:
            super().receive_datagram(data, addr, now)
            if server.on("quic-no-amplification-limit"):
                for path in self._network_paths:
                    path.is_validated = True

    return BrokenQuic


class H3Writer:
    def __init__(self, conn: QuicConn, sid: int, path: str) -> None:
        self.conn, self.sid, self.path = conn, sid, path
        self.first = True

    async def send_headers(self, status: int, headers: list[tuple[str, str]]) -> None:
        fields = [(b":status", str(status).encode())]
        fields += [(n.encode(), v.encode()) for n, v in self.conn.server.response_headers(headers)]
        self.conn.h3.send_headers(self.sid, fields)
        self.conn.transmit()

    async def send_data(
        self, data: bytes, end_stream: bool = False, *, stamp_ns: int | None = None
    ) -> None:
        if (
            self.first
            and data
            and self.path.startswith("/bytes/")
            and self.conn.server.on("corrupt-bytes")
        ):
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        self.first = self.first and not data
        try:
            self.conn.h3.send_data(self.sid, data, end_stream)
        except Exception as e:  # the stream was reset by the peer
            raise app.PeerGone(str(e)) from None
        self.conn.transmit()
        await trio.sleep(0)


class QuicConn:
    def __init__(self, endpoint: QuicEndpoint, quic: Any, addr: Any) -> None:
        self.endpoint, self.server, self.quic, self.addr = endpoint, endpoint.server, quic, addr
        self.h3 = h3_class(self.server)(quic)
        self.requests: dict[int, dict[str, Any]] = {}
        self.wake = trio.Event()

    def transmit(self) -> None:
        if self.server.on("quic-ignore-flow-control") and self.quic._handshake_complete:
            for stream in self.quic._streams.values():
                stream.max_stream_data_remote = 2**60
            self.quic._loss._cc.congestion_window = 2**30  # send it all at once: no pacing,
            self.quic._loss._pacer.packet_time = None  # no congestion window
        for data, addr in self.quic.datagrams_to_send(now=time.monotonic()):
            with contextlib.suppress(OSError):
                self.endpoint.sock.sendto(data, addr)
        self.wake.set()

    def receive(self, data: bytes, addr: Any) -> None:
        if self.server.on("quic-drop-new-path") and addr != self.addr:
            return
        self.quic.receive_datagram(data, addr, now=time.monotonic())
        self.events()

    def events(self) -> None:
        s = self.server
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, HandshakeCompleted):
                self.after_handshake()
            elif isinstance(event, ConnectionIdIssued):
                self.endpoint.routes[event.connection_id] = self
            elif isinstance(event, ConnectionTerminated):
                self.endpoint.forget(self)
            if (
                isinstance(event, StreamDataReceived)
                and s.on("zero-rtt-drop-early")
                and event.stream_id in self.quic.zero_rtt_stream_ids
            ):
                continue
            for h3_event in self.h3.handle_event(event):
                self.h3_event(h3_event)
        self.transmit()

    def after_handshake(self) -> None:
        s, q = self.server, self.quic
        if s.on("quic-ignore-flow-control"):
            q._remote_max_data = q._remote_max_stream_data_bidi_local = 2**60
        if s.on("quic-stream-limits"):
            q._local_max_streams_bidi.value = q._local_max_streams_bidi.sent = 10**6
        if s.on("quic-short-idle"):
            q._configuration.idle_timeout = 3600.0  # after advertising 1 s
        if s.on("quic-no-key-update"):
            recv = q._cryptos[aioquic_tls.Epoch.ONE_RTT].recv
            original = recv.decrypt_packet

            def refuse_new_phase(*args: Any) -> Any:
                result = original(*args)
                if result[3]:  # the packet would switch to the next key phase
                    raise ValueError("key update refused")
                return result

            recv.decrypt_packet = refuse_new_phase

    def h3_event(self, event: Any) -> None:
        req = self.requests.setdefault(event.stream_id, {"body": bytearray(), "started": False})
        if isinstance(event, HeadersReceived):
            fields = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in event.headers]
            req["headers"] = fields
            if (
                self.server.on("h3-close-on-big-headers")
                and app.header_list_size(tuple(fields)) > HEADER_LIMIT
            ):
                self.quic.close(error_code=H3_INTERNAL_ERROR)
                return
        elif isinstance(event, DataReceived):
            req["body"] += event.data
        if getattr(event, "stream_ended", False) and "headers" in req and not req["started"]:
            req["started"] = True
            h = dict(req["headers"])
            request = app.Request(
                h.get(":method", "GET"),
                h.get(":path", "/"),
                tuple(req["headers"]),
                bytes(req["body"]),
                "h3",
                event.stream_id,
                event.stream_id in self.quic.zero_rtt_stream_ids,
            )
            writer = H3Writer(self, event.stream_id, request.path)
            self.endpoint.nursery.start_soon(self.server.serve, request, writer)

    async def timer_loop(self) -> None:
        while True:
            timer = self.quic.get_timer()
            with trio.move_on_at(trio.current_time() + max(0.0, (timer or 1e9) - time.monotonic())):
                await self.wake.wait()
                self.wake = trio.Event()
                continue
            self.quic.handle_timer(now=time.monotonic())
            self.events()


class QuicEndpoint:
    def __init__(self, server: Server, sock: socket.socket, nursery: trio.Nursery) -> None:
        self.server, self.sock, self.nursery = server, sock, nursery  # sends without waiting
        self.rx = trio.socket.from_stdlib_socket(sock)
        self.routes: dict[bytes, QuicConn] = {}
        self.cls = quic_class(server)

    def forget(self, conn: QuicConn) -> None:
        for cid in [c for c, v in self.routes.items() if v is conn]:
            del self.routes[cid]

    def configuration(self) -> QuicConfiguration:
        s = self.server
        alpn = ["h3", "dummy"] if s.on("h3-any-alpn") else ["h3"]
        cfg = QuicConfiguration(
            is_client=False, alpn_protocols=alpn, max_data=BIG_WINDOW, max_stream_data=BIG_WINDOW
        )
        cfg.load_cert_chain(str(s.certs.cert), str(s.certs.key))
        if s.on("quic-short-idle"):
            cfg.idle_timeout = 1.0
        if s.on("reduce-limits-on-resume") and s.tickets:
            cfg.max_data = cfg.max_stream_data = 1024 * 1024
        return cfg

    def ticket(self, label: bytes) -> Any:
        if self.server.on("reusable-tickets"):
            return self.server.tickets.get(label)
        return self.server.tickets.pop(label, None)

    def datagram(self, data: bytes, addr: Any) -> None:
        s = self.server
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CID_BYTES)
        except ValueError:
            return
        conn = self.routes.get(header.destination_cid)
        if conn is not None:
            conn.receive(data, addr)
            return
        if header.packet_type != QuicPacketType.INITIAL:
            return
        if header.version not in (0x1, 0x6B3343CF):
            if not s.on("quic-no-vn"):
                vn = encode_quic_version_negotiation(
                    source_cid=header.destination_cid,
                    destination_cid=header.source_cid,
                    supported_versions=[0x1],
                )
                with contextlib.suppress(OSError):
                    self.sock.sendto(vn, addr)
            return
        odcid, retry_cid = header.destination_cid, None
        if s.on("quic-retry") or s.on("quic-bad-retry"):
            if not header.token:
                retry_cid = os.urandom(CID_BYTES)
                token = b"lab" + bytes([len(odcid)]) + odcid + retry_cid
                packet = encode_quic_retry(
                    header.version, retry_cid, header.source_cid, odcid, token
                )
                with contextlib.suppress(OSError):
                    self.sock.sendto(packet, addr)
                return
            n = header.token[3]
            odcid, retry_cid = header.token[4 : 4 + n], header.token[4 + n :]
            if s.on("quic-bad-retry"):
                retry_cid = None
        if s.on("block-on-initial"):
            time.sleep(0.2)  # deliberately blocks the whole process
        quic = self.cls(
            configuration=self.configuration(),
            original_destination_connection_id=odcid,
            retry_source_connection_id=retry_cid,
            session_ticket_fetcher=self.ticket,
            session_ticket_handler=lambda t: s.tickets.__setitem__(t.ticket, t),
        )
        conn = QuicConn(self, quic, addr)
        self.routes[header.destination_cid] = self.routes[quic.host_cid] = conn
        for cid in quic._host_cids:
            self.routes[cid.cid] = conn
        if s.on("quic-accept-small-initial") and len(data) < 1200:
            data += bytes(1200 - len(data))  # padding outside the packet: the check passes
        self.nursery.start_soon(conn.timer_loop)
        conn.receive(data, addr)
        for cid in quic._host_cids:
            self.routes[cid.cid] = conn

    async def run(self) -> None:
        while True:
            data, addr = await self.rx.recvfrom(65_536)
            try:
                self.datagram(data, addr)
            except Exception:  # broken on purpose, but it must not die: log and go on
                traceback.print_exc()


async def main(host: str, port: int, cert_dir: Path, breaks: set[str]) -> None:
    server = Server(port, cert_dir, breaks)
    ctx = tls.server_ssl_context(server.certs.cert, server.certs.key)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    raw = socket.socket(family, socket.SOCK_DGRAM)
    raw.bind((host, port))
    raw.setblocking(False)
    async with trio.open_nursery() as nursery:
        endpoint = QuicEndpoint(server, raw, nursery)
        nursery.start_soon(endpoint.run)
        nursery.start_soon(serve_tcp, server, ctx, host)
        print(
            f"broken server on {host}:{port}: {', '.join(sorted(breaks)) or 'lenient only'}",
            flush=True,
        )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--cert-dir", type=Path, required=True)
    p.add_argument("--break", dest="breaks", default="", help=", ".join(BREAKS))
    args = p.parse_args(argv)
    unknown = {b for b in args.breaks.split(",") if b} - set(BREAKS)
    if unknown:
        p.error(f"unknown --break {sorted(unknown)}")
    return args


if __name__ == "__main__":
    args = parse()
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # no drain, no GOAWAY: broken
    trio.run(main, args.host, args.port, args.cert_dir, {b for b in args.breaks.split(",") if b})
    sys.exit(0)
