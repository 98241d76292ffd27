"""The HTTP/3 request-head check (known answers), the engine hook that hands every request head to
it, and the reference server on each engine answering conformance cases H3-06 and H3-12."""

from __future__ import annotations

import contextlib
import functools
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio

from lab.cli import main
from lab.http import app, tls
from lab.http.app import Request
from lab.http.h3_client import open_h3
from lab.http.h3_request_check import declared_content_length, request_problem
from lab.http.h3_request_hook import _rebound, pass_request_head, server_h3_connection
from lab.http.h3_server import serve_h3
from lab.http.quic_engine import ENGINES, load_engine
from lab.http.settings import QuicSettings, ServerConfig
from lab.http.types import ConnectOptions
from lab.peers import probe
from lab.peers.proc import free_port

REPO = Path(__file__).resolve().parent.parent
M, S, P = (b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/")
A = (b":authority", b"x.test")
HOST = (b"host", b"x.test")

WELL_FORMED = {
    "all four": [M, S, A, P],
    "Host, no :authority": [M, S, P, HOST],
    "Host = :authority": [M, S, A, P, HOST],
    "regular fields, empty value": [M, S, A, P, (b"accept", b"*/*"), (b"x-empty", b"")],
    "te: trailers": [M, S, A, P, (b"te", b"Trailers")],
    "content-length twice, same value": [
        (b":method", b"POST"), S, A, P, (b"content-length", b"5"), (b"content-length", b"05")
    ],
    "CONNECT": [(b":method", b"CONNECT"), A],
    "extended CONNECT": [(b":method", b"CONNECT"), (b":protocol", b"websocket"), S, A, P],
    "scheme without authority": [M, (b":scheme", b"urn"), P],
}  # fmt: skip

MALFORMED = {
    "duplicate :method": ([M, M, S, A, P], "duplicate b':method'"),
    "missing :method": ([S, A, P], "missing :method"),
    "missing :scheme": ([M, A, P], "missing :scheme"),
    "missing :path": ([M, S, A], "missing :path"),
    "empty :path": ([M, S, A, (b":path", b"")], "empty :path"),
    "pseudo after field": ([M, S, A, (b"x-a", b"1"), P], "after a regular field"),
    "unknown pseudo": ([M, S, A, P, (b":status", b"200")], "not a request one"),
    "uppercase name": ([M, S, A, P, (b"X-Upper", b"1")], "uppercase field name"),
    "space in name": ([M, S, A, P, (b"x a", b"1")], "invalid character"),
    "colon in name": ([M, S, A, P, (b"x:a", b"1")], "non-initial colon"),
    "empty name": ([M, S, A, P, (b"", b"1")], "empty field name"),
    "CR in value": ([M, S, A, P, (b"x-a", b"1\r\n")], "NUL, CR or LF"),
    "leading space in value": ([M, S, A, P, (b"x-a", b" 1")], "whitespace around"),
    "connection:": ([M, S, A, P, (b"connection", b"keep-alive")], "connection-specific"),
    "transfer-encoding": ([M, S, A, P, (b"transfer-encoding", b"chunked")], "connection-specific"),
    "te: gzip": ([M, S, A, P, (b"te", b"gzip")], "only 'trailers'"),
    "content-length +5": ([M, S, A, P, (b"content-length", b"+5")], "content-length b'+5'"),
    "content-length 2^62": ([M, S, A, P, (b"content-length", b"%d" % 2**62)], "not an integer"),
    "content-length 5000 digits": ([M, S, A, P, (b"content-length", b"9" * 5000)], "…"),
    "content-lengths disagree": (
        [M, S, A, P, (b"content-length", b"5"), (b"content-length", b"6")], "disagree"
    ),
    "neither :authority nor Host": ([M, S, P], "neither :authority nor Host"),
    "empty :authority": ([M, S, (b":authority", b""), P], "empty :authority or Host"),
    "empty Host": ([M, S, P, (b"host", b"")], "empty :authority or Host"),
    "Host ≠ :authority": ([M, S, A, P, (b"host", b"other.test")], "differs from :authority"),
    "two Host fields": ([M, S, P, HOST, HOST], "2 Host fields"),
    "CONNECT with :path": ([(b":method", b"CONNECT"), A, P], "CONNECT with :scheme or :path"),
    "CONNECT without :authority": ([(b":method", b"CONNECT")], "CONNECT without :authority"),
    ":protocol without CONNECT": ([M, (b":protocol", b"ws"), S, A, P], ":protocol without"),
}  # fmt: skip


@pytest.mark.parametrize("headers", WELL_FORMED.values(), ids=WELL_FORMED)
def test_well_formed_requests_pass(headers: list[tuple[bytes, bytes]]) -> None:
    assert request_problem(headers) is None


@pytest.mark.parametrize(("headers", "reason"), MALFORMED.values(), ids=MALFORMED)
def test_malformed_requests_are_named(headers: list[tuple[bytes, bytes]], reason: str) -> None:
    problem = request_problem(headers)
    assert problem is not None and reason in problem, problem
    assert len(problem) < 160  # a field's bytes are cut in the reason


def test_declared_content_length() -> None:
    length = (b"content-length", b"0042")
    assert declared_content_length([M, S, A, P, length]) == 42
    assert declared_content_length([M, S, A, P, length, (b"content-length", b"42")]) == 42
    assert declared_content_length([M, S, A, P]) is None
    assert declared_content_length([M, S, A, P, length, (b"content-length", b"41")]) is None
    assert declared_content_length([M, S, A, P, (b"content-length", b"4x")]) is None


@pytest.mark.parametrize("engine", ENGINES)
def test_the_hook_rebinds_only_the_server_class(engine: str) -> None:
    module = load_engine(engine).h3  # type: ignore[arg-type]
    original = module.validate_request_headers
    cls = server_h3_connection(module)
    assert cls is server_h3_connection(module) and issubclass(cls, module.H3Connection)
    handler = cls._handle_request_or_push_frame
    assert handler.__globals__["validate_request_headers"] is pass_request_head
    engine_handler = module.H3Connection._handle_request_or_push_frame
    assert module.validate_request_headers is original  # the engine's module is untouched
    assert engine_handler.__globals__["validate_request_headers"] is original
    assert handler.__kwdefaults__ == engine_handler.__kwdefaults__


def test_the_hook_refuses_a_handler_that_no_longer_calls_the_check() -> None:
    with pytest.raises(RuntimeError, match="no longer calls validate_request_headers"):
        _rebound(request_problem, "validate_request_headers", pass_request_head)


def test_the_stand_in_check_records_only_a_well_formed_length() -> None:
    stream = SimpleNamespace(expected_content_length=None)
    pass_request_head([M, S, A, P, (b"content-length", b"10")], stream)
    assert stream.expected_content_length == 10
    stream = SimpleNamespace(expected_content_length=None)
    pass_request_head([M, A, P, (b"content-length", b"10")], stream)  # malformed: no :scheme
    assert stream.expected_content_length is None
    pass_request_head([M, S, A, P])  # qh3 passes no stream


# --- the reference server on each engine ------------------------------------------------
@contextlib.asynccontextmanager
async def _server(certs: tls.CertPaths, engine: str) -> AsyncIterator[tuple[int, list[Request]]]:
    """serve_h3 on loopback with the real routes; yields its port and the requests it handled."""
    config = ServerConfig(
        host="127.0.0.1",
        port=0,
        cert_file=certs.cert,
        key_file=certs.key,
        quic=QuicSettings(engine=engine),  # type: ignore[arg-type]
    )
    handled: list[Request] = []
    shutdown = trio.Event()

    async def handler(request: Request, writer: app.ResponseWriter) -> None:
        handled.append(request)
        await app.handle(request, writer, config)

    async with trio.open_nursery() as nursery:
        _host, port = await nursery.start(
            functools.partial(serve_h3, config, handler, shutdown=shutdown)
        )
        try:
            yield port, handled
        finally:
            shutdown.set()


def _options(port: int, certs: tls.CertPaths, engine: str) -> ConnectOptions:
    """The lab's client on the same engine (an aioquic client and a qh3 server do not meet:
    qh3 fails its handshake with "packet builder capacity exhausted")."""
    quic = QuicSettings(engine=engine)  # type: ignore[arg-type]
    return ConnectOptions("h3", "127.0.0.1", port, ca_file=certs.ca_cert, quic=quic)


async def _settle(conn: Any, done: Callable[[], bool]) -> None:
    with trio.fail_after(5):
        while not done():
            await conn.wait_progress()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("engine", ENGINES)
def test_server_resets_malformed_requests_and_serves_host_only(engine: str, tmp_path: Path) -> None:
    """On both engines: each malformed head is a stream reset H3_MESSAGE_ERROR that never reaches
    the handler, the connection lives on, and a request with Host and no :authority is served."""
    certs = tls.ensure_certs(tmp_path)
    malformed = [h for h, _reason in MALFORMED.values() if b"" not in (n for n, _v in h)]

    async def main() -> None:
        async with _server(certs, engine) as (port, handled):
            opts = _options(port, certs, engine)
            async with open_h3(opts) as conn:
                sids = []
                for headers in malformed:
                    sid = conn.quic.get_next_available_stream_id()
                    conn.h3.send_headers(sid, headers, end_stream=True)
                    sids.append(sid)
                await conn.transmit()
                await _settle(conn, lambda: set(sids) <= conn.reset_streams)
                assert not handled and not conn.terminated
                sid = conn.quic.get_next_available_stream_id()
                host_only = [M, S, (b":path", b"/healthz"), (b"host", b"127.0.0.1")]
                conn.h3.send_headers(sid, host_only, end_stream=True)
                await conn.transmit()
                await _settle(conn, lambda: bool(handled))
                assert handled[0].path == "/healthz"
                assert ("host", "127.0.0.1") in handled[0].headers
                assert sid not in conn.reset_streams
                assert (await conn.request("GET", "/healthz")).status == 200

    trio.run(main)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("ids", "closed"), [((8, 8, 4), False), ((8, 16), True)])
