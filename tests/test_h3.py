"""HTTP/3 front end and client over real UDP on loopback with real TLS (aioquic and qh3)."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from lab.http import app, payload
from lab.http.h3_client import H3RequestError, open_h3
from lab.http.h3_control import GoawayWatcher
from lab.http.h3_server import serve_h3
from lab.http.quic_engine import ENGINES, load_engine, peer_stream_credit
from lab.http.settings import QuicSettings, ServerConfig
from lab.http.tls import CertPaths, ensure_certs
from lab.http.types import ConnectOptions, RequestFailed, Response, TicketStore

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    """The lab's CA + leaf, issued into a temporary directory."""
    return ensure_certs(tmp_path_factory.mktemp("tls"))


@dataclass
class LabH3:
    """A running `serve_h3` with the real routes; records what reached the front end."""

    port: int
    config: ServerConfig
    certs: CertPaths
    shutdown: trio.Event
    stopped: trio.Event
    requests: list[app.Request] = field(default_factory=list)
    tickets: TicketStore = field(default_factory=TicketStore)

    def options(self, mode: str = "cold", **kw: object) -> ConnectOptions:
        """Client options for this server (verifying its certificate with the lab CA)."""
        return ConnectOptions(
            protocol="h3",
            host="127.0.0.1",
            port=self.port,
            mode=mode,  # type: ignore[arg-type]
            tickets=self.tickets,
            ca_file=self.certs.ca_cert,
            quic=self.config.quic,
            connect_timeout_s=5.0,
            **kw,  # type: ignore[arg-type]
        )


@contextlib.asynccontextmanager
async def lab_h3(
    certs: CertPaths, engine: str = "aioquic", grace_s: float = 5.0
) -> AsyncIterator[LabH3]:
    """Run serve_h3 (dual-stack, ephemeral port) with `app.handle` until the block exits."""
    config = ServerConfig(
        host="::",
        port=0,
        cert_file=certs.cert,
        key_file=certs.key,
        quic=QuicSettings(engine=engine),  # type: ignore[arg-type]
        grace_s=grace_s,
    )
    shutdown, stopped = trio.Event(), trio.Event()
    lab: LabH3 | None = None

    async def handler(request: app.Request, writer: app.ResponseWriter) -> None:
        assert lab is not None
        lab.requests.append(request)
        await app.handle(request, writer, lab.config)

    async def run(task_status: trio.TaskStatus[tuple[str, int]]) -> None:
        try:
            await serve_h3(config, handler, shutdown=shutdown, task_status=task_status)
        finally:
            stopped.set()

    async with trio.open_nursery() as nursery:
        _host, port = await nursery.start(run)
        lab = LabH3(port, dataclasses.replace(config, port=port), certs, shutdown, stopped)
        try:
            yield lab
        finally:
            shutdown.set()
            with trio.move_on_after(grace_s + 5):
                await stopped.wait()
            nursery.cancel_scope.cancel()


def verify_bytes(response: Response, n: int) -> None:
    """The body of GET /bytes/n is exactly the deterministic payload (by SHA-256)."""
    assert response.status == 200
    assert response.body is not None
    assert len(response.body) == n
    assert hashlib.sha256(response.body).hexdigest() == payload.expected_sha256(n)


@pytest.mark.parametrize("engine", ENGINES)
def test_get_large_body_hash_verified(certs: CertPaths, engine: str) -> None:
    """A 3 MB body arrives intact, with ordered timestamps, over each engine."""
    n = 3_000_000

    async def main() -> None:
        async with lab_h3(certs, engine) as lab, open_h3(lab.options()) as conn:
            chunks: list[tuple[int, int]] = []
            r = await conn.request(
                "GET", f"/bytes/{n}", on_chunk=lambda d, t: chunks.append((t, len(d)))
            )
            verify_bytes(r, n)
            t = conn.timings
            assert t.handshake_done_ns is not None
            assert t.connect_start_ns < t.handshake_done_ns <= r.request_sent_ns
            assert r.first_byte_ns is not None
            assert r.request_sent_ns < r.first_byte_ns <= r.end_ns
            assert chunks == r.chunks and sum(b for _, b in chunks) == n
            assert [ts for ts, _ in chunks] == sorted(ts for ts, _ in chunks)
            assert not t.resumed and not t.early_data_sent and not r.early_data
            assert ("alt-svc", f'h3=":{lab.port}"; ma=86400') in r.headers
            assert lab.requests[0].protocol == "h3" and not lab.requests[0].early_data
            assert load_engine(engine).name == engine

    trio.run(main)


