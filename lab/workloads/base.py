"""What every workload gets (`WorkloadContext`) and the shape of what it returns (sample rows).

A workload is `async def run(params, ctx) -> list[dict]`: it opens connections with
`ctx.connect(...)`, issues requests and returns *sample rows*, dicts with the keys `metric`,
`value`, `unit` and optionally `stream` (int), `mode`, `early_data`. Watch-like workloads add the
raw event stamps `seq`, `sent_ns`, `received_ns` (CLOCK_MONOTONIC ns) to their
`event_latency_ms` rows; `lab.workloads.aggregate` turns those into excess latencies and the
HOL aggregates and strips the raw keys before the rows reach samples.parquet.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import PeerError
from lab.http.client import open_connection
from lab.http.settings import H2Settings, QuicSettings
from lab.http.types import (
    Connection,
    ConnectMode,
    ConnectOptions,
    HttpProtocol,
    Response,
    TicketStore,
)

Row = dict[str, Any]
WATCH_NAMESPACE = "default"


class WorkloadError(PeerError):
    """A workload could not measure what it should (bad status, short body, timeout)."""


@dataclass(frozen=True)
class WorkloadContext:
    """The client side of one cell for one protocol: where the server is and the link's
    nominal figures (base RTT in ms, downlink rate in Mbit/s, None = unlimited)."""

    protocol: HttpProtocol
    host: str
    port: int
    base_rtt_ms: float
    rate_mbit: float | None = None
    server_name: str = "localhost"
    ca_file: Path | None = None
    early_data_header: bool = True  # the server says `lab-early-data: 1|0`
    h2: H2Settings = field(default_factory=H2Settings)
    quic: QuicSettings = field(default_factory=QuicSettings)
    connect_timeout_s: float = 10.0

    def options(
        self, mode: ConnectMode = "cold", tickets: TicketStore | None = None
    ) -> ConnectOptions:
        """ConnectOptions for one new connection of this context."""
        return ConnectOptions(
            protocol=self.protocol,
            host=self.host,
            port=self.port,
            server_name=self.server_name,
            mode=mode,
            tickets=tickets,
            ca_file=self.ca_file,
            h2=self.h2,
            quic=self.quic,
            connect_timeout_s=self.connect_timeout_s,
        )

    @contextlib.asynccontextmanager
    async def connect(
        self, mode: ConnectMode = "cold", tickets: TicketStore | None = None
    ) -> AsyncIterator[Connection]:
        """`async with ctx.connect() as conn:` — one connection, closed on exit."""
        async with open_connection(self.options(mode, tickets)) as conn:
            yield conn


def check_response(resp: Response, expected_bytes: int | None, what: str) -> None:
    """Raise WorkloadError unless the response is a 200 with `expected_bytes` of body."""
    if resp.status != 200:
        raise WorkloadError(f"{what}: status {resp.status}")
    if expected_bytes is not None and resp.body_bytes != expected_bytes:
        raise WorkloadError(f"{what}: {resp.body_bytes} body bytes, expected {expected_bytes}")


def sent_ns(resp: Response) -> int:
    """When the request left (CLOCK_MONOTONIC ns), never after its response arrived.

    Works around the h2 client stamping `request_sent_ns` after its flush returns, by which
    time (on loopback, or after a preemption) the response may already have been read.
    """
    first = resp.first_byte_ns if resp.first_byte_ns is not None else resp.end_ns
    return min(resp.request_sent_ns, first, resp.end_ns)


def row(metric: str, value: float, unit: str, stream: int | None = None, **extra: Any) -> Row:
    """One sample row."""
    out: Row = {"metric": metric, "value": float(value), "unit": unit, "stream": stream}
    out.update(extra)
    return out
