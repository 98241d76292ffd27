"""A raw HTTP/2 client connection for the conformance cases: TLS with ALPN h2, then frames.

Nothing is validated on the way out: cases write any frame they like (hand-built bytes, or
hyperframe frames, header blocks encoded by hpack without checks). Everything the server sends is
parsed with hyperframe and kept in order, header blocks decoded with hpack, so a case can wait for
"a GOAWAY", "RST_STREAM on stream 3" or "the response on stream 1" while harmless frames pass by
(policy 4). The server's SETTINGS are ACKed, and DATA is credited back with WINDOW_UPDATE, unless
the case turns that off (`auto_window=False`, for the flow-control cases).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import hpack
import trio
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from lab.conform.context import CaseContext
from lab.conform.waking import Waking
from lab.http.h2_client import client_context
from lab.http.response_head import ResponseHead
from lab.http.tls import client_ssl_context

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
FRAME_HEADER_BYTES = 9
DEFAULT_WINDOW = 65_535
RECEIVE_BYTES = 65_536

# error codes (RFC 9113 §7)
NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR = 0x0, 0x1, 0x2, 0x3
STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL = 0x5, 0x6, 0x7, 0x8
COMPRESSION_ERROR, ENHANCE_YOUR_CALM = 0x9, 0xB
GENERIC_ERRORS = frozenset({PROTOCOL_ERROR, INTERNAL_ERROR})  # policy 1
ERROR_NAMES = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT",
    0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}
# SETTINGS identifiers (RFC 9113 §6.5.2)
HEADER_TABLE_SIZE, ENABLE_PUSH, MAX_CONCURRENT_STREAMS = 0x1, 0x2, 0x3
INITIAL_WINDOW_SIZE, MAX_FRAME_SIZE, MAX_HEADER_LIST_SIZE = 0x4, 0x5, 0x6
# frame types
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0x0,
    0x1,
    0x3,
    0x4,
    0x6,
    0x7,
    0x8,
    0x9,
)
END_STREAM, ACK, END_HEADERS = 0x1, 0x1, 0x4

Headers = Sequence[tuple[str | bytes, str | bytes]]


def error_name(code: int) -> str:
    """`PROTOCOL_ERROR`, or the number for an unknown code."""
    return ERROR_NAMES.get(code, f"0x{code:x}")


def raw_frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    """One frame as bytes, whatever its length or contents (RFC 9113 §4.1)."""
    return (
        len(payload).to_bytes(3, "big")
        + bytes([kind, flags])
        + (stream_id & 0x7FFFFFFF).to_bytes(4, "big")
        + payload
    )


def settings_payload(values: dict[int, int]) -> bytes:
    """A SETTINGS payload: identifier (16 bits) and value (32 bits) pairs."""
    return b"".join(k.to_bytes(2, "big") + v.to_bytes(4, "big") for k, v in values.items())


def _bytes(x: str | bytes) -> bytes:
    return x if isinstance(x, bytes) else x.encode("latin-1")


@dataclass
class H2Stream(ResponseHead):
    """What the server sent on one stream (`headers`: the response head)."""

    trailers: list[tuple[str, str]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    data_frames: int = 0
    flow_bytes: int = 0  # flow-controlled bytes of its DATA frames (padding included)
    ended: bool = False  # END_STREAM seen
    reset: int | None = None  # RST_STREAM error code


class H2Wire(Waking):
    """One raw HTTP/2 connection (see the module docstring). Use `open_h2`."""

    def __init__(self, tls: trio.SSLStream, *, auto_window: bool = True) -> None:
        self.tls = tls
        self.auto_window = auto_window
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.frames: list[Frame] = []  # every frame received, in order
        self.server_settings: dict[int, int] = {}
        self.server_settings_seen = False
        self.settings_acks = 0  # ACKs of our SETTINGS received
        self.goaways: list[GoAwayFrame] = []
        self.streams: dict[int, H2Stream] = {}
        self.closed: str | None = None  # "eof" (FIN) or "reset" (ECONNRESET / TLS error)
        self.decode_error: str | None = None  # the server's header block did not decode
        self.bytes_received = 0
        self._buf = bytearray()
        self._block: tuple[int, bytearray, bool] | None = None  # (stream, fragments, end_stream)
        self._progress = trio.Event()
        self._send_lock = trio.Lock()

    # --- sending ------------------------------------------------------------------------
    async def send(self, data: bytes) -> None:
        """Write raw bytes (frames or anything else). A connection the server closed or reset
        is recorded in `closed` (the cases judge it), not raised."""
        try:
            async with self._send_lock:
                await self.tls.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            self.closed = self.closed or "reset"
            self._wake()

    async def send_frame(self, frame: Frame) -> None:
        await self.send(frame.serialize())

    def encode(self, headers: Headers, *, huffman: bool = True) -> bytes:
        """An HPACK header block of `headers` as given: no validation, no normalisation."""
        fields = [(_bytes(n), _bytes(v)) for n, v in headers]
        return bytes(self.encoder.encode(fields, huffman=huffman))

    async def send_headers(
        self,
        stream_id: int,
        headers: Headers,
        *,
        end_stream: bool = True,
        end_headers: bool = True,
        block: bytes | None = None,
    ) -> None:
        """HEADERS with `headers` encoded (or the given raw `block`)."""
        flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
        payload = self.encode(headers) if block is None else block
        await self.send(raw_frame(HEADERS, flags, stream_id, payload))

    async def send_data(self, stream_id: int, data: bytes, *, end_stream: bool = True) -> None:
        await self.send(raw_frame(DATA, END_STREAM if end_stream else 0, stream_id, data))

    async def window_update(self, stream_id: int, increment: int) -> None:
        await self.send(raw_frame(WINDOW_UPDATE, 0, stream_id, increment.to_bytes(4, "big")))

    def request_headers(
        self, method: str, path: str, authority: str, extra: Headers = ()
    ) -> list[tuple[str | bytes, str | bytes]]:
        """A request head: the four pseudo-headers, then `extra`."""
        head: list[tuple[str | bytes, str | bytes]] = [
            (":method", method),
            (":scheme", "https"),
            (":authority", authority),
            (":path", path),
        ]
        return [*head, *extra]

    # --- receiving ----------------------------------------------------------------------
    async def read_loop(self) -> None:
        """Read and parse until the connection ends (run it in a nursery)."""
        try:
            while True:
                data = await self.tls.receive_some(RECEIVE_BYTES)
                if not data:
                    self.closed = "eof"
                    return
                self.bytes_received += len(data)
                self._buf += data
                await self._parse()
                self._wake()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
            self.closed = self.closed or "reset"
        finally:
            self._wake()

    async def _parse(self) -> None:
        while len(self._buf) >= FRAME_HEADER_BYTES:
            try:
                frame, length = Frame.parse_frame_header(memoryview(self._buf[:9]))
            except HyperframeError as e:
                self.decode_error = f"unparsable frame header: {e}"
                self._buf.clear()
                return
            if len(self._buf) < FRAME_HEADER_BYTES + length:
                return
            body = bytes(self._buf[FRAME_HEADER_BYTES : FRAME_HEADER_BYTES + length])
            del self._buf[: FRAME_HEADER_BYTES + length]
            try:
                frame.parse_body(memoryview(body))
            except HyperframeError as e:
                self.decode_error = f"unparsable {type(frame).__name__}: {e}"
                continue
            self.frames.append(frame)
            await self._on_frame(frame)

    def stream(self, stream_id: int) -> H2Stream:
        return self.streams.setdefault(stream_id, H2Stream())

    async def _on_frame(self, frame: Frame) -> None:
        if isinstance(frame, SettingsFrame):
            if "ACK" in frame.flags:
                self.settings_acks += 1
            else:
                self.server_settings.update(frame.settings)
                self.server_settings_seen = True
                await self._quietly(raw_frame(SETTINGS, ACK, 0, b""))
        elif isinstance(frame, GoAwayFrame):
            self.goaways.append(frame)
        elif isinstance(frame, RstStreamFrame):
            self.stream(frame.stream_id).reset = frame.error_code
        elif isinstance(frame, HeadersFrame):
            ends = "END_STREAM" in frame.flags
            self._block = (frame.stream_id, bytearray(frame.data), ends)
            if "END_HEADERS" in frame.flags:
                self._end_block()
        elif isinstance(frame, ContinuationFrame) and self._block is not None:
            self._block[1].extend(frame.data)
            if "END_HEADERS" in frame.flags:
                self._end_block()
        elif isinstance(frame, DataFrame):
            st = self.stream(frame.stream_id)
            st.body += frame.data
            st.data_frames += 1
            n = frame.flow_controlled_length
            st.flow_bytes += n
            if "END_STREAM" in frame.flags:
                st.ended = True
            if self.auto_window and n:
                await self._quietly(
                    raw_frame(WINDOW_UPDATE, 0, 0, n.to_bytes(4, "big"))
                    + raw_frame(WINDOW_UPDATE, 0, frame.stream_id, n.to_bytes(4, "big"))
                )

    def _end_block(self) -> None:
        assert self._block is not None
        stream_id, block, ends = self._block
        self._block = None
        try:
            fields = [(_text(n), _text(v)) for n, v in self.decoder.decode(bytes(block), raw=True)]
        except Exception as e:  # hpack.HPACKError and friends: the server's fault
            self.decode_error = f"server header block did not decode: {e!r}"
            return
        st = self.stream(stream_id)
        if st.headers and not any(n == ":status" and v.startswith("1") for n, v in st.headers):
            st.trailers = fields
        else:
            st.headers = fields
        if ends:
            st.ended = True

    async def _quietly(self, data: bytes) -> None:
        await self.send(data)

    # --- waiting ------------------------------------------------------------------------
    def _ended(self) -> bool:
        return self.closed is not None

    @property
    def conn_error(self) -> str | None:
        """How the connection ended or was refused: `GOAWAY X`, `FIN`, `reset`; None if open."""
        bad = [g for g in self.goaways if g.error_code != NO_ERROR]
        if bad:
            return f"GOAWAY {error_name(bad[0].error_code)}"
        if self.closed is not None:
            return {"eof": "TCP FIN", "reset": "connection reset"}[self.closed]
        return None

    def goaway_code(self) -> int | None:
        """The error code of the first GOAWAY with an error, or None."""
        return next((g.error_code for g in self.goaways if g.error_code != NO_ERROR), None)

    async def ping(self, payload: bytes, timeout_s: float) -> bool:
        """Send PING(payload) and wait for its ACK."""
        await self.send_frame(PingFrame(0, payload))
        return await self.wait_for(lambda: self.ping_acked(payload), timeout_s)

    def ping_acked(self, payload: bytes) -> bool:
        return any(
            isinstance(f, PingFrame) and "ACK" in f.flags and f.opaque_data == payload
            for f in self.frames
        )

    def window_updates(self, stream_id: int) -> int:
        """WINDOW_UPDATE frames the server sent for `stream_id` (0: the connection)."""
        return sum(
            1 for f in self.frames if isinstance(f, WindowUpdateFrame) and f.stream_id == stream_id
        )


def _text(b: bytes | str) -> str:
    return b.decode("latin-1") if isinstance(b, bytes) else b


async def tls_connect(ctx: CaseContext, alpn: Sequence[str]) -> trio.SSLStream:
    """TCP to the target, then TLS 1.3 offering `alpn` (SNI: the target's name)."""
    ep = ctx.endpoint
    sock = trio.socket.from_stdlib_socket(ctx.socket(trio.socket.SOCK_STREAM))
    with trio.fail_after(ctx.wait(5.0)):
        await sock.connect((ep.host, ep.port))
    tls_ctx = client_ssl_context(ep.ca_file, alpn)
    tls = trio.SSLStream(trio.SocketStream(sock), tls_ctx, server_hostname=ep.server_name)
    with trio.fail_after(ctx.wait(5.0)):
        await tls.do_handshake()
    return tls


async def http11_get(ctx: CaseContext, path: str) -> tuple[int | None, list[tuple[str, str]]]:
    """GET over TLS with ALPN http/1.1: (status, headers); (None, []) when the server refuses
    HTTP/1.1 (another ALPN, or no answer)."""
    tls = await tls_connect(ctx, ("http/1.1",))
    try:
        if tls.selected_alpn_protocol() not in (None, "http/1.1"):
            return None, []
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {ctx.endpoint.authority}\r\nConnection: close\r\n\r\n"
        )
        await tls.send_all(request.encode())
        data = b""
        with trio.move_on_after(ctx.wait(5.0)):
            while b"\r\n\r\n" not in data:
                chunk = await tls.receive_some(RECEIVE_BYTES)
                if not chunk:
                    break
                data += chunk
    except (trio.BrokenResourceError, ssl.SSLError, OSError):
        return None, []
    finally:
        await trio.aclose_forcefully(tls)
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    parts = head[0].split(" ")
    if len(parts) < 2 or not parts[1].isdigit():
        return None, []
    fields = [tuple(x.strip() for x in line.split(":", 1)) for line in head[1:] if ":" in line]
    return int(parts[1]), [(k.lower(), v) for k, v in fields]