def test_fifty_concurrent_requests_on_one_connection(certs: CertPaths) -> None:
    """50 requests run at once on one connection, each on its own stream, bodies intact."""
    sizes = [1000 + 997 * i for i in range(50)]

    async def main() -> None:
        async with lab_h3(certs) as lab, open_h3(lab.options()) as conn:
            results: dict[int, Response] = {}

            async def one(n: int) -> None:
                results[n] = await conn.request("GET", f"/bytes/{n}")

            async with trio.open_nursery() as nursery:
                for n in sizes:
                    nursery.start_soon(one, n)
            for n in sizes:
                verify_bytes(results[n], n)
            assert len({r.stream_id for r in results.values()}) == 50
            assert len(lab.requests) == 50
            # they overlapped: some request was sent before another one's response ended
            first_end = min(r.end_ns for r in results.values())
            assert sum(r.request_sent_ns < first_end for r in results.values()) > 1

    trio.run(main)


@pytest.mark.parametrize("engine", ENGINES)
def test_requests_beyond_the_stream_limit_wait_for_credit(certs: CertPaths, engine: str) -> None:
    """150 concurrent requests on one connection to a server allowing 100 streams: the client
    waits for MAX_STREAMS credit instead of failing; every body arrives intact."""
    count, n = 150, 1000

    async def main() -> None:
        async with lab_h3(certs, engine) as lab, open_h3(lab.options()) as conn:
            assert lab.config.quic.max_concurrent_streams == 100
            assert peer_stream_credit(conn.quic) == 100  # the server's initial_max_streams_bidi
            results: list[Response] = []

            async def one() -> None:
                results.append(await conn.request("GET", f"/bytes/{n}"))

            async with trio.open_nursery() as nursery:
                for _ in range(count):
                    nursery.start_soon(one)
            assert len(results) == count
            for r in results:
                verify_bytes(r, n)
            assert len({r.stream_id for r in results}) == count
            assert max(r.stream_id for r in results) == 4 * (count - 1)
            assert len(lab.requests) == count

    trio.run(main)


def _control_stream(*frames: tuple[int, bytes]) -> bytes:
    """A control stream (type 0x00) carrying (frame type, payload) frames; 1-byte varints."""
    return b"\x00" + b"".join(bytes([t, len(p)]) + p for t, p in frames)


def test_goaway_watcher_finds_goaway_at_any_split() -> None:
    """GOAWAY ids are found on the control stream wherever the bytes are split; SETTINGS and
    unknown frames are skipped; QPACK streams are ignored."""
    settings = (0x04, bytes([0x01, 0x00, 0x06, 0x3F]))
    goaway = (0x07, bytes([0x40, 0x08]))  # two-byte varint: stream id 8
    data = _control_stream(settings, (0x21, b"x" * 30), goaway, (0x07, b"\x04"))
    for cut in range(len(data) + 1):
        w = GoawayWatcher()
        found = w.feed(3, data[:cut]) + w.feed(3, data[cut:])
        assert found == [8, 4], cut
    bytewise = GoawayWatcher()
    assert [g for b in data for g in bytewise.feed(3, bytes([b]))] == [8, 4]
    qpack = GoawayWatcher()
    assert qpack.feed(7, b"\x02" + bytes([0x07, 0x01, 0x00])) == []  # encoder stream, not control


