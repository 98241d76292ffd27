"""`rpc_under_load`: a small GET every `interval_ms` beside a bulk download, one connection.

The bulk download starts first; a small request (`/bytes/rpc_bytes`) is issued every
`interval_ms` (absolute deadlines, not waiting for the previous one) while the bulk download
runs. Rows: one `rpc_latency_ms` per small request (request sent → last byte; stream = its
index) and the bulk download's `goodput_mbit`. The aggregates (rpc_delayed_fraction,
rpc_p95_ms) are computed by `lab.workloads.aggregate`.
"""

from __future__ import annotations

import trio

from lab.http.types import Connection, Response
from lab.scenario.workloads import RpcUnderLoadParams
from lab.workloads import metrics
from lab.workloads.base import Row, WorkloadContext, WorkloadError, check_response, row, sent_ns


async def rpc_loop(
    conn: Connection,
    path: str,
    expected_bytes: int | None,
    interval_ms: float,
    until: trio.Event,
    out: list[Response],
    limiter: trio.Semaphore | None = None,
) -> None:
    """Issue GET `path` every `interval_ms` until `until` is set; responses go to `out`."""

    async def one() -> None:
        if limiter is None:
            resp = await conn.request("GET", path, keep_body=False)
        else:
            async with limiter:
                resp = await conn.request("GET", path, keep_body=False)
        check_response(resp, expected_bytes, f"rpc {path}")
        out.append(resp)

    start = trio.current_time()
    k = 0
    async with trio.open_nursery() as nursery:
        while not until.is_set():
            nursery.start_soon(one)
            k += 1
            with trio.move_on_at(start + k * interval_ms / 1e3):
                await until.wait()


async def run(params: RpcUnderLoadParams, ctx: WorkloadContext) -> list[Row]:
    """Bulk download of `bulk_bytes` with small GETs beside it."""
    rpcs: list[Response] = []
    bulk: list[Response] = []
    done = trio.Event()
    async with ctx.connect() as conn:

        async def download() -> None:
            try:
                bulk.append(
                    await conn.request("GET", f"/bytes/{params.bulk_bytes}", keep_body=False)
                )
            finally:
                done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(download)
            await trio.sleep(0)  # the bulk request goes out first
            nursery.start_soon(
                rpc_loop,
                conn,
                f"/bytes/{params.rpc_bytes}",
                params.rpc_bytes,
                params.interval_ms,
                done,
                rpcs,
            )
    if not bulk:
        raise WorkloadError("rpc_under_load: the bulk download did not complete")
    check_response(bulk[0], params.bulk_bytes, "rpc_under_load bulk")
    if not rpcs:
        raise WorkloadError("rpc_under_load: no small request completed")
    rpcs.sort(key=sent_ns)
    rows = [
        row("rpc_latency_ms", metrics.completion_ms(sent_ns(r), r.end_ns), "ms", i)
        for i, r in enumerate(rpcs)
    ]
    b = bulk[0]
    rows.append(
        row(
            "goodput_mbit",
            metrics.goodput_mbit(b.body_bytes, sent_ns(b), b.end_ns),
            "Mbit/s",
        )
    )
    return rows


def estimate_s(params: RpcUnderLoadParams, base_rtt_ms: float, rate_mbit: float | None) -> float:
    """Rough duration (s)."""
    rate = rate_mbit or 1000.0
    return params.bulk_bytes * 8 / (rate * 1e6) * 1.4 + 12 * base_rtt_ms / 1e3 + 0.3
