"""The routes of the reference server, shared by the HTTP/2 and HTTP/3 front ends.

A front end turns a complete request head (and, for POST, its body) into a `Request`, and gives
`handle` a `ResponseWriter` that maps onto its protocol engine. Routing, 0-RTT policy (425 for
unsafe methods in early data) and the common response headers live here, once.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

import trio

from lab.http import payload, pods
from lab.http.settings import ServerConfig
from lab.http.types import EARLY_DATA_HEADER, HttpProtocol


@dataclass(frozen=True, slots=True)
class Request:
    """A request as the front end received it."""

    method: str
    path: str  # including the query string
    headers: tuple[tuple[str, str], ...]
    body: bytes
    protocol: HttpProtocol
    stream_id: int
    early_data: bool  # True when the request arrived in 0-RTT (TLS/QUIC early data)


class PeerGone(Exception):
    """Raised by a ResponseWriter when the peer reset the stream or the connection is gone."""


class ResponseWriter(Protocol):
    """What a front end offers `handle` to answer one request."""

    async def send_headers(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Send the response head; call once, first."""

    async def send_data(
        self, data: bytes, end_stream: bool = False, *, stamp_ns: int | None = None
    ) -> None:
        """Send body bytes, honouring flow control; end_stream closes the response. `stamp_ns`:
        the watch event's sent_ns (CLOCK_MONOTONIC ns) when `data` is one event; a server that
        can tells when these bytes left in a packet (lab.http.departure_log)."""


SAFE_IN_EARLY_DATA = frozenset({"GET", "HEAD", "OPTIONS"})
# RFC 8470 §5.1: a request an intermediary forwarded from early data carries `Early-Data: 1`
EARLY_DATA_REQUEST_HEADER = "early-data"
_HEADER_OVERHEAD_BYTES = 32  # per entry, as HPACK/QPACK size header lists (RFC 7541 §4.1)
_MAX_WATCH_INTERVAL_MS = 3_600_000

Handler = Callable[[Request, ResponseWriter], Awaitable[None]]