def test_resumption_without_full_handshake(certs: CertPaths) -> None:
    """A second connection resumes with the ticket of the first and sends no early data."""

    async def main() -> None:
        async with lab_h3(certs) as lab:
            async with open_h3(lab.options()) as cold:
                r = await cold.request("GET", "/healthz")
                assert r.status == 200 and not cold.timings.resumed
            await trio.sleep(0.05)  # the ticket arrives right after the handshake
            assert lab.tickets.get("h3", "127.0.0.1", lab.port) is not None
            async with open_h3(lab.options("resumed")) as warm:
                r = await warm.request("GET", "/healthz")
                assert r.status == 200 and r.body == b"ok"
                assert warm.timings.resumed
                assert not warm.timings.early_data_sent and not r.early_data
            assert [q.early_data for q in lab.requests] == [False, False]

    trio.run(main)


def test_resumed_mode_needs_a_ticket(certs: CertPaths) -> None:
    """Asking for resumption without a stored ticket is a clear error, not a cold connect."""

    async def main() -> None:
        async with lab_h3(certs) as lab:
            with pytest.raises(ValueError, match="ticket"):
                async with open_h3(lab.options("resumed")):
                    pass

    trio.run(main)


@pytest.mark.parametrize("engine", ENGINES)
def test_graceful_shutdown_finishes_in_flight_request(certs: CertPaths, engine: str) -> None:
    """On shutdown the server sends GOAWAY, which the client sees (`goaway_received`) and which
    makes new requests fail at once; a running watch finishes, then the server returns."""
    path = "/api/v1/watch/namespaces/default/pods?interval_ms=100&count=6"

    async def main() -> None:
        async with lab_h3(certs, engine) as lab, open_h3(lab.options()) as conn:
            got: list[Response] = []

            async def watch() -> None:
                got.append(await conn.request("GET", path))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                await trio.sleep(0.15)  # the watch is running
                assert not conn.timings.goaway_received
                lab.shutdown.set()
                with trio.fail_after(2):
                    while not conn.timings.goaway_received:
                        await trio.sleep(0.01)
                assert conn.goaway_received and conn.goaway_stream_id == 4
                n_seen = len(lab.requests)
                with pytest.raises(RequestFailed, match="GOAWAY"):
                    await conn.request("GET", "/healthz")
                assert len(lab.requests) == n_seen  # never sent, never reached the server
                with trio.fail_after(5):
                    await lab.stopped.wait()
            assert len(got) == 1 and got[0].status == 200
            assert got[0].body is not None and len(got[0].body.splitlines()) == 6
        # the server is gone: a new connection cannot complete its handshake
        with pytest.raises(TimeoutError):
            async with open_h3(dataclasses.replace(lab.options(), connect_timeout_s=0.5)):
                pass

    trio.run(main)


def _garbage_datagrams(seed: int) -> list[bytes]:
    rng = __import__("numpy").random.default_rng(seed)
    out = [bytes(rng.integers(0, 256, size=int(k), dtype="uint8")) for k in (1, 7, 40, 1200, 1500)]
    out.append(b"\xc0\x00\x00\x00\x01" + b"\x08" + os.urandom(8) + b"\x00" * 1190)  # bad Initial
    out.append(b"\x40" + os.urandom(20))  # short header, unknown connection id
    out.append(b"\xc0\xff\xff\xff\xff" + b"\x00" * 1200)  # truncated long header
    out.append(b"\xc0\x1a\x2a\x3a\x4a\x08" + os.urandom(8) + b"\x00" * 1200)  # unknown version
    return out


