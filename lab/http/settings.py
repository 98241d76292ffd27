"""Stack settings of the reference server and the clients, reported verbatim in run.json.

Defaults follow kube-apiserver where it has one (100 concurrent streams) and are otherwise chosen
so that flow control never caps a stream below 100 Mbit/s at 200 ms RTT (2.5 MB in flight).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

QuicEngine = Literal["aioquic", "qh3"]
CongestionControl = Literal["reno", "cubic"]

BIG_WINDOW_BYTES = 16 * 1024 * 1024  # ≥ 100 Mbit/s × 200 ms = 2.5 MB, with headroom


@dataclass(frozen=True)
class H2Settings:
    """HTTP/2 settings; windows in bytes."""

    max_concurrent_streams: int = 100
    initial_stream_window_bytes: int = BIG_WINDOW_BYTES
    connection_window_bytes: int = BIG_WINDOW_BYTES
    max_frame_size_bytes: int = 16_384
    tcp_congestion: str = "cubic"  # set per socket with TCP_CONGESTION
    # TCP_NOTSENT_LOWAT: bound on unsent bytes in the socket buffer (None = the kernel's default,
    # unbounded, as in Go's net/http2); with a bound the h2 scheduler keeps control of the order
    tcp_notsent_lowat_bytes: int | None = None


@dataclass(frozen=True)
class H2ServerLimits:
    """Resource bounds of the HTTP/2 server (the clients have none); seconds and bytes.

    Each bound answers as RFC 9113 asks when hit (docs/http.md, "Bounds"). The defaults leave the
    lab's own traffic alone: idle time counts only while no stream is open (a watch is never
    idle), a stall only while a stream waits on the peer's flow-control window (16 MiB windows
    never run dry for a reading client, even at 100 Mbit/s × 200 ms).
    """

    idle_timeout_s: float = 90.0  # no open stream this long: GOAWAY(NO_ERROR), close (apiserver's)
    stream_stall_timeout_s: float = 30.0  # send side blocked on the peer's window: RST(CANCEL)
    # request bodies held in memory (received, handler not finished): REFUSED_STREAM above
    max_buffered_request_bytes_per_connection: int = 64 * 1024 * 1024  # apiserver: 256 KiB × 250
    max_buffered_request_bytes_total: int = 256 * 1024 * 1024  # all h2 connections together
    # peer resets of unfinished streams per second, token bucket (bursts of this many): above,
    # GOAWAY(ENHANCE_YOUR_CALM); 2× the default stream limit, so a client may reset all at once
    rapid_reset_limit: int = 200
    # frames h2 queued in reply (PING/SETTINGS ACK, RST_STREAM, ...) the writer has not taken
    # yet: above, GOAWAY(ENHANCE_YOUR_CALM) (Go's net/http2 closes at 10,000 too)
    max_queued_control_frames: int = 10_000


@dataclass(frozen=True)
class QuicSettings:
    """QUIC / HTTP/3 settings; data limits in bytes, timeouts in seconds."""

    engine: QuicEngine = "aioquic"
    congestion_control: CongestionControl = "cubic"
    max_data_bytes: int = BIG_WINDOW_BYTES
    max_stream_data_bytes: int = BIG_WINDOW_BYTES
    idle_timeout_s: float = 30.0
    max_datagram_size_bytes: int = 1200  # aioquic's default
    max_concurrent_streams: int = 100
    qlog_dir: Path | None = None


@dataclass(frozen=True)
class QuicServerLimits:
    """Bounds on the HTTP/3 server's state for connections that have not finished their
    handshake ("half-open"); counts are connections, timeouts seconds. See docs/http3.md.

    Above `max_half_open` new Initials are dropped without an answer, rather than refused with
    CONNECTION_CLOSE(CONNECTION_REFUSED): a real client retransmits its Initial and gets in once
    a slot frees (at the latest `handshake_timeout_s` later), where a refusal would make it give
    up; and an overloaded server spends nothing on encrypting answers to a flood.
    """

    retry_above_half_open: int = 100  # from this many half-open on, token-less Initials get Retry
    max_half_open: int = 256  # hard cap: Initials beyond it are dropped
    handshake_timeout_s: float = 10.0  # a half-open connection is discarded after this


@dataclass(frozen=True)
class ServerConfig:
    """Everything `lab serve` needs; certificate paths from lab.http.tls."""

    host: str = "::"
    port: int = 8443
    cert_file: Path | None = None
    key_file: Path | None = None
    h2: H2Settings = field(default_factory=H2Settings)
    h2_limits: H2ServerLimits = field(default_factory=H2ServerLimits)  # h2 resource bounds
    quic: QuicSettings = field(default_factory=QuicSettings)
    quic_limits: QuicServerLimits = field(default_factory=QuicServerLimits)  # h3 half-open bounds
    pod_size_bytes: int = 2048  # size of one synthetic pod in List responses
    pod_count: int = 500  # pods per namespace
    grace_s: float = 10.0  # graceful shutdown: time given to in-flight requests
    max_request_header_bytes: int = 64 * 1024  # larger header lists get 431 (RFC 7541 sizes)
    max_request_body_bytes: int = 16 * 1024 * 1024  # larger request bodies get 413
    max_bytes_n: int = 10 * 1000**3  # cap of GET /bytes/{n}; larger n gets 400

    def report(self) -> dict:
        """A JSON-ready dict of the settings, for run.json."""
        return asdict(self)
