"""The Go stacks (`server: go` = lab-go-server, and lab-go-agent) against everything else:
Go server ⇄ the lab's clients, gtlsclient (ngtcp2) and h2load/nghttp (nghttp2); Go agent ⇄ the
reference server and Caddy. Bodies by hash; 0-RTT proven by the server's `lab-early-data` or,
against Caddy, by the client's TLS state."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from interop_helpers import (
    HOST,
    RUN_TIMEOUT_S,
    SIZES,
    Server,
    expected,
    get,
    get_and_wait_for_ticket,
    gtlsclient,
    h2load_ten_thousand,
    nghttp,
    sha256,
)

from lab.http.client import open_connection
from lab.http.tls import CertPaths
from lab.http.types import ConnectOptions, Response, TicketStore
from lab.peers import go, nghttp2, ngtcp2, registry
from lab.peers.proc import free_port, running
from lab.run.stack import AgentConfig
from lab.workloads.aggregate import aggregate

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def go_server(
    go_built: str, lab_certs: CertPaths, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """lab-go-server through the registry (`server: go`), the lab's certificate."""
    workdir = tmp_path_factory.mktemp("go-server")
    ctx = registry.ServerContext(HOST, free_port(HOST), workdir, lab_certs.cert.parent, SIZES)
    with running(registry.GO.launch(ctx), workdir / "logs", "go") as proc:
        assert registry.GO.ready(ctx, timeout_s=20), proc.output()[-3000:]
        yield Server("go", HOST, ctx.port, lab_certs.ca_cert, proc, workdir)


# --- Go server ⇄ the lab's clients -----------------------------------------------------------
@pytest.mark.parametrize("protocol", ["h2", "h3"])
def test_lab_client_gets_bytes_from_go_server(go_server: Server, protocol: str) -> None:
    n = 1_000_000
    opts = ConnectOptions(
        protocol=protocol, host=go_server.host, port=go_server.port, ca_file=go_server.ca_file
    )
    resp = trio.run(get, opts, f"/bytes/{n}")
    assert resp.status == 200 and resp.body_bytes == n
    assert sha256(resp.body or b"") == expected(n)
    headers = dict(resp.headers)
    assert headers["alt-svc"] == f'h3=":{go_server.port}"; ma=86400'
    assert headers["lab-early-data"] == "0"


def test_lab_client_h3_zero_rtt_proven_by_go_server(go_server: Server) -> None:
    """quic-go accepts the lab client's 0-RTT GET and says so with `lab-early-data: 1`."""
    n = 100_000
    tickets = TicketStore()
    base = dict(host=go_server.host, port=go_server.port, ca_file=go_server.ca_file)

    async def main() -> tuple[Response, Any]:
        await get_and_wait_for_ticket(ConnectOptions("h3", tickets=tickets, **base), "/healthz")
        opts = ConnectOptions(protocol="h3", mode="zero_rtt", tickets=tickets, **base)
        async with open_connection(opts) as conn:
            return await conn.request("GET", f"/bytes/{n}"), conn.timings

    early, timings = trio.run(main)
    assert early.status == 200 and sha256(early.body or b"") == expected(n)
    assert timings.early_data_sent and timings.early_data_accepted
    assert early.early_data  # the Go server's lab-early-data: 1


