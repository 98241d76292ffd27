"""0-RTT done right over real QUIC on loopback: accepted and proven, 425 for unsafe methods,
and a replayed first flight never gets an unsafe request (or any request) to the routes."""

from __future__ import annotations

import dataclasses
import socket

import pytest
import trio
from test_h3 import LabH3, certs, lab_h3, verify_bytes  # noqa: F401 — certs is a fixture

from lab.http import app
from lab.http.h3_client import open_h3
from lab.http.quic_engine import ENGINES
from lab.http.tls import CertPaths
from lab.http.types import Response

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def echo_calls(monkeypatch: pytest.MonkeyPatch) -> list[app.Request]:
    """Count the requests that reach the /echo route itself (behind app.handle's policy)."""
    calls: list[app.Request] = []
    routes = []
    for pattern, methods, fn in app.ROUTES:
        if pattern.pattern == "/echo":

            async def counted(r, w, cfg, m, _fn=fn):  # type: ignore[no-untyped-def]
                calls.append(r)
                await _fn(r, w, cfg, m)

            routes.append((pattern, methods, counted))
        else:
            routes.append((pattern, methods, fn))
    assert any(p.pattern == "/echo" for p, _, _ in routes)
    monkeypatch.setattr(app, "ROUTES", tuple(routes))
    return calls


async def _prime_ticket(lab: LabH3) -> None:
    """A cold connection that leaves a session ticket in lab.tickets."""
    async with open_h3(lab.options()) as conn:
        assert (await conn.request("GET", "/healthz")).status == 200
        with trio.fail_after(2):
            while lab.tickets.get("h3", "127.0.0.1", lab.port) is None:
                await conn.wait_progress()


@pytest.mark.parametrize("engine", ENGINES)
def test_zero_rtt_get_is_accepted_and_proven(certs: CertPaths, engine: str) -> None:  # noqa: F811
    """A GET sent before the handshake completes is served from early data, and says so."""

    async def main() -> None:
        async with lab_h3(certs, engine) as lab:
            await _prime_ticket(lab)
            async with open_h3(lab.options("zero_rtt")) as conn:
                assert conn.timings.handshake_done_ns is None  # yielded before the handshake
                r = await conn.request("GET", "/bytes/4096")
                verify_bytes(r, 4096)
                t = conn.timings
                assert t.early_data_sent and t.resumed
                assert conn.early_data_accepted is True
                assert t.handshake_done_ns is not None
                assert r.request_sent_ns < t.handshake_done_ns  # left in 0-RTT packets
                assert r.early_data  # the server's lab-early-data: 1
                # a request after the handshake is ordinary 1-RTT data
                r2 = await conn.request("GET", "/healthz")
                assert r2.status == 200 and not r2.early_data
            server_view = [(q.path, q.early_data) for q in lab.requests]
            assert server_view == [("/healthz", False), ("/bytes/4096", True), ("/healthz", False)]

    trio.run(main)


@pytest.mark.parametrize("engine", ENGINES)
def test_post_in_zero_rtt_gets_425_and_never_reaches_the_route(
    certs: CertPaths,  # noqa: F811
    engine: str,
    echo_calls: list[app.Request],
) -> None:
    """POST /echo in early data → 425 Too Early; the same POST after the handshake → 200."""

    async def main() -> None:
        async with lab_h3(certs, engine) as lab:
            await _prime_ticket(lab)
            async with open_h3(lab.options("zero_rtt")) as conn:
                r = await conn.request("POST", "/echo", body=b"not twice")
                assert conn.timings.early_data_sent and r.request_sent_ns < (
                    conn.timings.handshake_done_ns or 0
                )
                assert r.status == 425 and r.early_data
                assert echo_calls == []
                again = await conn.request("POST", "/echo", body=b"not twice")
                assert again.status == 200 and again.body == b"not twice"
                assert not again.early_data
            assert len(echo_calls) == 1 and not echo_calls[0].early_data

    trio.run(main)