@pytest.mark.parametrize("engine", ENGINES)
def test_a_client_goaway_id_that_increases_is_h3_id_error(
    engine: str, ids: tuple[int, ...], closed: bool, tmp_path: Path
) -> None:
    """GOAWAY ids that stay or go down are accepted; one that goes up closes with H3_ID_ERROR."""
    certs = tls.ensure_certs(tmp_path)

    async def main() -> None:
        async with _server(certs, engine) as (port, _handled):
            opts = _options(port, certs, engine)
            async with open_h3(opts) as conn:
                assert (await conn.request("GET", "/healthz")).status == 200
                control = conn.h3._local_control_stream_id  # engine internal: our control stream
                for push_id in ids:
                    conn.quic.send_stream_data(control, conn.engine.encode_goaway(push_id))
                await conn.transmit()
                if closed:
                    await _settle(conn, lambda: conn.terminated)
                    assert conn.close_reason.error_code == 0x108  # H3_ID_ERROR
                    assert "from 8 to 16" in conn.close_reason.reason_phrase
                else:
                    assert (await conn.request("GET", "/healthz")).status == 200
                    assert not conn.terminated

    trio.run(main)


@pytest.mark.timeout(120)
def test_lab_conform_passes_h3_06_and_h3_12(tmp_path: Path) -> None:
    """`lab conform` against the reference server (aioquic) on loopback: both cases pass, the
    malformed requests as stream errors."""
    certs = tls.ensure_certs(tmp_path / "tls")
    port = free_port()
    argv = [sys.executable, "-m", "lab", "serve", "--host", "127.0.0.1", "--port", str(port)]
    argv += ["--cert-dir", str(tmp_path / "tls")]
    log = tmp_path / "serve.log"
    with log.open("wb") as f:
        server = subprocess.Popen(argv, stdout=f, stderr=f, cwd=REPO)
    try:
        assert probe.wait_ready("127.0.0.1", port, timeout_s=20), log.read_text()
        out = tmp_path / "conformance.json"
        target = f"https://127.0.0.1:{port}"
        ca = str(certs.ca_cert)
        rc = main(["conform", target, "--cases", "H3-06,H3-12", "--ca", ca, "--json", str(out)])
    finally:
        server.terminate()
        server.wait(timeout=20)
    results = {r["id"]: r for r in json.loads(out.read_text())["results"]}
    assert {i: r["status"] for i, r in results.items()} == {"H3-06": "passed", "H3-12": "passed"}
    assert rc == 0
    h3_06 = results["H3-06"]["reason"]
    assert h3_06.count("RESET_STREAM H3_MESSAGE_ERROR") == 7, h3_06  # stream errors, no close
    assert "Host instead of :authority: served" in h3_06
    assert "H3_ID_ERROR" in results["H3-12"]["reason"]
