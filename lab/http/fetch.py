"""`lab get`: fetch a URL over HTTP/2 or HTTP/3 and report every step's time.

Times are printed in ms relative to the connection's start (before the socket connects). With
zero_rtt, a first connection fetches the URL to obtain a session ticket and a second one runs in
0-RTT mode; the server's `lab-early-data` header says whether the request really was early data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import trio

from lab.http.client import open_connection
from lab.http.settings import QuicEngine, QuicSettings
from lab.http.types import (
    Connection,
    ConnectionTimings,
    ConnectOptions,
    HttpProtocol,
    Response,
    TicketStore,
)


@dataclass(frozen=True)
class ConnectionReport:
    """One connection of a fetch: its timings and responses (CLOCK_MONOTONIC ns)."""

    label: str
    mode: str
    timings: ConnectionTimings
    responses: list[Response]


def parse_url(url: str) -> tuple[str, int, str]:
    """(host, port, path-with-query) of an https URL; the port defaults to 443."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", ""):
        raise ValueError(f"only https URLs are supported: {url!r}")
    if not parts.hostname:
        raise ValueError(f"no host in {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return parts.hostname, parts.port or 443, path


async def fetch(
    url: str,
    *,
    protocol: HttpProtocol = "h2",
    zero_rtt: bool = False,
    count: int = 1,
    ca_file: Path | None = None,
    keep_body: bool = False,
    quic_engine: QuicEngine = "aioquic",
    method: Literal["GET", "HEAD"] = "GET",
) -> list[ConnectionReport]:
    """GET (or HEAD) `url` `count` times concurrently on one connection (twice with zero_rtt:
    cold, 0-RTT).

    `quic_engine` selects the HTTP/3 engine (aioquic or qh3); h2 ignores it."""
    host, port, path = parse_url(url)
    server_name = "localhost" if host in ("127.0.0.1", "::1") else host
    opts = ConnectOptions(
        protocol=protocol,
        host=host,
        port=port,
        server_name=server_name,
        tickets=TicketStore(),
        ca_file=ca_file,
        quic=QuicSettings(engine=quic_engine),
    )
    runs = [("cold", opts)]
    if zero_rtt:
        runs.append(("0-RTT", dataclasses.replace(opts, mode="zero_rtt")))
    reports = []
    for label, o in runs:
        async with open_connection(o) as conn:
            responses: list[Response] = []

            async def one(conn: Connection = conn, responses: list[Response] = responses) -> None:
                responses.append(await conn.request(method, path, keep_body=keep_body))

            async with trio.open_nursery() as nursery:
                for _ in range(count):
                    nursery.start_soon(one)
            if zero_rtt and label == "cold":
                await trio.sleep(0.05)  # let the post-handshake session tickets arrive
        responses.sort(key=lambda r: r.stream_id)
        reports.append(ConnectionReport(label, o.mode, conn.timings, responses))
    return reports


def _ms(t: int | None, t0: int) -> str:
    return "-" if t is None else f"{(t - t0) / 1e6:9.3f}"


def format_reports(
    reports: list[ConnectionReport], protocol: str, quic_engine: str | None = None
) -> str:
    """Human-readable timings, ms relative to each connection's start."""
    lines = []
    engine = f", engine {quic_engine}" if quic_engine and protocol == "h3" else ""
    for rep in reports:
        t = rep.timings
        t0 = t.connect_start_ns
        lines.append(f"{protocol} connection ({rep.label}, mode {rep.mode}{engine})")
        lines.append(f"  connect start      {_ms(t0, t0)} ms")
        if t.tcp_connected_ns is not None:
            lines.append(f"  tcp connected      {_ms(t.tcp_connected_ns, t0)} ms")
        lines.append(f"  handshake done     {_ms(t.handshake_done_ns, t0)} ms")
        lines.append(
            f"  resumed={t.resumed} early_data_sent={t.early_data_sent} "
            f"early_data_accepted={t.early_data_accepted} goaway_received={t.goaway_received}"
        )
        if t.note:
            lines.append(f"  note: {t.note}")
        for r in rep.responses:
            length = next((v for n, v in r.headers if n == "content-length"), None)
            lines.append(
                f"  stream {r.stream_id}: status {r.status}, {r.body_bytes} bytes"
                f"{'' if length is None else f' (content-length {length})'}, "
                f"server says early data: {'yes' if r.early_data else 'no'}"
            )
            lines.append(f"    request sent     {_ms(r.request_sent_ns, t0)} ms")
            lines.append(f"    first body byte  {_ms(r.first_byte_ns, t0)} ms")
            lines.append(f"    end              {_ms(r.end_ns, t0)} ms")
            if r.first_byte_ns is not None and r.end_ns > r.request_sent_ns:
                mbit = r.body_bytes * 8e3 / (r.end_ns - r.request_sent_ns)
                lines.append(f"    goodput          {mbit:9.1f} Mbit/s")
    return "\n".join(lines)