class Relay:
    """A UDP relay between one client and the server that records the client's first flight
    as an on-path attacker could: its first datagram (the ClientHello in an Initial packet) and
    every datagram carrying 0-RTT packets."""

    def __init__(self, server_port: int) -> None:
        self.server = ("127.0.0.1", server_port)
        self.front = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.first_flight: list[bytes] = []
        self.server_cids: set[bytes] = set()  # source cids of the server's long-header packets
        self.client: tuple[str, int] | None = None

    async def bind(self) -> int:
        await self.front.bind(("127.0.0.1", 0))
        await self.back.bind(("127.0.0.1", 0))
        return self.front.getsockname()[1]

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._upstream)
            nursery.start_soon(self._downstream)

    async def _upstream(self) -> None:
        while True:
            data, self.client = await self.front.recvfrom(65535)
            if not self.first_flight or _has_zero_rtt_packet(data):
                self.first_flight.append(data)
            await self.back.sendto(data, self.server)

    async def _downstream(self) -> None:
        while True:
            data, _ = await self.back.recvfrom(65535)
            if data[0] & 0x80:
                self.server_cids.add(_source_cid(data))
            if self.client is not None:
                await self.front.sendto(data, self.client)

    def close(self) -> None:
        self.front.close()
        self.back.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_replayed_first_flight_never_reaches_the_routes(
    certs: CertPaths,  # noqa: F811
    engine: str,
    echo_calls: list[app.Request],
) -> None:
    """Replay the captured Initial + 0-RTT datagrams of a finished connection to the server.

    The server answers the replayed ClientHello (a new handshake), but tickets are single-use,
    so the replayed 0-RTT data is rejected: neither the POST nor the GET in it reach a route.
    """

    async def main() -> None:
        async with lab_h3(certs, engine) as lab:
            await _prime_ticket(lab)
            relay = Relay(lab.port)
            port = await relay.bind()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(relay.run)
                opts = dataclasses.replace(lab.options("zero_rtt"), port=port)
                lab.tickets.put(
                    "h3", "127.0.0.1", port, lab.tickets.get("h3", "127.0.0.1", lab.port)
                )
                got: list[Response] = []
                async with open_h3(opts) as conn:

                    async def send(method: str, path: str, body: bytes = b"") -> None:
                        got.append(await conn.request(method, path, body=body))

                    async with trio.open_nursery() as inner:
                        inner.start_soon(send, "POST", "/echo", b"pay once")
                        inner.start_soon(send, "GET", "/bytes/100")
                    assert conn.timings.early_data_sent
                assert sorted(r.status for r in got) == [200, 425]
                assert all(r.early_data for r in got)
                await trio.sleep(0.2)  # the relay forwards the CONNECTION_CLOSE
                nursery.cancel_scope.cancel()
            relay.close()
            flight = relay.first_flight
            assert flight and flight[0][0] & 0xF0 == 0xC0  # starts with a long-header Initial
            # the first flight carried 0-RTT packets (long header, type 1)
            assert any(_has_zero_rtt_packet(d) for d in flight)
            seen = len(lab.requests)
            await trio.sleep(2.5)  # the original connection drains away (≤ DRAIN_CAP_S)

            replies: list[bytes] = []
            replayer = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with replayer:
                for data in flight:
                    await replayer.sendto(data, ("127.0.0.1", lab.port))
                with trio.move_on_after(1.0):
                    while True:
                        replies.append((await replayer.recvfrom(65535))[0])
            # a new server connection (a connection id never seen before) answered the replay
            assert replies and replies[0][0] & 0xF0 == 0xC0  # an Initial packet
            assert relay.server_cids and _source_cid(replies[0]) not in relay.server_cids
            assert echo_calls == []  # the unsafe request never ran
            assert len(lab.requests) == seen  # nor did the replayed GET
            # and the server keeps serving
            async with open_h3(lab.options()) as conn:
                assert (await conn.request("GET", "/healthz")).status == 200

    trio.run(main)


def _source_cid(datagram: bytes) -> bytes:
    """The source connection id of a long-header packet."""
    from aioquic.buffer import Buffer
    from aioquic.quic.packet import pull_quic_header

    return pull_quic_header(Buffer(data=datagram), 8).source_cid


def _has_zero_rtt_packet(datagram: bytes) -> bool:
    """True when any coalesced long-header packet in a datagram is a 0-RTT packet (v1)."""
    from aioquic.buffer import Buffer
    from aioquic.quic.packet import QuicPacketType, pull_quic_header

    buf = Buffer(data=datagram)
    while not buf.eof():
        start = buf.tell()
        try:
            header = pull_quic_header(buf, 8)
        except ValueError:
            return False
        if header.packet_type == QuicPacketType.ZERO_RTT:
            return True
        if header.packet_type == QuicPacketType.ONE_RTT:
            return False
        buf.seek(start + header.packet_length)
    return False