@contextlib.asynccontextmanager
async def open_h2(
    ctx: CaseContext,
    *,
    preface: bytes | None = PREFACE,
    settings: dict[int, int] | None = None,
    sync: bool = True,
    auto_window: bool = True,
    alpn: Sequence[str] = ("h2",),
) -> AsyncIterator[H2Wire]:
    """Connect (TCP, TLS with `alpn`), send `preface` and a SETTINGS frame of `settings`, and
    with `sync` wait for the server's SETTINGS and its ACK of ours (policy 5). `preface=None`
    sends nothing after TLS. The connection is closed on exit."""
    tls = await tls_connect(ctx, alpn)
    if preface is not None and tls.selected_alpn_protocol() != "h2":
        await trio.aclose_forcefully(tls)
        raise ConnectionError(f"server selected ALPN {tls.selected_alpn_protocol()!r}, not h2")
    wire = H2Wire(tls, auto_window=auto_window)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wire.read_loop)
        try:
            if preface is not None:
                await wire.send(
                    preface + raw_frame(SETTINGS, 0, 0, settings_payload(settings or {}))
                )
                if sync:
                    ok = await wire.wait_for(
                        lambda: wire.server_settings_seen and wire.settings_acks >= 1,
                        ctx.wait(5.0),
                    )
                    if not ok:
                        raise ConnectionError(
                            "no SETTINGS + SETTINGS ACK from the server "
                            f"(connection: {wire.conn_error or 'open'})"
                        )
            yield wire
        finally:
            await trio.aclose_forcefully(tls)  # before the cancel: no await after it, so an
            nursery.cancel_scope.cancel()  # exception of the body is not lost to Cancelled