# --- Go agent ⇄ reference server and Caddy -----------------------------------------------------
def _run_agent(tmp_path: Path, server: Server, protocol: str, **fields: Any) -> dict[str, Any]:
    """Run lab-go-agent with an AgentConfig (written by the Python model, as the runner would)."""
    out = tmp_path / f"agent-{protocol}.json"
    cfg = AgentConfig.model_validate(
        {
            "protocol": protocol,
            "host": server.host,
            "port": server.port,
            "ca_file": str(server.ca_file),
            "base_rtt_ms": 1.0,
            "server_pid": server.proc.process.pid,
            "out": str(out),
            **fields,
        }
    )
    config = tmp_path / f"agent-{protocol}.config.json"
    config.write_text(cfg.model_dump_json())
    done = subprocess.run(
        go.agent_argv(config), capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    result["config"] = cfg
    return result


def _metrics(w: dict[str, Any]) -> Counter[str]:
    return Counter(r["metric"] for r in w["rows"])


def _early_by_mode(w: dict[str, Any]) -> dict[str, set[bool]]:
    out: dict[str, set[bool]] = {}
    for r in w["rows"]:
        out.setdefault(r["mode"], set()).add(r["early_data"])
    return out


def _early_expected(protocol: str) -> dict[str, set[bool]]:
    """`_early_by_mode` of a handshake workload: early data only in h3's 0-RTT mode."""
    return {"cold": {False}, "resumed": {False}, "zero_rtt": {protocol == "h3"}}


@pytest.mark.parametrize("protocol", ["h2", "h3"])
def test_go_agent_against_reference_server(
    lab_server: Server, protocol: str, tmp_path: Path
) -> None:
    """watch + bulk + handshake: the rows the Python workloads write, accepted by the Python
    aggregation; 0-RTT proven by the reference server's header (h3 only: Go's TLS has no early
    data)."""
    workloads = [
        {"kind": "watch", "streams": 4, "interval_ms": 20, "duration_s": 0.4},
        {"kind": "bulk", "bytes": 1_000_000},
        {"kind": "handshake", "connections": 2, "response_bytes": 1000},
    ]
    result = _run_agent(tmp_path, lab_server, protocol, workloads=workloads)
    assert result["protocol"] == protocol
    assert result["started_ns"] < result["ended_ns"]
    watch, bulk, handshake = result["workloads"]
    for w in result["workloads"]:
        assert w["error"] is None, w["error"]
        assert w["wall_s"] > 0 and w["cpu"]["client_s"] is not None
        assert w["cpu"]["server_s"] is not None  # the reference server's /proc/<pid>/stat
    assert _metrics(watch) == {"event_latency_ms": 4 * 20}
    assert sorted({r["stream"] for r in watch["rows"]}) == [0, 1, 2, 3]
    for r in watch["rows"]:
        assert r["sent_ns"] < r["received_ns"]  # one host clock, CLOCK_MONOTONIC
        assert r["value"] == pytest.approx((r["received_ns"] - r["sent_ns"]) / 1e6)
    assert _metrics(bulk) == {"goodput_mbit": 1, "completion_ms": 1}
    assert all(isinstance(r["value"], float) and r["value"] > 0 for r in bulk["rows"])
    assert _metrics(handshake) == {"ttfb_ms": 6, "ttfb_rtt": 6}
    assert _early_by_mode(handshake) == _early_expected(protocol)

    cfg: AgentConfig = result["config"]
    for w in result["workloads"]:  # the Python side takes the rows as they are
        rows = aggregate(
            w["kind"], cfg.workloads[w["index"]], w["rows"], base_rtt_ms=1.0, rate_mbit=None
        )
        metrics = {r["metric"] for r in rows}
        if w["kind"] == "watch":
            assert {"event_excess_ms", "stalled_fraction", "excess_p99_ms"} <= metrics
    impl = result["implementation"]
    assert impl["client"] == "go" and "quic-go" in impl["version"]


@pytest.mark.parametrize("protocol", ["h2", "h3"])
def test_go_agent_against_caddy(caddy_server: Server, protocol: str, tmp_path: Path) -> None:
    """quic-go client ⇄ quic-go server: Caddy sends no lab-early-data, so the agent proves
    0-RTT from its own TLS state (accepted, request sent before the handshake completed)."""
    workloads = [
        {"kind": "bulk", "bytes": 1_000_000},
        {"kind": "handshake", "connections": 2, "response_bytes": 1000},
    ]
    result = _run_agent(
        tmp_path, caddy_server, protocol, workloads=workloads, early_data_header=False
    )
    bulk, handshake = result["workloads"]
    assert bulk["error"] is None and handshake["error"] is None, (bulk["error"], handshake["error"])
    assert _metrics(bulk) == {"goodput_mbit": 1, "completion_ms": 1}
    assert _early_by_mode(handshake) == _early_expected(protocol)


# --- gtlsclient and nghttp2 ⇄ Go server --------------------------------------------------------
def test_gtlsclient_h3_get_and_zero_rtt_from_go_server(go_server: Server, tmp_path: Path) -> None:
    """1 MB by hash over ngtcp2; the second run sends its request in 0-RTT and the Go server
    says it arrived as early data."""
    n = 1_000_000
    logs = []
    for run in ("cold", "early"):
        (tmp_path / run).mkdir()
        args = ngtcp2.ClientArgs(
            host=go_server.host,
            port=go_server.port,
            urls=(go_server.url(f"/bytes/{n}"),),
            session_file=tmp_path / "session.pem",
            tp_file=tmp_path / "tp.pem",
            download_dir=tmp_path / run,
        )
        logs.append(gtlsclient(args))
        assert sha256((tmp_path / run / str(n)).read_bytes()) == expected(n)
    cold, early = logs
    assert cold.handshake_completed and cold.alpn == "h3"
    assert cold.streams[0].status == 200 and cold.streams[0].header("lab-early-data") == "0"
    assert early.early_data_sent and not early.early_data_rejected
    assert early.streams[0].header("lab-early-data") == "1"


def test_h2load_ten_thousand_requests_to_go_server(go_server: Server) -> None:
    n = 100
    result = h2load_ten_thousand(go_server, n, timeout_s=RUN_TIMEOUT_S)
    assert (result.succeeded, result.failed, result.errored) == (10_000, 0, 0)
    assert result.data_bytes == 10_000 * n


def test_nghttp_get_from_go_server(go_server: Server, tmp_path: Path) -> None:
    """nghttp's 64 KiB windows: the Go server keeps sending as WINDOW_UPDATEs arrive."""
    n = 1_000_000
    har = tmp_path / "get.har"
    done = nghttp(nghttp2.NghttpArgs(urls=(go_server.url(f"/bytes/{n}"),), har_file=har))
    assert sha256(done.stdout) == expected(n)
    (entry,) = nghttp2.parse_har(har.read_text())
    assert (entry.status, entry.http_version, entry.body_bytes) == (200, "HTTP/2.0", n)
