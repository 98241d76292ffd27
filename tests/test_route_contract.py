"""The route contract of docs/routes.md, checked the same way against the reference server and
the Go server (`server: go`), over real TLS on loopback with the lab's clients, h2 and h3.

The reference server runs in this process (its route functions are wrapped to record which
requests reach them); the Go server runs as a process and records the same in its
`--request-log`. Either way `calls()` says which requests ran a route's own code, which is how
the 0-RTT tests show that a 425 never ran the handler.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio

from lab.http import app, payload, pods, tls
from lab.http.client import open_connection
from lab.http.server import running_server
from lab.http.settings import ServerConfig
from lab.http.tls import CertPaths
from lab.http.types import Connection, ConnectMode, ConnectOptions, RequestFailed, TicketStore
from lab.peers import go, registry
from lab.peers.proc import free_port, running
from lab.workloads.watch import LineSplitter

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"
SERVERS = ("reference", "go")
PROTOCOLS = ("h2", "h3")
NS = "default"
Call = tuple[str, str, str, bool]  # (method, path, protocol, early data) that ran a route


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return tls.ensure_certs(tmp_path_factory.mktemp("contract-tls"))


@dataclass
class GoProcess:
    port: int
    request_log: Path

    def calls(self) -> list[Call]:
        """Every request that reached a route since the process started."""
        lines = self.request_log.read_text().splitlines() if self.request_log.exists() else []
        out = []
        for line in lines:
            c = json.loads(line)
            out.append((c["method"], c["path"], c["protocol"], c["early_data"]))
        return out

    def calls_from_now(self) -> Callable[[], list[Call]]:
        """`calls()` of the requests after this moment (the process serves many tests)."""
        seen = len(self.calls())
        return lambda: self.calls()[seen:]


@pytest.fixture(scope="module")
def go_process(
    go_built: str, certs: CertPaths, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GoProcess]:
    """lab-go-server on loopback, logging every request that reaches a route."""
    workdir = tmp_path_factory.mktemp("go-contract")
    port = free_port(HOST)
    log = workdir / "requests.jsonl"
    argv = go.server_argv(HOST, port, certs.cert, certs.key, request_log=log)
    with running(registry.LaunchSpec(argv), workdir, "lab-go-server") as proc:
        assert registry.GO.ready(_context(port, workdir, certs), 20), proc.output()[-3000:]
        yield GoProcess(port, log)


def _context(port: int, workdir: Path, certs: CertPaths) -> registry.ServerContext:
    return registry.ServerContext(HOST, port, workdir, certs.cert.parent)


@pytest.fixture
def reference_calls(monkeypatch: pytest.MonkeyPatch) -> list[Call]:
    """Record the requests that reach the reference server's route functions."""
    calls: list[Call] = []

    def recorded(fn: Callable) -> Callable:  # type: ignore[type-arg]
        async def route(r: app.Request, w: object, cfg: object, m: object) -> None:
            calls.append((r.method, r.path, r.protocol, r.early_data))
            await fn(r, w, cfg, m)

        return route

    routes = tuple((p, methods, recorded(fn)) for p, methods, fn in app.ROUTES)
    monkeypatch.setattr(app, "ROUTES", routes)
    return calls


@dataclass
class Target:
    """A server under test: where it listens, and which requests ran a route's code."""

    name: str
    port: int
    ca_file: Path
    calls: Callable[[], list[Call]]
    tickets: TicketStore

    def options(self, protocol: str, mode: ConnectMode = "cold") -> ConnectOptions:
        return ConnectOptions(
            protocol=protocol,  # type: ignore[arg-type]
            host=HOST,
            port=self.port,
            mode=mode,
            tickets=self.tickets,
            ca_file=self.ca_file,
            connect_timeout_s=5.0,
        )


@pytest.fixture(params=SERVERS)
def server_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def serve(
    server_name: str,
    certs: CertPaths,
    reference_calls: list[Call],
    request: pytest.FixtureRequest,
) -> Callable[[], contextlib.AbstractAsyncContextManager[Target]]:
    """`async with serve() as target:` — the server of this parametrisation, for one test."""

    @contextlib.asynccontextmanager
    async def reference() -> AsyncIterator[Target]:
        config = ServerConfig(host=HOST, port=0, cert_file=certs.cert, key_file=certs.key)
        async with running_server(config) as info:
            calls = reference_calls.copy
            yield Target("reference", info.config.port, certs.ca_cert, calls, TicketStore())

    @contextlib.asynccontextmanager
    async def go_server() -> AsyncIterator[Target]:
        proc: GoProcess = request.getfixturevalue("go_process")
        yield Target("go", proc.port, certs.ca_cert, proc.calls_from_now(), TicketStore())

    return reference if server_name == "reference" else go_server


