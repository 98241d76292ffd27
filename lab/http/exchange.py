"""What the HTTP/2 and HTTP/3 clients share: a request's header list, the record of its response
as it arrives (`Exchange`), and `request()` itself over three engine hooks (`ClientConnection`).

Timestamps are CLOCK_MONOTONIC ns (`time.monotonic_ns()`). A client passes each body chunk's
receive time (the read or datagram that carried it) to `Exchange.on_data`, and stamps
`request_sent_ns` itself in `_send_request`, once the request's last byte is in the kernel.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterable
from typing import Generic, TypeVar

import trio

from lab.http.types import (
    EARLY_DATA_HEADER,
    ChunkCallback,
    ConnectionTimings,
    HttpProtocol,
    RequestFailed,
    Response,
)

Head = list[tuple[bytes, bytes]]  # (name, value) pairs as h2 and aioquic take and give them


def authority_of(server_name: str, port: int) -> str:
    """The :authority of a server: its name, with the port unless it is 443."""
    return server_name if port == 443 else f"{server_name}:{port}"


def request_head(
    method: str, path: str, authority: str, headers: list[tuple[str, str]] | None, body: bytes
) -> Head:
    """The header list of a request: pseudo-headers, the caller's headers (names lowercased),
    and content-length when there is a body."""
    head = [
        (b":method", method.encode()),
        (b":scheme", b"https"),
        (b":authority", authority.encode()),
        (b":path", path.encode()),
    ]
    head += [(n.lower().encode(), v.encode()) for n, v in headers or []]
    if body:
        head.append((b"content-length", str(len(body)).encode()))
    return head


class Exchange:
    """One request in flight: what of its response arrived, and when (CLOCK_MONOTONIC ns).

    The first of `end` and `fail` decides how the exchange ended; `done` is set then. A response
    to HEAD (`head_request`) has no body whatever its content-length says (RFC 9110 §9.3.2);
    body bytes on one fail the exchange.
    """

    __slots__ = (
        "body_bytes",
        "chunks",
        "done",
        "end_ns",
        "error",
        "first_byte_ns",
        "head_request",
        "headers",
        "keep_body",
        "on_chunk",
        "parts",
        "request_sent_ns",
        "status",
        "stream_id",
    )

    def __init__(self, stream_id: int, keep_body: bool, on_chunk: ChunkCallback | None) -> None:
        self.stream_id = stream_id
        self.keep_body = keep_body
        self.on_chunk = on_chunk
        self.head_request = False  # the request's method was HEAD: no body may follow
        self.status: int | None = None
        self.headers: list[tuple[str, str]] = []  # the response's, without pseudo-headers
        self.parts: list[bytes] = []  # body chunks, kept only with keep_body
        self.body_bytes = 0
        self.chunks: list[tuple[int, int]] = []  # (receive ns, bytes)
        self.request_sent_ns = 0
        self.first_byte_ns: int | None = None
        self.end_ns: int | None = None
        self.error: RequestFailed | None = None
        self.done = trio.Event()

    def on_head(self, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """The response head (names and values latin-1); a later head (trailers) is ignored."""
        if self.status is not None:
            return
        for name, value in headers:
            if name == b":status":
                self.status = int(value)
            elif not name.startswith(b":"):
                self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_data(self, data: bytes, now_ns: int) -> None:
        """A chunk of response body received at `now_ns`; an empty one still counts as a chunk
        but not as the first byte. Body bytes in a response to HEAD fail the exchange."""
        if self.head_request and data:
            self.fail(
                RequestFailed(f"stream {self.stream_id}: {len(data)} body bytes in a HEAD response")
            )
            return
        if self.first_byte_ns is None and data:
            self.first_byte_ns = now_ns
        self.body_bytes += len(data)
        self.chunks.append((now_ns, len(data)))
        if self.keep_body:
            self.parts.append(data)
        if self.on_chunk is not None:
            self.on_chunk(data, now_ns)

    def end(self, now_ns: int) -> None:
        """The response ended at `now_ns` (unless the exchange already ended or failed)."""
        if not self.done.is_set():
            self.end_ns = now_ns
            self.done.set()

    def fail(self, error: RequestFailed) -> None:
        """The exchange failed (unless it already ended or failed); `response()` raises `error`."""
        if not self.done.is_set():
            self.error = error
            self.done.set()

    def response(self) -> Response:
        """The finished exchange as a `Response`; raises its error, or RequestFailed when no
        response head arrived."""
        if self.error is not None:
            raise self.error
        if self.status is None:
            raise RequestFailed(f"stream {self.stream_id} ended without a response")
        return Response(
            stream_id=self.stream_id,
            status=self.status,
            headers=self.headers,
            request_sent_ns=self.request_sent_ns,
            first_byte_ns=self.first_byte_ns,
            end_ns=self.end_ns if self.end_ns is not None else time.monotonic_ns(),
            body_bytes=self.body_bytes,
            body=b"".join(self.parts) if self.keep_body else None,
            chunks=self.chunks,
            early_data=any(n == EARLY_DATA_HEADER and v == "1" for n, v in self.headers),
        )


ExchangeT = TypeVar("ExchangeT", bound=Exchange)


class ClientConnection(abc.ABC, Generic[ExchangeT]):
    """`request()` of the `Connection` protocol, once for both clients; an engine supplies
    the three hooks (open a stream, send the request, forget the stream)."""

    protocol: HttpProtocol
    timings: ConnectionTimings
    authority: str  # :authority of every request (`authority_of`)

    @property
    def goaway_received(self) -> bool:
        """The server sent GOAWAY (`timings.goaway_received`)."""
        return self.timings.goaway_received

    async def request(
        self,
        method: str,
        path: str,
        *,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        keep_body: bool = True,
        on_chunk: ChunkCallback | None = None,
    ) -> Response:
        """Send one request and wait for its whole response; many may run concurrently."""
        exchange = await self._open_exchange(keep_body, on_chunk)
        exchange.head_request = method == "HEAD"  # methods are case-sensitive (RFC 9110 §9.1)
        head = request_head(method, path, self.authority, headers, body)
        try:
            await self._send_request(exchange, head, body)
            await exchange.done.wait()
        finally:
            self._close_exchange(exchange)
        return exchange.response()

    @abc.abstractmethod
    async def _open_exchange(self, keep_body: bool, on_chunk: ChunkCallback | None) -> ExchangeT:
        """Wait until one more stream may open, then register an exchange on the next stream
        id; raise RequestFailed when none will (connection closed, GOAWAY)."""

    @abc.abstractmethod
    async def _send_request(self, exchange: ExchangeT, head: Head, body: bytes) -> None:
        """Send the head and body; stamp `exchange.request_sent_ns` once it is all sent."""

    @abc.abstractmethod
    def _close_exchange(self, exchange: ExchangeT) -> None:
        """The request is over (answered, failed or cancelled): forget its stream."""
