"""The types of the lab's HTTP clients: how to connect, what a connection and a response record.

Every step is timestamped with CLOCK_MONOTONIC in nanoseconds (`time.monotonic_ns()`), the same
clock the server stamps watch events with, so latencies across processes on one host compare.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from lab.http.settings import H2Settings, QuicSettings

HttpProtocol = Literal["h2", "h3"]
ConnectMode = Literal["cold", "resumed", "zero_rtt"]
ChunkCallback = Callable[[bytes, int], None]  # (data, receive time in CLOCK_MONOTONIC ns)
# the reference server's response header: "1" when the request arrived as 0-RTT data, else "0"
EARLY_DATA_HEADER = "lab-early-data"


class RequestFailed(ConnectionError):
    """A request or connection failed: reset stream, GOAWAY, lost connection, bad handshake."""


class TicketStore:
    """Session tickets / TLS sessions kept between connections, keyed by (protocol, host, port)."""

    def __init__(self) -> None:
        self._tickets: dict[tuple[str, str, int], object] = {}

    def get(self, protocol: HttpProtocol, host: str, port: int) -> object | None:
        """The newest ticket for that server, or None."""
        return self._tickets.get((protocol, host, port))

    def put(self, protocol: HttpProtocol, host: str, port: int, ticket: object) -> None:
        """Remember a ticket (an aioquic SessionTicket or an ssl.SSLSession)."""
        self._tickets[(protocol, host, port)] = ticket


@dataclass(frozen=True)
class ConnectOptions:
    """How to open one connection."""

    protocol: HttpProtocol
    host: str  # address to connect to
    port: int
    server_name: str = "localhost"  # SNI and :authority
    mode: ConnectMode = "cold"
    tickets: TicketStore | None = None  # needed for resumed / zero_rtt
    ca_file: Path | None = None  # None = do not verify (third-party peers with their own CA)
    h2: H2Settings = field(default_factory=H2Settings)
    quic: QuicSettings = field(default_factory=QuicSettings)
    connect_timeout_s: float = 10.0


@dataclass
class ConnectionTimings:
    """Connection-level timestamps, CLOCK_MONOTONIC ns; None when the step does not apply."""

    connect_start_ns: int  # before the socket connects
    tcp_connected_ns: int | None = None  # h2 only
    handshake_done_ns: int | None = None
    resumed: bool = False  # TLS session / QUIC ticket was accepted
    early_data_sent: bool = False  # the client sent 0-RTT data
    early_data_accepted: bool = False  # the server accepted it (TLS/QUIC state; h2: never)
    goaway_received: bool = False  # the server sent GOAWAY: new requests raise RequestFailed
    note: str = ""  # e.g. why a requested 0-RTT did not happen


@dataclass
class Response:
    """One request/response exchange with its timings (CLOCK_MONOTONIC ns)."""

    stream_id: int
    status: int
    headers: list[tuple[str, str]]
    request_sent_ns: int
    first_byte_ns: int | None  # first byte of the response body
    end_ns: int
    body_bytes: int
    body: bytes | None  # None when keep_body=False
    chunks: list[tuple[int, int]]  # (receive ns, bytes), one per data chunk delivered
    early_data: bool  # the server's `lab-early-data: 1` said the request arrived in 0-RTT


class Connection(Protocol):
    """An open HTTP/2 or HTTP/3 connection."""

    protocol: HttpProtocol
    timings: ConnectionTimings

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
        """Send one request and wait for the whole response; many may run concurrently."""

    async def aclose(self) -> None:
        """Close gracefully (GOAWAY / CONNECTION_CLOSE)."""