@pytest.mark.parametrize("engine", ENGINES)
def test_garbage_datagrams_do_not_wedge_the_server(certs: CertPaths, engine: str) -> None:
    """Random bytes, broken headers and unknown versions are dropped; service goes on."""

    async def main() -> None:
        async with lab_h3(certs, engine) as lab:
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with sock:
                for data in _garbage_datagrams(seed=3):
                    await sock.sendto(data, ("127.0.0.1", lab.port))
                # unknown version: the server answers with Version Negotiation (version 0)
                with trio.fail_after(2):
                    reply, _ = await sock.recvfrom(2048)
                assert reply[1:5] == b"\x00\x00\x00\x00"
            async with open_h3(lab.options()) as conn:
                verify_bytes(await conn.request("GET", "/bytes/5000"), 5000)

    trio.run(main)


@pytest.mark.parametrize(
    ("raw", "codes"),
    [
        # HEADERS whose QPACK field section is garbage → QPACK_DECOMPRESSION_FAILED
        (b"\x01\x04\xff\xff\xff\xff", {0x200, 0x101, 0x106}),
        # DATA before any HEADERS on a request stream → H3_FRAME_UNEXPECTED
        (b"\x00\x03abc", {0x105}),
        # HEADERS without :path (":method GET" then ":scheme https", literal) → H3_MESSAGE_ERROR
        (b"\x01\x05\x00\x00\xd1\xd7\x00", {0x10E, 0x101, 0x106, 0x200}),
    ],
    ids=["bad-qpack", "data-first", "no-path"],
)
def test_bad_request_frames_close_only_that_connection(
    certs: CertPaths, raw: bytes, codes: set[int]
) -> None:
    """A peer's broken HTTP/3 frames end its connection with an H3 error code; others go on."""

    async def main() -> None:
        async with lab_h3(certs) as lab:
            async with open_h3(lab.options()) as other, open_h3(lab.options()) as bad:
                stream_id = bad.quic.get_next_available_stream_id()
                bad.quic.send_stream_data(stream_id, raw, end_stream=True)
                await bad.transmit()
                with trio.fail_after(5):
                    while not bad.terminated and bad.close_reason is None:
                        await bad.wait_progress()
                assert bad.close_reason is not None
                assert bad.close_reason.error_code in codes, bad.close_reason
                with pytest.raises(H3RequestError):
                    await bad.request("GET", "/healthz")
                r = await other.request("GET", "/healthz")
                assert r.status == 200
            async with open_h3(lab.options()) as fresh:
                assert (await fresh.request("GET", "/healthz")).status == 200
            assert all(q.path == "/healthz" for q in lab.requests)

    trio.run(main)