def sha256(data: bytes | None) -> str:
    return hashlib.sha256(data or b"").hexdigest()


def header(resp: object, name: str) -> str | None:
    return dict(getattr(resp, "headers")).get(name)  # noqa: B009


# --- /bytes/{n} ----------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bytes_bodies_are_the_reference_bytes(serve, protocol: str) -> None:  # type: ignore[no-untyped-def]
    """Every size (inside the first AES block, across block and chunk edges, beyond the cached
    1 MiB prefix) hashes to payload.expected_sha256; HEAD gives the length without a body."""
    sizes = (0, 1, 15, 17, 1000, 262_145, 1_048_577, 3_000_001)

    async def main() -> None:
        async with serve() as target, open_connection(target.options(protocol)) as conn:
            for n in sizes:
                r = await conn.request("GET", f"/bytes/{n}")
                assert r.status == 200, (n, r.status)
                assert r.body_bytes == n and sha256(r.body) == payload.expected_sha256(n), n
                assert header(r, "content-type") == "application/octet-stream"
                assert header(r, "content-length") == str(n)
            if protocol == "h2":  # the lab's h3 client (aioquic) rejects HEAD's content-length
                head = await conn.request("HEAD", "/bytes/5000")
                assert (head.status, head.body_bytes) == (200, 0)
                assert header(head, "content-length") == "5000"
            for bad in ("abc", "-1", "1" * 20, "12x"):
                r = await conn.request("GET", f"/bytes/{bad}")
                assert r.status == 400 and header(r, "content-type") == "text/plain", bad
            over = await conn.request("GET", f"/bytes/{10 * 1000**3 + 1}")
            assert over.status == 400 and b"cap" in (over.body or b"")

    trio.run(main)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_common_headers_and_plain_routes(serve, protocol: str) -> None:  # type: ignore[no-untyped-def]
    """alt-svc and lab-early-data on every response; healthz, echo, 404, 405, OPTIONS."""

    async def main() -> None:
        async with serve() as target, open_connection(target.options(protocol)) as conn:
            health = await conn.request("GET", "/healthz")
            assert (health.status, health.body) == (200, b"ok")
            assert header(health, "content-type") == "text/plain"
            assert header(health, "alt-svc") == f'h3=":{target.port}"; ma=86400'
            assert header(health, "lab-early-data") == "0" and not health.early_data

            body = bytes(range(256)) * 64
            for method in ("POST", "PUT"):
                ct = [("content-type", "application/x-lab")]
                echo = await conn.request(method, "/echo", headers=ct, body=body)
                assert (echo.status, echo.body) == (200, body)
                assert header(echo, "content-type") == "application/x-lab"
            plain = await conn.request("POST", "/echo", body=b"x")
            assert header(plain, "content-type") == "application/octet-stream"

            missing = await conn.request("GET", "/nope")
            assert (missing.status, missing.body) == (404, b"not found\n")
            assert header(missing, "alt-svc") is not None  # errors carry the common headers too
            wrong = await conn.request("GET", "/echo")
            assert wrong.status == 405 and header(wrong, "allow") == "OPTIONS, POST, PUT"
            options = await conn.request("OPTIONS", "/healthz")
            assert options.status == 204 and header(options, "allow") == "GET, HEAD, OPTIONS"
            big = [(f"x-big-{i}", "a" * 2000) for i in range(40)]  # 81 KB > the 64 KiB cap
            too_big = await conn.request("GET", "/healthz", headers=big)
            assert too_big.status == 431
        assert ("GET", "/healthz", protocol, False) in target.calls()
        assert not any(path == "/nope" for _, path, _, _ in target.calls())

    trio.run(main)


