"""Independent clients against the lab's reference server: ngtcp2's gtlsclient (h3, 0-RTT),
nghttp2's h2load and nghttp (h2), and curl_cffi's libcurl (h2 and h3). Bodies by hash."""

from __future__ import annotations

from pathlib import Path

import pytest
from interop_helpers import (
    RUN_TIMEOUT_S,
    Server,
    expected,
    gtlsclient,
    h2load_ten_thousand,
    nghttp,
    sha256,
)

from lab.peers import nghttp2, ngtcp2

pytestmark = pytest.mark.interop


def test_gtlsclient_h3_get(lab_server: Server, tmp_path: Path) -> None:
    n = 1_000_000
    args = ngtcp2.ClientArgs(
        host=lab_server.host,
        port=lab_server.port,
        urls=(lab_server.url(f"/bytes/{n}"),),
        download_dir=tmp_path,
    )
    log = gtlsclient(args)
    assert log.handshake_completed and log.alpn == "h3"
    stream = log.streams[0]
    assert stream.status == 200
    assert stream.header("lab-early-data") == "0"
    assert stream.header("alt-svc") == f'h3=":{lab_server.port}"; ma=86400'
    assert sha256((tmp_path / str(n)).read_bytes()) == expected(n)


def test_gtlsclient_h3_zero_rtt(lab_server: Server, tmp_path: Path) -> None:
    """First run stores the ticket and transport parameters; the second sends its request in
    0-RTT and the lab server's `lab-early-data: 1` proves it was served from early data."""
    n = 100_000
    logs = []
    for run in ("cold", "early"):
        args = ngtcp2.ClientArgs(
            host=lab_server.host,
            port=lab_server.port,
            urls=(lab_server.url(f"/bytes/{n}"),),
            session_file=tmp_path / "session.pem",
            tp_file=tmp_path / "tp.pem",
            download_dir=tmp_path / run,
        )
        (tmp_path / run).mkdir()
        logs.append(gtlsclient(args))
        assert sha256((tmp_path / run / str(n)).read_bytes()) == expected(n)
    cold, early = logs
    assert not cold.early_data_sent and cold.streams[0].header("lab-early-data") == "0"
    assert early.early_data_sent and not early.early_data_rejected
    assert early.streams[0].status == 200
    assert early.streams[0].header("lab-early-data") == "1"


def test_h2load_ten_thousand_requests(lab_server: Server) -> None:
    n = 100
    result = h2load_ten_thousand(lab_server, n, timeout_s=RUN_TIMEOUT_S * 2)
    assert (result.total, result.succeeded, result.failed, result.errored) == (10_000, 10_000, 0, 0)
    assert result.status_2xx == 10_000
    assert result.data_bytes == 10_000 * n


def test_nghttp_get(lab_server: Server, tmp_path: Path) -> None:
    n = 1_000_000
    har = tmp_path / "get.har"
    done = nghttp(nghttp2.NghttpArgs(urls=(lab_server.url(f"/bytes/{n}"),), har_file=har))
    # nghttp's windows are 64 KiB (-w 16 -W 16): the server must resume on every WINDOW_UPDATE
    assert len(done.stdout) == n, done.stderr[-3000:]
    assert sha256(done.stdout) == expected(n)
    (entry,) = nghttp2.parse_har(har.read_text())
    assert (entry.status, entry.http_version, entry.body_bytes) == (200, "HTTP/2.0", n)
    assert entry.header("lab-early-data") == "0"


@pytest.mark.parametrize("protocol", ["h2", "h3"])
def test_curl_cffi_get(lab_server: Server, protocol: str) -> None:
    from curl_cffi import CurlHttpVersion, requests

    n = 1_000_000
    version = CurlHttpVersion.V2TLS if protocol == "h2" else CurlHttpVersion.V3ONLY
    resp = requests.get(
        lab_server.url(f"/bytes/{n}"),
        http_version=version,
        verify=str(lab_server.ca_file),  # libcurl verifies the lab's CA → leaf chain
        timeout=RUN_TIMEOUT_S,
    )
    assert resp.status_code == 200
    assert resp.http_version == (CurlHttpVersion.V2_0 if protocol == "h2" else CurlHttpVersion.V3)
    assert sha256(resp.content) == expected(n)
    assert resp.headers.get("lab-early-data") == "0"