def _initial_with_stream_frame() -> tuple[bytes, object]:
    """A client Initial packet carrying a STREAM frame (forbidden in Initial packets)."""
    from aioquic.quic.crypto import CryptoPair
    from aioquic.quic.packet import QuicFrameType, QuicPacketType, QuicProtocolVersion
    from aioquic.quic.packet_builder import QuicPacketBuilder

    dcid, scid = os.urandom(8), os.urandom(8)
    crypto = CryptoPair()
    crypto.setup_initial(dcid, is_client=True, version=QuicProtocolVersion.VERSION_1)
    builder = QuicPacketBuilder(
        host_cid=scid,
        peer_cid=dcid,
        version=QuicProtocolVersion.VERSION_1,
        is_client=True,
        max_datagram_size=1200,
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    buf = builder.start_frame(QuicFrameType.STREAM_BASE | 0x02)  # with length
    buf.push_uint_var(0)  # stream 0
    buf.push_uint_var(5)
    buf.push_bytes(b"hello")
    datagrams, _packets = builder.flush()
    assert len(datagrams) == 1 and len(datagrams[0]) >= 1200
    return datagrams[0], (dcid, scid)


@pytest.mark.parametrize("engine", ENGINES)
def test_stream_frame_in_initial_packet_is_a_protocol_violation(
    certs: CertPaths, engine: str
) -> None:
    """The server closes such a connection (CONNECTION_CLOSE) and keeps serving others."""
    from aioquic.quic.crypto import CryptoPair
    from aioquic.quic.packet import QuicProtocolVersion

    async def main() -> None:
        async with lab_h3(certs, engine) as lab:
            datagram, (dcid, _scid) = _initial_with_stream_frame()
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with sock:
                await sock.sendto(datagram, ("127.0.0.1", lab.port))
                with trio.fail_after(3):
                    reply, _ = await sock.recvfrom(4096)
            # decrypt the server's Initial reply with the Initial keys of that connection id
            crypto = CryptoPair()
            crypto.setup_initial(dcid, is_client=True, version=QuicProtocolVersion.VERSION_1)
            header = load_engine("aioquic").pull_header(reply, 8)
            assert header.packet_type.name == "INITIAL"
            encrypted_offset = 1 + 4 + 1 + len(header.destination_cid) + 1
            encrypted_offset += len(header.source_cid) + 1  # token length 0
            length_start = encrypted_offset
            first = reply[length_start]
            length_bytes = 1 << (first >> 6)
            _plain_header, plain, _pn = crypto.decrypt_packet(
                reply[: length_start + length_bytes + header.packet_length],
                length_start + length_bytes,
                0,
            )
            frames = plain.lstrip(b"\x00")  # PADDING
            assert frames[0] == 0x1C  # CONNECTION_CLOSE (transport)
            assert frames[1] == 0x0A  # PROTOCOL_VIOLATION
            async with open_h3(lab.options()) as conn:
                assert (await conn.request("GET", "/healthz")).status == 200

    trio.run(main)


def test_dual_stack_ipv6_client(certs: CertPaths) -> None:
    """The "::" listener serves an IPv6 client too."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")

    async def main() -> None:
        async with lab_h3(certs) as lab:
            opts = dataclasses.replace(lab.options(), host="::1")
            async with open_h3(opts) as conn:
                verify_bytes(await conn.request("GET", "/bytes/777"), 777)

    trio.run(main)


def test_qlog_written_per_connection(certs: CertPaths, tmp_path: Path) -> None:
    """With qlog_dir set, the server writes one qlog file per connection."""

    async def main() -> None:
        async with lab_h3(certs) as lab:
            pass
        config = dataclasses.replace(
            lab.config, port=0, quic=QuicSettings(qlog_dir=tmp_path / "qlog")
        )
        shutdown = trio.Event()

        async def handler(request: app.Request, writer: app.ResponseWriter) -> None:
            await app.handle(request, writer, config)

        async with trio.open_nursery() as nursery:
            _h, port = await nursery.start(
                lambda task_status: serve_h3(
                    config, handler, shutdown=shutdown, task_status=task_status
                )
            )
            opts = dataclasses.replace(lab.options(), port=port)
            for _ in range(2):
                async with open_h3(opts) as conn:
                    assert (await conn.request("GET", "/healthz")).status == 200
            shutdown.set()
        files = list((tmp_path / "qlog").iterdir())
        assert len(files) == 2
        assert all(f.stat().st_size > 0 for f in files)

    trio.run(main)


def test_lab_get_selects_the_quic_engine(certs: CertPaths) -> None:
    """`lab get --http3 --quic-engine qh3 --0rtt` runs on qh3 and proves 0-RTT both ways: the
    QUIC state (early_data_accepted) and the server's lab-early-data header."""

    async def main() -> None:
        async with lab_h3(certs, "qh3") as lab:
            url = f"https://127.0.0.1:{lab.port}/bytes/1000"
            argv = [sys.executable, "-m", "lab", "get", url, "--http3", "--quic-engine", "qh3"]
            argv += ["--0rtt", "--ca", str(certs.ca_cert)]
            done = await trio.run_process(
                argv, capture_stdout=True, capture_stderr=True, check=False
            )
            out = done.stdout.decode()
            assert done.returncode == 0, done.stderr.decode()
            assert "(0-RTT, mode zero_rtt, engine qh3)" in out
            assert "early_data_sent=True early_data_accepted=True" in out
            assert "server says early data: yes" in out
            assert [r.early_data for r in lab.requests] == [False, True]

    trio.run(main)