# --- watch ---------------------------------------------------------------------------------
async def _watch(
    conn: Connection, interval_ms: int, count: int, first: trio.Event | None = None
) -> tuple[int, list[tuple[bytes, int]]]:
    """GET a watch; (request start ns, [(line, receive ns)]). `first` is set on the first line."""
    splitter = LineSplitter()
    lines: list[tuple[bytes, int]] = []
    start = time.monotonic_ns()
    path = f"/api/v1/watch/namespaces/{NS}/pods?watch=1&interval_ms={interval_ms}&count={count}"

    def on_chunk(data: bytes, now_ns: int) -> None:
        lines.extend(splitter.feed(data, now_ns))
        if lines and first is not None:
            first.set()

    resp = await conn.request("GET", path, keep_body=False, on_chunk=on_chunk)
    assert resp.status == 200 and header(resp, "content-type") == "application/json"
    return start, lines


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_watch_lines_are_the_reference_events(serve, protocol: str) -> None:  # type: ignore[no-untyped-def]
    """Two watches at once: each line is byte for byte pods.watch_event(ns, seq, stream,
    sent_ns); seq counts from 0; sent_ns is CLOCK_MONOTONIC between the request and the
    line's arrival, on absolute deadlines; the two watches carry distinct protocol stream ids."""
    interval_ms, count = 40, 6

    async def main() -> list[tuple[int, list[tuple[bytes, int]]]]:
        out: list[tuple[int, list[tuple[bytes, int]]]] = []
        async with serve() as target, open_connection(target.options(protocol)) as conn:

            async def one() -> None:
                out.append(await _watch(conn, interval_ms, count))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(one)
                nursery.start_soon(one)
            bad = await conn.request("GET", f"/api/v1/watch/namespaces/{NS}/pods?interval_ms=0")
            assert bad.status == 400
        return out

    streams = set()
    for start, lines in trio.run(main):
        assert len(lines) == count
        events = [json.loads(line) for line, _ in lines]
        stamps = [e["lab"] for e in events]
        assert [s["seq"] for s in stamps] == list(range(count))
        assert [e["type"] for e in events] == ["ADDED"] + ["MODIFIED"] * (count - 1)
        for (line, received), s in zip(lines, stamps, strict=True):
            assert line + b"\n" == pods.watch_event(NS, s["seq"], s["stream"], s["sent_ns"])
            assert start < s["sent_ns"] <= received
        sent = [s["sent_ns"] for s in stamps]
        offsets_ms = [(t - sent[0]) / 1e6 for t in sent]
        # event k is due k × interval after the first: never early, and late by at most what a
        # busy 2-core box delays a timer (no drift accumulates with absolute deadlines)
        assert all(o > k * interval_ms - 5 for k, o in enumerate(offsets_ms)), offsets_ms
        assert offsets_ms[-1] < (count - 1) * interval_ms + 60, offsets_ms
        assert len({s["stream"] for s in stamps}) == 1
        streams.add(stamps[0]["stream"])
    assert len(streams) == 2
    if protocol == "h2":
        assert all(s % 2 == 1 for s in streams)  # client-initiated h2 streams are odd
    else:
        assert all(s % 4 == 0 for s in streams)  # client-initiated bidirectional QUIC streams


# --- List ----------------------------------------------------------------------------------
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_pod_list_pages_and_continue_tokens(serve, protocol: str) -> None:  # type: ignore[no-untyped-def]
    """A paged List is byte for byte pods.pod_list_json; following the continue tokens visits
    every pod once; bad parameters are 400."""

    async def main() -> None:
        async with serve() as target, open_connection(target.options(protocol)) as conn:
            base = f"/api/v1/namespaces/{NS}/pods"
            first = await conn.request("GET", f"{base}?limit=7")
            expected = b"".join(pods.pod_list_json(NS, pods.plan_page(500, 7, ""), 2048))
            assert first.status == 200 and first.body == expected
            assert header(first, "content-type") == "application/json"

            names, token, pages = [], "", 0
            while True:
                query = f"?limit=180&continue={token}" if token else "?limit=180"
                page = await conn.request("GET", base + query)
                assert page.status == 200
                meta = json.loads(page.body or b"")["metadata"]
                names += [i["metadata"]["name"] for i in json.loads(page.body or b"")["items"]]
                pages += 1
                plan = pods.plan_page(500, 180, token)
                assert page.body == b"".join(pods.pod_list_json(NS, plan, 2048))
                token = meta.get("continue", "")
                if not token:
                    assert "remainingItemCount" not in meta
                    break
                assert meta["remainingItemCount"] == 500 - len(names)
            assert pages == 3 and names == [f"pod-{i:05d}" for i in range(500)]

            whole = await conn.request("GET", base)
            assert len(json.loads(whole.body or b"")["items"]) == 500

            for query in (
                "?limit=abc",
                "?limit=-1",
                "?continue=not-a-token",
                f"?continue={pods.encode_continue(501)}",
            ):
                r = await conn.request("GET", base + query)
                assert r.status == 400, query
            bad_ns = await conn.request("GET", "/api/v1/namespaces/Not_A_Label/pods")
            assert bad_ns.status == 400

    trio.run(main)


