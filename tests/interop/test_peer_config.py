"""Pure parts of lab.peers: argv builders, output parsers, the Caddyfile, the QUIC probe packet,
the registry's templates. Fast; no peer process is started here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.http import payload
from lab.peers import caddy, nghttp2, ngtcp2, probe, registry

H2LOAD_OUT = """\
starting benchmark...
Application protocol: h2
finished in 5.43s, 1841.02 req/s, 243.23KB/s
requests: 10000 total, 10000 started, 9998 done, 9990 succeeded, 8 failed, 2 errored, 0 timeout
status codes: 9990 2xx, 0 3xx, 8 4xx, 0 5xx
traffic: 1.26MB (1321240) total, 49.38KB (50570) headers (space savings 95.23%), \
976.56KB (1000000) data
"""

GTLSCLIENT_ERR = """\
http: stream 0x0 submit request headers
I00000000 0xf00c pkt tx pkn=0 dcid=0x4e scid=0xf0 version=0x00000001 type=0RTT len=0
QUIC handshake has completed
Negotiated ALPN is h3
http: stream 0x0 [:status: 200]
http: stream 0x0 [lab-early-data: 1]
http: stream 0x4 [:status: 404]
http: stream 0x0 body 656 bytes
http: stream 0x0 body 344 bytes
"""


def test_parse_h2load_counts_failures() -> None:
    r = nghttp2.parse_h2load(H2LOAD_OUT)
    assert (r.protocol, r.total, r.succeeded, r.failed, r.errored) == ("h2", 10000, 9990, 8, 2)
    assert r.status_4xx == 8 and r.data_bytes == 1_000_000
    assert r.duration_s == pytest.approx(5.43) and r.req_per_s == pytest.approx(1841.02)
    with pytest.raises(ValueError, match="lacks"):
        nghttp2.parse_h2load("starting benchmark...\n")


def test_h2load_argv() -> None:
    argv = nghttp2.h2load_argv(nghttp2.H2loadArgs(urls=("https://127.0.0.1:1/x",), window_bits=20))
    assert argv[0] == "h2load" and argv[-1] == "https://127.0.0.1:1/x"
    assert {"--requests=10000", "--clients=10", "--max-concurrent-streams=10"} <= set(argv)
    assert "--window-bits=20" in argv


def test_parse_har() -> None:
    har = {
        "log": {
            "entries": [
                {
                    "request": {"url": "https://h/bytes/5", "httpVersion": "HTTP/2.0"},
                    "response": {
                        "status": 200,
                        "headers": [
                            {"name": ":status", "value": "200"},
                            {"name": "a", "value": "b"},
                        ],
                        "content": {"size": 5},
                    },
                }
            ]
        }
    }
    (e,) = nghttp2.parse_har(json.dumps(har))
    assert (e.status, e.http_version, e.body_bytes, e.header("a"), e.header("z")) == (
        200,
        "HTTP/2.0",
        5,
        "b",
        None,
    )


def test_parse_gtlsclient_log() -> None:
    log = ngtcp2.parse_client_log(GTLSCLIENT_ERR)
    assert log.handshake_completed and log.alpn == "h3" and log.early_data_sent
    assert not log.early_data_rejected
    assert log.streams[0].status == 200 and log.streams[0].header("lab-early-data") == "1"
    assert log.streams[0].body_bytes == 1000
    assert log.streams[4].status == 404
    rejected = ngtcp2.parse_client_log("Early data was rejected by server\n")
    assert rejected.early_data_rejected and not rejected.streams


def test_gtls_argv() -> None:
    c = ngtcp2.client_argv(
        ngtcp2.ClientArgs(
            host="::1",
            port=4433,
            urls=("https://localhost:4433/a",),
            session_file=Path("/s"),
            tp_file=Path("/t"),
            requests=7,
        )
    )
    assert c[-3:] == ["::1", "4433", "https://localhost:4433/a"]
    assert {"--session-file=/s", "--tp-file=/t", "--nstreams=7"} <= set(c)
    assert "--exit-on-all-streams-close" in c
    s = ngtcp2.server_argv(
        ngtcp2.ServerArgs("127.0.0.1", 4433, Path("/k"), Path("/c"), htdocs=Path("/d"))
    )
    assert s[-4:] == ["127.0.0.1", "4433", "/k", "/c"] and "--htdocs=/d" in s


def test_caddyfile_offline_and_loopback(tmp_path: Path) -> None:
    text = caddy.render_caddyfile(caddy.CaddySite(port=8443, workdir=tmp_path))
    for line in ("admin off", "skip_install_trust", "auto_https disable_redirects", "tls internal"):
        assert line in text
    assert f"storage file_system {tmp_path / 'storage'}" in text
    assert "https://localhost:8443, https://127.0.0.1:8443, https://[::1]:8443 {" in text
    assert "bind 127.0.0.1 ::1" in text and "protocols h1 h2 h3" in text
    own = caddy.CaddySite(port=1, workdir=tmp_path, cert_file=Path("/c"), key_file=Path("/k"))
    assert "tls /c /k" in caddy.render_caddyfile(own)


def test_bytes_files_are_the_reference_body(tmp_path: Path) -> None:
    paths = caddy.write_bytes_files(tmp_path, [70_000, 3, 3])
    assert [p.name for p in paths] == ["3", "70000"]
    assert paths[1].read_bytes() == payload.body_slice(0, 70_000)


def test_vn_probe_packet_and_reply() -> None:
    dcid, scid = b"\x01" * 8, b"\x02" * 8
    pkt = probe.version_negotiation_probe(dcid, scid)
    assert len(pkt) == 1200 and pkt[0] & 0xC0 == 0xC0
    assert pkt[1:5] == probe.FORCE_VN_VERSION.to_bytes(4, "big")
    reply = b"\x80" + b"\0\0\0\0" + b"\x08" + scid + b"\x08" + dcid + b"\0\0\0\x01"
    assert probe.is_version_negotiation(reply, dcid, scid)
    assert not probe.is_version_negotiation(reply, scid, dcid)  # CIDs must be echoed swapped


def test_registry_templates(tmp_path: Path) -> None:
    ctx = registry.ServerContext(
        host="127.0.0.1", port=9443, workdir=tmp_path / "w", cert_dir=tmp_path / "tls"
    )
    ref = registry.get("reference").launch(ctx)
    assert ref.argv[1:] == ["-m", "lab", "serve", "--host", "127.0.0.1", "--port", "9443",
                            "--cert-dir", str(ctx.cert_dir)]  # fmt: skip
    cad = registry.get("caddy")
    spec = cad.launch(ctx)
    assert spec.argv[:2] == ["caddy", "run"] and Path(spec.argv[3]).is_file()
    caddyfile = Path(spec.argv[3]).read_text()
    assert f"tls {ctx.cert_dir / 'cert.pem'} {ctx.cert_dir / 'key.pem'}" in caddyfile
    assert spec.env["XDG_DATA_HOME"].startswith(str(ctx.workdir))
    assert cad.supports("bulk") and not cad.supports("watch")
    assert registry.get("reference").supports("watch")
    with pytest.raises(KeyError, match="known"):
        registry.get("nginx")
