"""`k8s_mix`: an apiserver-like mix on one connection for `duration_s`.

- `watches` watch streams, one event each every `watch_interval_ms` (as the `watch` workload);
- `gets` small GETs of `get_bytes` (one object each), spread evenly over the duration;
- `list_pages` paginated LISTs (`?limit=list_limit&continue=…`), spread evenly, each page's
  continue token taken from the previous page (a finished list starts over).

At most `max_concurrent_streams` requests are open at once (the apiserver's default cap is 100);
the client enforces it, watches included. Rows: `event_latency_ms` per watch event (stream =
watch index, with the raw stamps), `rpc_latency_ms` per GET (stream = GET index) and
`completion_ms` per LIST page (stream = page index).
"""

from __future__ import annotations

import json
from urllib.parse import quote

import trio

from lab.http.types import Connection
from lab.scenario.workloads import K8sMixParams
from lab.workloads import metrics
from lab.workloads.base import WATCH_NAMESPACE, Row, WorkloadContext, check_response, row, sent_ns
from lab.workloads.watch import event_count, watch_streams


def list_path(limit: int, token: str, namespace: str = WATCH_NAMESPACE) -> str:
    """One LIST page's URL."""
    path = f"/api/v1/namespaces/{namespace}/pods?limit={limit}"
    return path + (f"&continue={quote(token)}" if token else "")


def continue_token(body: bytes) -> str:
    """The `metadata.continue` token of a LIST page ("" at the end of the list)."""
    return str(json.loads(body).get("metadata", {}).get("continue") or "")


async def run(params: K8sMixParams, ctx: WorkloadContext) -> list[Row]:
    """Run the mix for `params.duration_s`."""
    limiter = trio.Semaphore(params.max_concurrent_streams)
    rows: list[Row] = []
    async with ctx.connect() as conn:

        async def watcher(i: int) -> None:
            count = event_count(params.duration_s, params.watch_interval_ms)
            async with limiter:
                await watch_streams(conn, i, params.watch_interval_ms, count, rows)

        async def get(i: int) -> None:
            async with limiter:
                resp = await conn.request("GET", f"/bytes/{params.get_bytes}", keep_body=False)
            check_response(resp, params.get_bytes, f"k8s_mix GET {i}")
            ms = metrics.completion_ms(sent_ns(resp), resp.end_ns)
            rows.append(row("rpc_latency_ms", ms, "ms", i))

        async def lists(conn: Connection) -> None:
            token = ""
            start = trio.current_time()
            step = params.duration_s / max(1, params.list_pages)
            for i in range(params.list_pages):
                await trio.sleep_until(start + i * step)
                async with limiter:
                    resp = await conn.request("GET", list_path(params.list_limit, token))
                check_response(resp, None, f"k8s_mix LIST page {i}")
                token = continue_token(resp.body or b"{}")
                ms = metrics.completion_ms(sent_ns(resp), resp.end_ns)
                rows.append(row("completion_ms", ms, "ms", i))

        async with trio.open_nursery() as nursery:
            for i in range(params.watches):
                nursery.start_soon(watcher, i)
            nursery.start_soon(lists, conn)
            start = trio.current_time()
            step = params.duration_s / max(1, params.gets)
            for i in range(params.gets):
                await trio.sleep_until(start + i * step)
                nursery.start_soon(get, i)
    rows.sort(key=lambda r: (r["metric"], r["stream"], r.get("seq", 0)))
    return rows


def estimate_s(params: K8sMixParams, base_rtt_ms: float, rate_mbit: float | None) -> float:
    """Rough duration (s)."""
    return params.duration_s + 6 * base_rtt_ms / 1e3 + 0.3