# --- /counter ------------------------------------------------------------------------------
def counter_value(resp: object) -> int:
    """The integer of a 200 /counter response (its body is the value and a newline)."""
    assert getattr(resp, "status") == 200, getattr(resp, "status")  # noqa: B009
    body = getattr(resp, "body") or b""  # noqa: B009
    assert body.endswith(b"\n") and body[:-1].isdigit(), body
    return int(body)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_counter_post_adds_one_and_get_reads(serve, protocol: str) -> None:  # type: ignore[no-untyped-def]
    """POST /counter adds 1 and answers the new value (its body ignored); GET and HEAD read it
    and change nothing; the value is the process's, seen alike from the other protocol."""
    other = "h3" if protocol == "h2" else "h2"

    async def main() -> None:
        async with serve() as target, open_connection(target.options(protocol)) as conn:
            first = await conn.request("GET", "/counter")
            start = counter_value(first)
            assert header(first, "content-type") == "text/plain"
            assert header(first, "cache-control") == "no-store"
            assert header(first, "content-length") == str(len(first.body or b""))
            assert counter_value(await conn.request("GET", "/counter")) == start
            post = await conn.request("POST", "/counter", body=b"ignored")
            assert counter_value(post) == start + 1
            assert header(post, "cache-control") == "no-store"
            assert counter_value(await conn.request("POST", "/counter")) == start + 2
            if protocol == "h2":  # the lab's h3 client (aioquic) rejects HEAD's content-length
                head = await conn.request("HEAD", "/counter")
                assert (head.status, head.body_bytes) == (200, 0)
            options = await conn.request("OPTIONS", "/counter")
            assert options.status == 204
            assert header(options, "allow") == "GET, HEAD, OPTIONS, POST"
            wrong = await conn.request("PUT", "/counter")
            assert wrong.status == 405 and header(wrong, "allow") == "GET, HEAD, OPTIONS, POST"
            async with open_connection(target.options(other)) as conn2:
                assert counter_value(await conn2.request("GET", "/counter")) == start + 2
            assert counter_value(await conn.request("GET", "/counter")) == start + 2
        posts = [c for c in target.calls() if c[:2] == ("POST", "/counter")]
        assert posts == [("POST", "/counter", protocol, False)] * 2

    trio.run(main)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_early_data_header_makes_unsafe_methods_425(serve, protocol: str) -> None:  # type: ignore[no-untyped-def]
    """`Early-Data: 1` (a previous hop received the request in early data, RFC 8470 §5.1) on
    an unsafe method → 425 and the route never runs, over 1-RTT on either protocol; safe
    methods with it are served; `Early-Data: 0` is no mark."""
    marked = [("early-data", "1")]

    async def main() -> None:
        async with serve() as target, open_connection(target.options(protocol)) as conn:
            calls_before = len(target.calls())
            start = counter_value(await conn.request("GET", "/counter", headers=marked))
            for method, path in (("POST", "/counter"), ("PUT", "/echo"), ("POST", "/nope")):
                refused = await conn.request(method, path, headers=marked, body=b"pay once")
                assert refused.status == 425, (method, path, refused.status)
                assert b"too early" in (refused.body or b"")
                assert header(refused, "content-type") == "text/plain"
                assert header(refused, "lab-early-data") == "0"  # this hop had no early data
            assert counter_value(await conn.request("GET", "/counter")) == start
            health = await conn.request("GET", "/healthz", headers=marked)
            assert (health.status, health.body) == (200, b"ok")
            options = await conn.request("OPTIONS", "/echo", headers=marked)
            assert options.status == 204
            unmarked = await conn.request("POST", "/counter", headers=[("early-data", "0")])
            assert counter_value(unmarked) == start + 1
            ran = target.calls()[calls_before:]
        assert [c for c in ran if c[0] != "GET"] == [("POST", "/counter", protocol, False)]

    trio.run(main)


# --- 0-RTT ---------------------------------------------------------------------------------
async def _prime(target: Target) -> None:
    """A cold h3 connection that leaves a session ticket in target.tickets."""
    before = target.tickets.get("h3", HOST, target.port)
    async with open_connection(target.options("h3")) as conn:
        assert (await conn.request("GET", "/healthz")).status == 200
        with trio.fail_after(3):
            while target.tickets.get("h3", HOST, target.port) is before:
                await trio.sleep(0.01)


