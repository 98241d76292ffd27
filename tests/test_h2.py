"""HTTP/2 over real loopback TLS: the lab's h2 client against the lab's h2 server, and raw peers."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import random
from collections.abc import Awaitable, Callable

import hpack
import pytest
import trio
from h2.errors import ErrorCodes
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from lab.http import app
from lab.http.client import open_connection
from lab.http.h2_client import client_context
from lab.http.h2_frames import GoAwayFilter
from lab.http.payload import expected_sha256
from lab.http.server import ServerInfo, running_server, serve
from lab.http.settings import H2Settings, ServerConfig
from lab.http.tls import client_ssl_context, ensure_certs
from lab.http.types import ConnectOptions, RequestFailed, TicketStore

TIMEOUT_S = 60


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    ensure_certs(d)
    return d


def run_with_server(
    cert_dir,
    body: Callable[[ServerInfo], Awaitable[None]],
    config: ServerConfig | None = None,
) -> None:
    """Start an h2-only server on a free loopback port, run `body`, always stop the server."""
    config = config or ServerConfig(host="127.0.0.1", port=0, grace_s=2)

    async def main() -> None:
        with trio.fail_after(TIMEOUT_S):
            async with running_server(config, cert_dir=cert_dir, h3=False) as info:
                await body(info)

    trio.run(main)


def opts(info: ServerInfo, **kw) -> ConnectOptions:
    return ConnectOptions("h2", "127.0.0.1", info.config.port, ca_file=info.ca_file, **kw)


def test_get_bytes_hash_verified_with_ordered_timings(cert_dir):
    n = 1_000_000

    async def body(info: ServerInfo) -> None:
        chunks: list[tuple[int, int]] = []
        async with open_connection(opts(info)) as conn:
            r = await conn.request(
                "GET", f"/bytes/{n}", on_chunk=lambda d, t: chunks.append((len(d), t))
            )
            t = conn.timings
        assert r.status == 200
        assert hashlib.sha256(r.body).hexdigest() == expected_sha256(n)
        assert r.body_bytes == n == sum(c for c, _ in chunks)
        assert dict(r.headers)["alt-svc"] == f'h3=":{info.config.port}"; ma=86400'
        assert dict(r.headers)["lab-early-data"] == "0" and r.early_data is False
        steps = [t.connect_start_ns, t.tcp_connected_ns, t.handshake_done_ns, r.request_sent_ns]
        steps += [r.first_byte_ns, r.end_ns]
        assert steps == sorted(steps)
        assert [ts for _, ts in chunks] == sorted(ts for _, ts in chunks)
        assert chunks[0][1] == r.first_byte_ns and r.chunks[-1][0] <= r.end_ns

    run_with_server(cert_dir, body)


def test_hundred_concurrent_streams_on_one_connection(cert_dir):
    async def body(info: ServerInfo) -> None:
        results = {}
        async with open_connection(opts(info)) as conn:

            async def one(i: int) -> None:
                results[i] = await conn.request("GET", f"/bytes/{20_000 + i}")

            async with trio.open_nursery() as nursery:
                for i in range(150):  # more than the server's 100: the client must queue
                    nursery.start_soon(one, i)
        assert len(results) == 150
        assert len({r.stream_id for r in results.values()}) == 150
        for i, r in results.items():
            assert r.status == 200
            assert hashlib.sha256(r.body).hexdigest() == expected_sha256(20_000 + i)
        # the exchanges overlapped: some request was sent before another one ended
        spans = sorted((r.request_sent_ns, r.end_ns) for r in results.values())
        in_flight = max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)
        assert in_flight > 1

    run_with_server(cert_dir, body)


def test_goaway_is_visible_and_new_requests_fail_at_once(cert_dir):
    """A graceful server shutdown sends GOAWAY: the client reports it, refuses new requests on
    that connection without sending them, and the running watch still completes."""
    path = "/api/v1/watch/namespaces/default/pods?interval_ms=100&count=6"

    async def main() -> None:
        shutdown = trio.Event()
        config = ServerConfig(host="127.0.0.1", port=0, grace_s=5)
        with trio.fail_after(TIMEOUT_S):
            async with trio.open_nursery() as nursery:
                start = functools.partial(
                    serve, config, shutdown=shutdown, cert_dir=cert_dir, h3=False
                )
                info = await nursery.start(start)
                try:
                    async with open_connection(opts(info)) as conn:
                        got = []

                        async def watch() -> None:
                            got.append(await conn.request("GET", path))

                        async with trio.open_nursery() as inner:
                            inner.start_soon(watch)
                            await trio.sleep(0.15)  # the watch is running
                            assert not conn.timings.goaway_received
                            shutdown.set()
                            with trio.fail_after(2):
                                while not conn.timings.goaway_received:
                                    await trio.sleep(0.01)
                            assert conn.goaway_received
                            next_id = conn.conn.get_next_available_stream_id()
                            with pytest.raises(RequestFailed, match="GOAWAY"):
                                await conn.request("GET", "/healthz")
                            assert conn.conn.get_next_available_stream_id() == next_id
                        assert not conn.timings.early_data_accepted  # h2: never
                    assert got[0].status == 200 and len(got[0].body.splitlines()) == 6
                finally:
                    shutdown.set()

    trio.run(main)


def test_post_echo_and_errors(cert_dir):
    async def body(info: ServerInfo) -> None:
        async with open_connection(opts(info)) as conn:
            payload = bytes(range(256)) * 4000  # 1 MB, above the default 64 KiB windows
            r = await conn.request("POST", "/echo", body=payload)
            assert (r.status, r.body) == (200, payload)
            assert (await conn.request("GET", "/nope")).status == 404
            assert (await conn.request("GET", "/bytes/abc")).status == 400
            big = [("x-big", "a" * 70_000)]
            r = await conn.request("GET", "/healthz", headers=big)
            assert r.status == 431
            assert (await conn.request("GET", "/healthz")).body == b"ok"  # connection still fine

    run_with_server(cert_dir, body)


def test_header_block_beyond_the_hpack_limit_closes_with_enhance_your_calm(cert_dir):
    async def body(info: ServerInfo) -> None:
        async with open_connection(opts(info)) as conn:
            with pytest.raises(RequestFailed, match="ENHANCE_YOUR_CALM"):
                await conn.request("GET", "/healthz", headers=[("x-huge", "a" * 300_000)])
        async with open_connection(opts(info)) as conn:
            assert (await conn.request("GET", "/healthz")).status == 200

    run_with_server(cert_dir, body)


def test_dual_stack_listener_and_congestion_control(cert_dir):
    cfg = ServerConfig(host="::", port=0, grace_s=2, h2=H2Settings(tcp_congestion="reno"))

    async def body(info: ServerInfo) -> None:
        assert info.tcp_addresses == [f"[::]:{info.config.port}"]
        for host in ("127.0.0.1", "::1"):
            o = ConnectOptions("h2", host, info.config.port, ca_file=info.ca_file)
            o = dataclasses.replace(o, h2=H2Settings(tcp_congestion="reno"))
            async with open_connection(o) as conn:
                assert (await conn.request("GET", "/healthz")).status == 200
                assert conn.congestion == "reno"

    run_with_server(cert_dir, body, cfg)


def test_request_body_above_the_limit_gets_413(cert_dir):
    cfg = ServerConfig(host="127.0.0.1", port=0, grace_s=2, max_request_body_bytes=100_000)

    async def body(info: ServerInfo) -> None:
        async with open_connection(opts(info)) as conn:
            r = await conn.request("POST", "/echo", body=b"b" * 300_000)
            assert r.status == 413
            assert (await conn.request("POST", "/echo", body=b"small")).body == b"small"

    run_with_server(cert_dir, body, cfg)


def test_a_route_failing_mid_response_resets_only_its_stream(cert_dir, monkeypatch):
    async def broken(r, w, cfg, m) -> None:
        await w.send_headers(200, [])
        await w.send_data(b"partial")
        raise RuntimeError("route bug after the head")

    routes = tuple((p, m, broken if fn is app._healthz else fn) for p, m, fn in app.ROUTES)
    monkeypatch.setattr(app, "ROUTES", routes)

    async def body(info: ServerInfo) -> None:
        async with open_connection(opts(info)) as conn:
            with pytest.raises(RequestFailed, match="INTERNAL_ERROR"):
                await conn.request("GET", "/healthz")
            assert (await conn.request("GET", "/bytes/10")).body_bytes == 10

    run_with_server(cert_dir, body)


def test_watch_events_arrive_about_one_interval_apart(cert_dir):
    interval_ms, count = 50, 12

    async def body(info: ServerInfo) -> None:
        arrivals: list[int] = []
        async with open_connection(opts(info)) as conn:
            r = await conn.request(
                "GET",
                f"/api/v1/watch/namespaces/default/pods?interval_ms={interval_ms}&count={count}",
                on_chunk=lambda d, t: arrivals.append(t),
            )
        assert r.status == 200
        events = [json.loads(x) for x in r.body.decode().splitlines()]
        assert [e["lab"]["seq"] for e in events] == list(range(count))
        assert {e["lab"]["stream"] for e in events} == {r.stream_id}
        sent = [e["lab"]["sent_ns"] for e in events]
        # deadlines are absolute: event k leaves at start + k × interval (generous jitter bound)
        for k, s in enumerate(sent):
            assert abs((s - sent[0]) / 1e6 - k * interval_ms) < 25
        # same clock on both sides: every event arrives after it was sent
        assert len(arrivals) >= 1 and r.first_byte_ns is not None
        assert r.first_byte_ns >= sent[0]
        assert r.end_ns >= sent[-1]

    run_with_server(cert_dir, body)


def test_session_resumption_and_zero_rtt_reported_as_resumed(cert_dir):
    async def body(info: ServerInfo) -> None:
        tickets = TicketStore()
        async with open_connection(opts(info, tickets=tickets)) as conn:
            await conn.request("GET", "/healthz")
            assert conn.timings.resumed is False
        assert tickets.get("h2", "127.0.0.1", info.config.port) is not None
        for mode in ("resumed", "zero_rtt"):
            async with open_connection(opts(info, tickets=tickets, mode=mode)) as conn:
                r = await conn.request("GET", "/healthz")
                assert conn.timings.resumed is True
                assert conn.timings.early_data_sent is False
                assert r.early_data is False
                assert ("early data" in conn.timings.note) == (mode == "zero_rtt")

    run_with_server(cert_dir, body)


def test_small_windows_are_honoured_both_ways(cert_dir):
    small = H2Settings(initial_stream_window_bytes=65_535, connection_window_bytes=65_535)
    cfg = ServerConfig(host="127.0.0.1", port=0, grace_s=2, h2=small)

    async def body(info: ServerInfo) -> None:
        async with open_connection(opts(info, h2=small)) as conn:
            r = await conn.request("GET", "/bytes/3000000")
            assert hashlib.sha256(r.body).hexdigest() == expected_sha256(3_000_000)
            data = b"z" * 500_000
            assert (await conn.request("POST", "/echo", body=data)).body == data

    run_with_server(cert_dir, body, cfg)


def test_peer_reset_stops_the_stream_and_the_connection_lives_on(cert_dir):
    async def body(info: ServerInfo) -> None:
        async with open_connection(opts(info)) as conn:
            with trio.move_on_after(0.3):  # cancel mid-body: the client abandons the stream
                await conn.request("GET", "/api/v1/watch/namespaces/d/pods?interval_ms=10")
            assert (await conn.request("GET", "/healthz")).status == 200

    run_with_server(cert_dir, body)


# --- raw peers --------------------------------------------------------------------------------
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _headers_block(path: str = "/healthz", extra: list[tuple[str, str]] | None = None) -> bytes:
    head = [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"), (":path", path)]
    return hpack.Encoder().encode(head + (extra or []))


def _headers(stream_id: int, block: bytes, end_stream: bool = True) -> bytes:
    f = HeadersFrame(stream_id)
    f.data = block
    f.flags.add("END_HEADERS")
    if end_stream:
        f.flags.add("END_STREAM")
    return f.serialize()


def _parse_frames(data: bytes) -> list[Frame]:
    frames = []
    while len(data) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        if len(data) < 9 + length:
            break
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames


async def _raw_exchange(info: ServerInfo, payload: bytes) -> list[Frame]:
    """TLS+ALPN h2, send preface + SETTINGS + `payload`, read frames until GOAWAY or EOF."""
    stream = await trio.open_tcp_stream("127.0.0.1", info.config.port)
    tls = trio.SSLStream(stream, client_context(info.ca_file), server_hostname="localhost")
    buf = b""
    try:
        await tls.do_handshake()
        assert tls.selected_alpn_protocol() == "h2"
        await tls.send_all(PREFACE + SettingsFrame(0).serialize() + payload)
        with trio.move_on_after(5):
            while True:
                try:
                    data = await tls.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not data:
                    break
                buf += data
                if any(isinstance(f, GoAwayFrame) for f in _parse_frames(buf)):
                    break
    finally:
        await trio.aclose_forcefully(tls)
    return _parse_frames(buf)


def _goaway(frames: list[Frame]) -> GoAwayFrame:
    goaways = [f for f in frames if isinstance(f, GoAwayFrame)]
    assert goaways, f"no GOAWAY in {[type(f).__name__ for f in frames]}"
    return goaways[-1]


def _window_update(stream_id: int, increment: int) -> bytes:
    f = WindowUpdateFrame(stream_id)
    f.window_increment = increment
    return f.serialize()


def _data(stream_id: int, size: int, end_stream: bool = False) -> bytes:
    f = DataFrame(stream_id)
    f.data = b"d" * size
    if end_stream:
        f.flags.add("END_STREAM")
    return f.serialize()


MALFORMED = {
    # HEADERS on an even (server-initiated) stream id
    "even_stream_id": (_headers(2, _headers_block()), ErrorCodes.PROTOCOL_ERROR),
    # uppercase header name: malformed request (RFC 9113 §8.2.1)
    "uppercase_header": (
        _headers(1, _headers_block(extra=[("X-Upper", "1")])),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    # HEADERS missing :path
    "missing_path": (
        _headers(1, hpack.Encoder().encode([(":method", "GET"), (":scheme", "https")])),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    # garbage HPACK block
    "bad_hpack": (_headers(1, b"\xff\xff\xff\xff\xff\xff"), ErrorCodes.COMPRESSION_ERROR),
    # DATA on a stream that was never opened
    "data_on_idle_stream": (_data(5, 10), ErrorCodes.PROTOCOL_ERROR),
    # stream ids must increase
    "decreasing_stream_id": (
        _headers(5, _headers_block()) + _headers(3, _headers_block()),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    # WINDOW_UPDATE pushing the connection window past 2^31-1
    "window_overflow": (_window_update(0, 2**31 - 1), ErrorCodes.FLOW_CONTROL_ERROR),
    # more DATA than the stream window (the server's is 10,000 bytes below)
    "data_beyond_window": (
        _headers(1, _headers_block("/echo"), end_stream=False) + _data(1, 16_000),
        ErrorCodes.FLOW_CONTROL_ERROR,
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_peer_gets_the_right_error_and_server_keeps_serving(cert_dir, case):
    payload, code = MALFORMED[case]
    small = H2Settings(initial_stream_window_bytes=10_000)
    cfg = ServerConfig(host="127.0.0.1", port=0, grace_s=2, h2=small)

    async def body(info: ServerInfo) -> None:
        frames = await _raw_exchange(info, payload)
        resets = [f for f in frames if isinstance(f, RstStreamFrame)]
        if resets:  # a stream error is also a correct answer to some violations
            assert resets[0].error_code == code
        else:
            assert _goaway(frames).error_code == code
        async with open_connection(opts(info)) as conn:  # a fresh connection is served
            assert (await conn.request("GET", "/healthz")).status == 200

    run_with_server(cert_dir, body, cfg)


def test_raw_valid_request_gets_an_answer(cert_dir):
    """Control for the raw harness: a well-formed request gets HEADERS + DATA, no GOAWAY."""

    async def body(info: ServerInfo) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", info.config.port)
        tls = trio.SSLStream(stream, client_context(info.ca_file), server_hostname="localhost")
        await tls.do_handshake()
        await tls.send_all(PREFACE + SettingsFrame(0).serialize() + _headers(1, _headers_block()))
        buf = b""
        with trio.move_on_after(5):
            while not any(
                isinstance(f, DataFrame) and "END_STREAM" in f.flags for f in _parse_frames(buf)
            ):
                buf += await tls.receive_some(65536)
        await trio.aclose_forcefully(tls)
        frames = _parse_frames(buf)
        assert any(isinstance(f, HeadersFrame) and f.stream_id == 1 for f in frames)
        assert b"".join(f.data for f in frames if isinstance(f, DataFrame)) == b"ok"
        assert not any(isinstance(f, GoAwayFrame) for f in frames)

    run_with_server(cert_dir, body)


def test_http11_alpn_gets_a_small_answer(cert_dir):
    async def body(info: ServerInfo) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", info.config.port)
        tls = trio.SSLStream(
            stream, client_ssl_context(info.ca_file, ("http/1.1",)), server_hostname="localhost"
        )
        await tls.send_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        buf = b""
        with trio.move_on_after(5):
            while data := await tls.receive_some(65536):  # ends with close_notify + EOF
                buf += data
        await trio.aclose_forcefully(tls)
        assert buf.startswith(b"HTTP/1.1 505 ")
        assert f'alt-svc: h3=":{info.config.port}"'.encode() in buf

    run_with_server(cert_dir, body)


def test_connection_to_a_closed_server_fails_cleanly(cert_dir):
    async def main() -> None:
        cfg = ServerConfig(host="127.0.0.1", port=0, grace_s=1)
        async with running_server(cfg, cert_dir=cert_dir, h3=False) as info:
            port = info.config.port
        o = ConnectOptions("h2", "127.0.0.1", port, ca_file=info.ca_file, connect_timeout_s=5)
        with pytest.raises((OSError, RequestFailed)):
            async with open_connection(o):
                pass

    trio.run(main)


def test_goaway_filter_removes_goaway_at_any_split():
    data = DataFrame(1)
    data.data = b"x" * 1000
    goaway = GoAwayFrame(0)
    goaway.last_stream_id = 7
    goaway.error_code = 0
    goaway.additional_data = b"bye"
    wire = SettingsFrame(0).serialize() + data.serialize() + goaway.serialize() + data.serialize()
    expected = SettingsFrame(0).serialize() + data.serialize() * 2
    rng = random.Random(1)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(wire)), rng.randint(0, 12)))
        f, out, found, prev = GoAwayFilter(), b"", [], 0
        for cut in [*cuts, len(wire)]:
            passed, g = f.feed(wire[prev:cut])
            out, found, prev = out + passed, found + g, cut
        assert out == expected
        assert [(g.last_stream_id, g.error_code, g.debug_data) for g in found] == [(7, 0, b"bye")]
