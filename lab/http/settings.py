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
class ServerConfig:
    """Everything `lab serve` needs; certificate paths from lab.http.tls."""

    host: str = "::"
    port: int = 8443
    cert_file: Path | None = None
    key_file: Path | None = None
    h2: H2Settings = field(default_factory=H2Settings)
    quic: QuicSettings = field(default_factory=QuicSettings)
    pod_size_bytes: int = 2048  # size of one synthetic pod in List responses
    pod_count: int = 500  # pods per namespace
    grace_s: float = 10.0  # graceful shutdown: time given to in-flight requests
    max_request_header_bytes: int = 64 * 1024  # larger header lists get 431 (RFC 7541 sizes)
    max_request_body_bytes: int = 16 * 1024 * 1024  # larger request bodies get 413
    max_bytes_n: int = 10 * 1000**3  # cap of GET /bytes/{n}; larger n gets 400

    def report(self) -> dict:
        """A JSON-ready dict of the settings, for run.json."""
        return asdict(self)
