"""`bulk`: one large download on a fresh connection; goodput and completion time.

Rows: `goodput_mbit` (body bytes × 8 / (last byte − request sent)) and `completion_ms`
(last byte − request sent). The connection's handshake is not part of either.
"""

from __future__ import annotations

from lab.scenario.workloads import BulkParams
from lab.workloads import metrics
from lab.workloads.base import Row, WorkloadContext, check_response, row, sent_ns


async def run(params: BulkParams, ctx: WorkloadContext) -> list[Row]:
    """Download `params.bytes` bytes of /bytes/N once."""
    async with ctx.connect() as conn:
        resp = await conn.request("GET", f"/bytes/{params.bytes}", keep_body=False)
    check_response(resp, params.bytes, "bulk")
    return [
        row(
            "goodput_mbit",
            metrics.goodput_mbit(resp.body_bytes, sent_ns(resp), resp.end_ns),
            "Mbit/s",
        ),
        row("completion_ms", metrics.completion_ms(sent_ns(resp), resp.end_ns), "ms"),
    ]


def estimate_s(params: BulkParams, base_rtt_ms: float, rate_mbit: float | None) -> float:
    """Rough duration (s): transfer at the link rate plus slow start and the handshake."""
    rate = rate_mbit or 1000.0
    return params.bytes * 8 / (rate * 1e6) * 1.3 + 12 * base_rtt_ms / 1e3 + 0.2
