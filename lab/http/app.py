"""The routes of the reference server, shared by the HTTP/2 and HTTP/3 front ends.

A front end turns a complete request head (and, for POST, its body) into a `Request`, and gives
`handle` a `ResponseWriter` that maps onto its protocol engine. Routing, 0-RTT policy (425 for
unsafe methods in early data) and the common response headers live here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from lab.http.settings import ServerConfig

HttpProtocol = Literal["h2", "h3"]


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


class ResponseWriter(Protocol):
    """What a front end offers `handle` to answer one request."""

    async def send_headers(self, status: int, headers: list[tuple[str, str]]) -> None:
        """Send the response head; call once, first."""

    async def send_data(self, data: bytes, end_stream: bool = False) -> None:
        """Send body bytes, honouring flow control; end_stream closes the response."""


async def handle(request: Request, writer: ResponseWriter, config: ServerConfig) -> None:
    """Answer one request on `writer`. Filled in by the reference-server work (issue 3)."""
    raise NotImplementedError
