"""`handshake`: new connections per mode (cold, resumed, zero_rtt), each fetching one small
response; measures TTFB.

TTFB = first byte of the response body − the moment the client started opening the connection
(before the socket connects), in ms and in base-RTT units. Connections run one after another.
Resumed and 0-RTT connections use the newest session ticket / TLS session, taken from the
previous connection (one unmeasured cold connection primes the store when it is empty).

Rows: `ttfb_ms` and `ttfb_rtt` per connection with `mode` = the requested mode and
`early_data` = whether the *server* said the request arrived as early data (`lab-early-data: 1`).
For servers that do not say (Caddy, ngtcp2) the proof comes from the handshake instead: the
server accepted early data in its TLS handshake (`timings.early_data_accepted`) *and* the request
left before the handshake completed — so it travelled in 0-RTT packets. HTTP/2 has no TLS early
data in Python's ssl, so an h2 `zero_rtt` connection runs as resumed and reports early_data false.
"""

from __future__ import annotations

import trio

from lab.http.types import ConnectionTimings, ConnectMode, Response, TicketStore
from lab.scenario.workloads import HandshakeParams
from lab.workloads import metrics
from lab.workloads.base import Row, WorkloadContext, check_response, row

TICKET_WAIT_S = 0.3  # how long to wait for a post-handshake ticket before closing


async def one_connection(
    ctx: WorkloadContext, mode: ConnectMode, tickets: TicketStore, path: str, size: int
) -> tuple[int, int, bool]:
    """Open one connection in `mode`, GET `path`; (connect_start_ns, first_byte_ns,
    early data: confirmed by the server's header, or — when `ctx.early_data_header` is False —
    by the handshake, see the module docstring). Waits briefly for a fresh ticket before closing."""
    before = tickets.get(ctx.protocol, ctx.host, ctx.port)
    async with ctx.connect(mode, tickets) as conn:
        resp = await conn.request("GET", path)
        check_response(resp, size, f"handshake {mode}")
        start = conn.timings.connect_start_ns
        first = resp.first_byte_ns if resp.first_byte_ns is not None else resp.end_ns
        with trio.move_on_after(TICKET_WAIT_S):
            while tickets.get(ctx.protocol, ctx.host, ctx.port) is before:
                await trio.sleep(0.005)
    return start, first, early_data_proven(ctx.early_data_header, conn.timings, resp)


def early_data_proven(server_says: bool, timings: ConnectionTimings, resp: Response) -> bool:
    """True when the request is proven to have arrived as early data: by the server's
    `lab-early-data: 1` when it sends that header, else by the handshake (early data accepted
    and the request sent before the handshake was done)."""
    if server_says:
        return bool(resp.early_data)
    done = timings.handshake_done_ns
    sent_early = done is None or resp.request_sent_ns < done
    return bool(timings.early_data_accepted and timings.early_data_sent and sent_early)


async def run(params: HandshakeParams, ctx: WorkloadContext) -> list[Row]:
    """`params.connections` connections per mode, in the order of `params.modes`."""
    tickets = TicketStore()
    path = f"/bytes/{params.response_bytes}"
    rows: list[Row] = []
    for mode in params.modes:
        if mode != "cold" and tickets.get(ctx.protocol, ctx.host, ctx.port) is None:
            await one_connection(ctx, "cold", tickets, path, params.response_bytes)
        for i in range(params.connections):
            start, first, early = await one_connection(
                ctx, mode, tickets, path, params.response_bytes
            )
            ms, rtt = metrics.ttfb(start, first, ctx.base_rtt_ms)
            rows.append(row("ttfb_ms", ms, "ms", i, mode=mode, early_data=early))
            rows.append(row("ttfb_rtt", rtt, "rtt", i, mode=mode, early_data=early))
    return rows


def estimate_s(params: HandshakeParams, base_rtt_ms: float, rate_mbit: float | None) -> float:
    """Rough duration (s): ~3.5 RTT and some CPU per connection (calibrated on handshake.yaml)."""
    n = len(params.modes) * params.connections + 1
    return n * (3.5 * base_rtt_ms / 1e3 + 0.05)