def test_zero_rtt_get_is_flagged_as_early_data(serve) -> None:  # type: ignore[no-untyped-def]
    """A GET in 0-RTT is served and says `lab-early-data: 1`; the next one on the same
    connection (after the handshake) says 0."""

    async def main() -> None:
        async with serve() as target:
            await _prime(target)
            async with open_connection(target.options("h3", "zero_rtt")) as conn:
                early = await conn.request("GET", "/bytes/4096")
                assert conn.timings.early_data_sent and conn.timings.early_data_accepted
                assert early.status == 200 and sha256(early.body) == payload.expected_sha256(4096)
                assert header(early, "lab-early-data") == "1" and early.early_data
                later = await conn.request("GET", "/bytes/4096")
                assert header(later, "lab-early-data") == "0"
            calls = [c for c in target.calls() if c[1] == "/bytes/4096"]
            assert calls == [
                ("GET", "/bytes/4096", "h3", True),
                ("GET", "/bytes/4096", "h3", False),
            ]

    trio.run(main)


def test_post_in_zero_rtt_gets_425_and_never_runs_the_handler(serve) -> None:  # type: ignore[no-untyped-def]
    """POST /echo in 0-RTT → 425 Too Early and the echo route never runs; the same POST
    after the handshake → 200."""

    async def main() -> None:
        async with serve() as target:
            await _prime(target)
            async with open_connection(target.options("h3", "zero_rtt")) as conn:
                refused = await conn.request("POST", "/echo", body=b"pay once")
                assert conn.timings.early_data_sent
                handshake_done = conn.timings.handshake_done_ns or 0
                assert refused.request_sent_ns < handshake_done
                assert refused.status == 425 and refused.early_data
                assert b"too early" in (refused.body or b"")
                assert not [c for c in target.calls() if c[1] == "/echo"]
                again = await conn.request("POST", "/echo", body=b"pay once")
                assert (again.status, again.body, again.early_data) == (200, b"pay once", False)
            assert [c for c in target.calls() if c[1] == "/echo"] == [
                ("POST", "/echo", "h3", False)
            ]

    trio.run(main)


def test_post_counter_in_zero_rtt_gets_425_and_does_not_move_it(serve) -> None:  # type: ignore[no-untyped-def]
    """POST /counter in accepted 0-RTT → 425 and the counter stays; the same POST after the
    handshake adds 1 — the side effect Z-02 … Z-04 of `lab conform` watch."""

    async def main() -> None:
        async with serve() as target:
            await _prime(target)
            async with open_connection(target.options("h3")) as conn:
                start = counter_value(await conn.request("GET", "/counter"))
            async with open_connection(target.options("h3", "zero_rtt")) as conn:
                refused = await conn.request("POST", "/counter")
                assert conn.timings.early_data_sent and conn.timings.early_data_accepted
                assert refused.status == 425 and refused.early_data
                assert header(refused, "lab-early-data") == "1"
                assert counter_value(await conn.request("GET", "/counter")) == start
                again = await conn.request("POST", "/counter")
                assert counter_value(again) == start + 1 and not again.early_data
            posts = [c for c in target.calls() if c[:2] == ("POST", "/counter")]
            assert posts == [("POST", "/counter", "h3", False)]

    trio.run(main)


# --- graceful shutdown ---------------------------------------------------------------------
def _spec(name: str, port: int, workdir: Path, certs: CertPaths) -> registry.LaunchSpec:
    impl = registry.get(name)
    return impl.launch(_context(port, workdir, certs))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_sigterm_lets_the_running_watch_finish(
    server_name: str,
    protocol: str,
    certs: CertPaths,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """SIGTERM: an in-flight watch still completes; over h2 the client sees GOAWAY and new
    requests on that connection fail; the process exits 0. (HTTP/3 GOAWAY: the reference sends
    it, quic-go 0.29 has none — docs/routes.md.)"""
    if server_name == "go":
        request.getfixturevalue("go_built")
    port = free_port(HOST)
    impl = registry.get(server_name)
    with running(_spec(server_name, port, tmp_path, certs), tmp_path, server_name) as proc:
        assert impl.ready(_context(port, tmp_path, certs), 30), proc.output()[-3000:]
        target = Target(server_name, port, certs.ca_cert, list, TicketStore())

        async def main() -> None:
            async with open_connection(target.options(protocol)) as conn:
                got: list[tuple[int, list[tuple[bytes, int]]]] = []
                running_watch = trio.Event()

                async def watch() -> None:
                    got.append(await _watch(conn, 100, 6, running_watch))

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(watch)
                    with trio.fail_after(10):
                        await running_watch.wait()  # its response has begun
                    proc.process.send_signal(signal.SIGTERM)
                    if protocol == "h2":
                        with trio.fail_after(3):
                            while not conn.timings.goaway_received:
                                await trio.sleep(0.01)
                        with pytest.raises(RequestFailed):
                            await conn.request("GET", "/healthz")
                assert len(got[0][1]) == 6

        trio.run(main)
        assert proc.process.wait(15) == 0, proc.output()[-3000:]