# --- a bare raw peer for hostile-client tests and benchmarks on loopback ----------------------
class LoopbackServer(Protocol):
    """A lab server on 127.0.0.1: its port and the directory holding its `ca.pem`."""

    @property
    def port(self) -> int: ...

    @property
    def cert_dir(self) -> Path: ...


def parse_frames(data: bytes | bytearray) -> tuple[list[Frame], int]:
    """The whole frames at the start of `data`, and how many bytes they took."""
    frames = []
    pos = 0
    while len(data) - pos >= FRAME_HEADER_BYTES:
        frame, length = Frame.parse_frame_header(memoryview(data[pos : pos + FRAME_HEADER_BYTES]))
        if len(data) - pos < FRAME_HEADER_BYTES + length:
            break
        start = pos + FRAME_HEADER_BYTES
        frame.parse_body(memoryview(data[start : start + length]))
        frames.append(frame)
        pos = start + length
    return frames, pos


class RawH2Peer:
    """TLS + ALPN h2 to a loopback server; sends raw bytes, collects the raw frames it receives
    (no SETTINGS ACK, no window updates: unlike `H2Wire`, it answers nothing)."""

    def __init__(self, tls: trio.SSLStream):
        self.tls = tls
        self.frames: list[Frame] = []
        self._partial = bytearray()
        self.eof = False

    @classmethod
    async def connect(cls, server: LoopbackServer, rcvbuf: int | None = None) -> RawH2Peer:
        """Connect to 127.0.0.1:`server.port`; `rcvbuf` (bytes) sets SO_RCVBUF first."""
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:  # before connect, so the window scale stays small too
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", server.port))
        ctx = client_context(server.cert_dir / "ca.pem")
        tls = trio.SSLStream(trio.SocketStream(sock), ctx, server_hostname="localhost")
        await tls.do_handshake()
        if tls.selected_alpn_protocol() != "h2":
            await trio.aclose_forcefully(tls)
            raise ConnectionError(f"server selected ALPN {tls.selected_alpn_protocol()!r}, not h2")
        return cls(tls)

    async def send(self, data: bytes) -> None:
        """Send `data`; a server that closed the connection meanwhile is not an error here."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.tls.send_all(data)

    async def read_until(self, done: Callable[[list[Frame]], bool], timeout_s: float) -> float:
        """Read until `done(frames)` or EOF or `timeout_s`; returns the seconds it took."""
        t0 = trio.current_time()
        with trio.move_on_after(timeout_s):
            while not done(self.frames):
                try:
                    data = await self.tls.receive_some(4 * RECEIVE_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    data = b""
                if not data:
                    self.eof = True
                    break
                self._partial += data
                frames, used = parse_frames(self._partial)
                self.frames += frames
                del self._partial[:used]
        return trio.current_time() - t0

    def count(self, kind: type[Frame]) -> int:
        """How many frames of `kind` were received."""
        return sum(1 for f in self.frames if isinstance(f, kind))

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.tls)