class HttpError(Exception):
    """An error answered with a status code and a short text body."""

    def __init__(self, status: int, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


class _Responder:
    """Wraps the front end's writer: adds the common headers, drops bodies of HEAD responses."""

    __slots__ = ("_common", "_head", "_writer", "ended", "headers_sent")

    def __init__(self, writer: ResponseWriter, common: list[tuple[str, str]], head: bool):
        self._writer = writer
        self._common = common
        self._head = head
        self.headers_sent = False
        self.ended = False

    async def send_headers(self, status: int, headers: list[tuple[str, str]]) -> None:
        self.headers_sent = True
        await self._writer.send_headers(status, headers + self._common)

    async def send_data(
        self, data: bytes, end_stream: bool = False, *, stamp_ns: int | None = None
    ) -> None:
        if self._head:
            data = b""
            if not end_stream:
                return
        if end_stream:
            self.ended = True
        await self._writer.send_data(data, end_stream, stamp_ns=stamp_ns)

    async def respond(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
        """A complete response with a known body."""
        await self.send_headers(status, [*headers, ("content-length", str(len(body)))])
        await self.send_data(body, end_stream=True)


def header_list_size(headers: tuple[tuple[str, str], ...]) -> int:
    """Size of a header list in bytes as HTTP/2 and HTTP/3 count it (name + value + 32 each)."""
    return sum(len(n) + len(v) + _HEADER_OVERHEAD_BYTES for n, v in headers)


def _int_param(query: dict[str, list[str]], name: str, default: int, lo: int, hi: int) -> int:
    values = query.get(name)
    if not values:
        return default
    raw = values[-1]
    if not raw.isdigit() or len(raw) > 19:
        raise HttpError(400, f"{name} must be a non-negative integer")
    value = int(raw)
    if not lo <= value <= hi:
        raise HttpError(400, f"{name} must be in [{lo}, {hi}]")
    return value


async def _bytes(r: Request, w: _Responder, cfg: ServerConfig, m: re.Match[str]) -> None:
    raw = m["n"]
    if not raw.isdigit() or len(raw) > 19:
        raise HttpError(400, "size must be a non-negative integer")
    n = int(raw)
    if n > cfg.max_bytes_n:
        raise HttpError(400, f"size above the cap of {cfg.max_bytes_n} bytes")
    await w.send_headers(
        200, [("content-type", "application/octet-stream"), ("content-length", str(n))]
    )
    if n == 0 or r.method == "HEAD":
        await w.send_data(b"", end_stream=True)
        return
    left = n
    for chunk in payload.iter_body(n):
        left -= len(chunk)
        await w.send_data(chunk, end_stream=left == 0)  # END_STREAM on the last DATA frame


def _namespace(m: re.Match[str]) -> str:
    ns = m["ns"]
    if not pods.valid_namespace(ns):
        raise HttpError(400, "namespace must be a DNS-1123 label")
    return ns


async def _pod_list(r: Request, w: _Responder, cfg: ServerConfig, m: re.Match[str]) -> None:
    ns = _namespace(m)
    query = parse_qs(urlsplit(r.path).query, keep_blank_values=True)
    limit = _int_param(query, "limit", 0, 0, 1 << 31)
    token = (query.get("continue") or [""])[-1]
    try:
        page = pods.plan_page(cfg.pod_count, limit, token)
    except pods.BadListRequest as e:
        raise HttpError(400, str(e)) from None
    pieces = pods.pod_list_json(ns, page, cfg.pod_size_bytes)
    body = b"".join(pieces)
    await w.respond(200, body, [("content-type", "application/json")])


async def _pod_watch(r: Request, w: _Responder, cfg: ServerConfig, m: re.Match[str]) -> None:
    ns = _namespace(m)
    query = parse_qs(urlsplit(r.path).query, keep_blank_values=True)
    interval_ms = _int_param(query, "interval_ms", 1000, 1, _MAX_WATCH_INTERVAL_MS)
    count = _int_param(query, "count", 0, 0, 1 << 40)
    await w.send_headers(200, [("content-type", "application/json")])
    if r.method == "HEAD":
        await w.send_data(b"", end_stream=True)
        return
    start = trio.current_time()
    interval_s = interval_ms / 1000
    seq = 0
    while count == 0 or seq < count:
        await trio.sleep_until(start + seq * interval_s)  # absolute deadlines: no drift
        sent_ns = time.monotonic_ns()
        line = pods.watch_event(ns, seq, r.stream_id, sent_ns)
        seq += 1
        await w.send_data(line, end_stream=seq == count, stamp_ns=sent_ns)


async def _echo(r: Request, w: _Responder, cfg: ServerConfig, m: re.Match[str]) -> None:
    content_type = next((v for n, v in r.headers if n == "content-type"), None)
    headers = [("content-type", content_type or "application/octet-stream")]
    await w.respond(200, r.body, headers)


async def _healthz(r: Request, w: _Responder, cfg: ServerConfig, m: re.Match[str]) -> None:
    await w.respond(200, b"ok", [("content-type", "text/plain")])


class _Counter:
    """The side effect the 0-RTT replay checks watch: one integer per server process."""

    value = 0


async def _counter(r: Request, w: _Responder, cfg: ServerConfig, m: re.Match[str]) -> None:
    """POST increments the counter, GET reads it; the body is the value and a newline."""
    if r.method.upper() == "POST":
        _Counter.value += 1
    body = f"{_Counter.value}\n".encode()
    await w.respond(200, body, [("content-type", "text/plain"), ("cache-control", "no-store")])


_Route = Callable[[Request, _Responder, ServerConfig, re.Match[str]], Awaitable[None]]
_GET = frozenset({"GET", "HEAD"})
ROUTES: tuple[tuple[re.Pattern[str], frozenset[str], _Route], ...] = (
    (re.compile(r"/bytes/(?P<n>[^/]+)"), _GET, _bytes),
    (re.compile(r"/api/v1/namespaces/(?P<ns>[^/]+)/pods"), _GET, _pod_list),
    (re.compile(r"/api/v1/watch/namespaces/(?P<ns>[^/]+)/pods"), _GET, _pod_watch),
    (re.compile(r"/echo"), frozenset({"POST", "PUT"}), _echo),
    (re.compile(r"/healthz"), _GET, _healthz),
    (re.compile(r"/counter"), _GET | {"POST"}, _counter),
)


def _route(path: str) -> tuple[frozenset[str], _Route, re.Match[str]] | None:
    for pattern, methods, fn in ROUTES:
        m = pattern.fullmatch(path)
        if m:
            return methods, fn, m
    return None


def marked_early(request: Request) -> bool:
    """True when the request arrived in 0-RTT here, or says it did on a previous hop."""
    return request.early_data or any(
        n == EARLY_DATA_REQUEST_HEADER and v.strip() == "1" for n, v in request.headers
    )


def common_headers(request: Request, config: ServerConfig) -> list[tuple[str, str]]:
    """Headers every response carries: Alt-Svc for h3 and whether the request was early data."""
    return [
        ("alt-svc", f'h3=":{config.port}"; ma=86400'),
        (EARLY_DATA_HEADER, "1" if request.early_data else "0"),
    ]


async def handle(request: Request, writer: ResponseWriter, config: ServerConfig) -> None:
    """Answer one request on `writer`: 0-RTT policy, limits, routing, common headers.

    Unsafe methods in early data, or marked `Early-Data: 1` by a previous hop, get 425 Too
    Early and never reach a route (RFC 8470 §5.1, §5.2; RFC 9114 §10.9). PeerGone from the
    writer ends the exchange quietly; other errors in a route answer 500 if the head is not out
    yet, else propagate so the front end resets the stream.
    """
    method = request.method.upper()
    w = _Responder(writer, common_headers(request, config), head=method == "HEAD")
    try:
        try:
            if marked_early(request) and method not in SAFE_IN_EARLY_DATA:
                raise HttpError(425, "too early: unsafe method in 0-RTT data")
            if header_list_size(request.headers) > config.max_request_header_bytes:
                raise HttpError(431, "request header fields too large")
            path = urlsplit(request.path).path
            found = _route(path)
            if found is None:
                raise HttpError(404, "not found")
            methods, fn, m = found
            allow = ", ".join(sorted(methods | {"OPTIONS"}))
            if method == "OPTIONS":
                await w.send_headers(204, [("allow", allow)])
                await w.send_data(b"", end_stream=True)
                return
            if method not in methods:
                raise HttpError(405, "method not allowed", [("allow", allow)])
            await fn(request, w, config, m)
        except HttpError as e:
            if w.headers_sent:
                raise
            body = (e.message + "\n").encode()
            await w.respond(e.status, body, [("content-type", "text/plain"), *e.headers])
    except PeerGone:
        return
    except Exception:
        if w.headers_sent:
            raise
        await w.respond(500, b"internal error\n", [("content-type", "text/plain")])


async def respond_error(
    request: Request, writer: ResponseWriter, config: ServerConfig, status: int, message: str
) -> None:
    """A plain-text error response with the common headers, for front ends (e.g. 413)."""
    w = _Responder(writer, common_headers(request, config), head=request.method.upper() == "HEAD")
    body = (message + "\n").encode()
    await w.respond(status, body, [("content-type", "text/plain")])
