"""`multiplex`: N objects of S bytes requested in parallel on one connection.

Rows: one `completion_ms` per object (stream = the object's index 0..N-1), measured from the
common start (just before the first request is issued) to that object's last byte, and one
`goodput_mbit` for the batch (all body bytes × 8 / (last byte of the batch − common start)).
"""

from __future__ import annotations

import time

import trio

from lab.http.types import Response
from lab.scenario.workloads import MultiplexParams
from lab.workloads import metrics
from lab.workloads.base import Row, WorkloadContext, check_response, row


async def run(params: MultiplexParams, ctx: WorkloadContext) -> list[Row]:
    """Request `params.objects` × /bytes/`object_bytes` at once and wait for all of them."""
    responses: dict[int, Response] = {}
    async with ctx.connect() as conn:

        async def one(i: int) -> None:
            responses[i] = await conn.request(
                "GET", f"/bytes/{params.object_bytes}", keep_body=False
            )

        start_ns = time.monotonic_ns()
        async with trio.open_nursery() as nursery:
            for i in range(params.objects):
                nursery.start_soon(one, i)
    rows: list[Row] = []
    for i in range(params.objects):
        resp = responses[i]
        check_response(resp, params.object_bytes, f"multiplex object {i}")
        rows.append(row("completion_ms", metrics.completion_ms(start_ns, resp.end_ns), "ms", i))
    last_ns = max(r.end_ns for r in responses.values())
    total = sum(r.body_bytes for r in responses.values())
    if total > 0 and last_ns > start_ns:
        rows.append(row("goodput_mbit", metrics.goodput_mbit(total, start_ns, last_ns), "Mbit/s"))
    return rows


def estimate_s(params: MultiplexParams, base_rtt_ms: float, rate_mbit: float | None) -> float:
    """Rough duration (s)."""
    rate = rate_mbit or 1000.0
    total = params.objects * params.object_bytes
    return total * 8 / (rate * 1e6) * 1.3 + 12 * base_rtt_ms / 1e3 + 0.01 * params.objects + 0.2
