"""Bounded HTTP/3 server state under hostile clients: `lab serve` as a real process on loopback,
real UDP datagrams (lab.http.quic_flood), the server's own log lines as the observable state.

Garbage never creates a connection; above `--h3-retry-above` half-open connections new Initials
get a Retry (RFC 9000 §8.1.2) that real clients follow; `--h3-max-half-open` holds; half-open
state is gone `--h3-handshake-timeout` after it was created; RSS comes back near its baseline;
real clients are served during and after a flood.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
from aioquic.buffer import Buffer
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import QuicPacketType, pull_quic_header
from test_server import ServeProcess

from lab.http import quic_flood
from lab.http.client import open_connection
from lab.http.h3_admission import Gate, InitialHeader
from lab.http.h3_stats import EVENT_KINDS, STATS_INTERVAL_S
from lab.http.quic_initial import VERSION_1, opens_with_valid_initial
from lab.http.retry_token import InvalidToken, RetryTokens
from lab.http.settings import QuicServerLimits, QuicSettings
from lab.http.tls import CertPaths, ensure_certs
from lab.http.types import ConnectOptions
from lab.peers import ngtcp2

pytestmark = pytest.mark.timeout(120)

HOST = "127.0.0.1"
RSS_SLACK_MB = 30  # RSS a few seconds after a flood: within this of the baseline
EVENT = re.compile(r"h3 event (\w+): \+(\d+) \(total (\d+)\)")
STATE = re.compile(r"h3 state: connections=(\d+) half_open=(\d+)")
SUMMARY = re.compile(r"h3 summary: (.*)$")


class LabServe(ServeProcess):
    """`lab serve` on a free loopback port (ServeProcess), its h3 log lines parsed."""

    def totals(self) -> dict[str, int]:
        """The latest total of every event kind the server logged (0 when never logged)."""
        out = dict.fromkeys(EVENT_KINDS, 0)
        for line in list(self.lines):
            if m := EVENT.search(line):
                out[m[1]] = int(m[3])
        return out

    def states(self) -> list[tuple[int, int]]:
        """Every (connections, half_open) the server logged, in order."""
        return [(int(m[1]), int(m[2])) for line in list(self.lines) if (m := STATE.search(line))]

    def wait_for(self, check: Callable[[], bool], timeout_s: float, what: str) -> float:
        """Poll `check` until true; returns the seconds it took (AssertionError at timeout)."""
        t0 = time.monotonic()
        while not check():
            if time.monotonic() - t0 > timeout_s:
                raise AssertionError(f"{what}: not within {timeout_s} s\n{self.output[-4000:]}")
            time.sleep(0.05)
        return time.monotonic() - t0

    def wait_state(self, connections: int, half_open: int, timeout_s: float) -> float:
        """Wait for a `h3 state` line with exactly these numbers after the lines seen so far."""
        seen = len(self.states())
        return self.wait_for(
            lambda: (connections, half_open) in self.states()[seen:],
            timeout_s,
            f"h3 state connections={connections} half_open={half_open}",
        )

    def settle(self) -> None:
        """Wait until the server's stats ticks have logged what happened so far."""
        time.sleep(2.5 * STATS_INTERVAL_S)

    def rss_mb(self) -> float:
        """The server's VmRSS (/proc/PID/status), MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def summary(self) -> dict[str, int]:
        """SIGTERM, wait for the exit, and parse the shutdown summary line."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout=20) == 0, self.output[-3000:]
        time.sleep(0.2)  # the reader thread drains the pipe
        m = next((m for line in self.lines if (m := SUMMARY.search(line))), None)
        assert m, self.output[-3000:]
        return {k: int(v) for k, v in (kv.split("=") for kv in m[1].split())}


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return ensure_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def serve(certs: CertPaths) -> Iterator[Callable[..., LabServe]]:
    started: list[LabServe] = []

    def start(*flags: str) -> LabServe:
        server = LabServe(certs.cert.parent, *flags)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def _options(server: LabServe, certs: CertPaths, engine: str = "aioquic") -> ConnectOptions:
    return ConnectOptions(
        "h3",
        HOST,
        server.port,
        ca_file=certs.ca_cert,
        quic=QuicSettings(engine=engine),  # type: ignore[arg-type]
        connect_timeout_s=20.0,
    )


async def _get(server: LabServe, certs: CertPaths, engine: str = "aioquic") -> int:
    async with open_connection(_options(server, certs, engine)) as conn:
        response = await conn.request("GET", "/bytes/1000")
        assert response.body is not None and len(response.body) == 1000
        return response.status


def _gtlsclient_status(port: int) -> int | None:
    """The status gtlsclient got for GET /bytes/1000 (None: no response)."""
    args = ngtcp2.ClientArgs(HOST, port, (f"https://localhost:{port}/bytes/1000",), timeout="20s")
    done = subprocess.run(ngtcp2.client_argv(args), capture_output=True, text=True, timeout=60)
    log = ngtcp2.parse_client_log(done.stderr)
    return log.streams[0].status if log.streams else None


def _udp(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(3.0)
    sock.connect((HOST, port))
    return sock


def _with_length_field(datagram: bytes, length: int) -> bytes:
    """A copy of a real Initial whose 2-byte Length field says `length`."""
    pos = 6 + datagram[5]
    pos += 1 + datagram[pos]
    pos += 1  # token length 0
    return datagram[:pos] + (0x4000 | length).to_bytes(2, "big") + datagram[pos + 2 :]


# --- pure parts: tokens, the Initial check, admission ------------------------------------------


def test_retry_token_binds_address_ids_and_time() -> None:
    tokens = RetryTokens(lifetime_s=10.0)
    addr, odcid, rscid = ("127.0.0.1", 5000), os.urandom(8), os.urandom(8)
    token = tokens.create(addr, odcid, rscid, now=100.0)
    valid = tokens.validate(addr, rscid, token, now=105.0)
    assert (valid.original_dcid, valid.retry_source_cid) == (odcid, rscid)
    assert RetryTokens.is_ours(token) and not RetryTokens.is_ours(b"\x00" * 40)
    forged = token[:-1] + bytes([token[-1] ^ 1])
    for bad_addr, dcid, tok, now in [
        (("127.0.0.1", 5001), rscid, token, 105.0),  # other port
        (("127.0.0.2", 5000), rscid, token, 105.0),  # other host
        (addr, odcid, token, 105.0),  # not sent to the Retry's source id
        (addr, rscid, token, 110.5),  # expired
        (addr, rscid, forged, 105.0),  # tag
        (addr, rscid, b"LR", 105.0),  # truncated
    ]:
        with pytest.raises(InvalidToken):
            tokens.validate(bad_addr, dcid, tok, now)
    with pytest.raises(InvalidToken):  # another server process (another key)
        RetryTokens().validate(addr, rscid, token, now=105.0)


def test_only_intact_initials_pass_the_initial_check() -> None:
    datagram, _dcid, _scid = quic_flood.real_initial()
    assert opens_with_valid_initial(datagram)
    assert not opens_with_valid_initial(quic_flood.garbage_initial())
    packet_length = pull_quic_header(Buffer(data=datagram), 8).packet_length
    for cut in range(0, packet_length, 9):
        assert not opens_with_valid_initial(datagram[:cut])
    for i in range(1, packet_length, 7):  # every flipped byte after the first breaks the AEAD
        flipped = bytearray(datagram)
        flipped[i] ^= 0x01
        assert not opens_with_valid_initial(bytes(flipped))
    assert not opens_with_valid_initial(_with_length_field(datagram, 2000))


def test_gate_verdicts() -> None:
    limits = QuicServerLimits(retry_above_half_open=2, max_half_open=3, handshake_timeout_s=5)
    gate = Gate(limits, [VERSION_1])
    addr = ("127.0.0.1", 4000)
    datagram, dcid, scid = quic_flood.real_initial()

    def admit(data: bytes, half_open: int, **kw: object) -> str:
        fields = {"is_initial": True, "version": VERSION_1, "destination_cid": dcid}
        fields |= {"source_cid": scid, "token": b""} | kw
        header = InitialHeader(**fields)  # type: ignore[arg-type]
        return gate.admit(header, data, addr, half_open=half_open, accepting=True, now=1.0).verdict

    assert admit(datagram, 0) == "accept"
    assert admit(datagram, 1) == "accept"
    assert admit(datagram, 2) == "retry"
    assert admit(datagram, 0, is_initial=False) == "drop_unknown_cid"
    assert admit(datagram[:1199], 0) == "drop_short"
    assert admit(datagram, 0, version=0x1A2A3A4A) == "version_negotiation"
    assert admit(datagram, 0, destination_cid=b"1234") == "drop_bad_dcid"
    assert admit(quic_flood.garbage_initial(), 0) == "drop_undecryptable"
    rscid = os.urandom(8)
    token = gate.tokens.create(addr, dcid, rscid, now=1.0)
    retried, _, _ = quic_flood.real_initial(dcid=rscid, token=token)
    assert admit(retried, 2, destination_cid=rscid, token=token) == "accept"  # validated
    assert admit(retried, 3, destination_cid=rscid, token=token) == "drop_half_open_cap"
    assert admit(retried, 0, destination_cid=rscid, token=b"LR" + token[2:-1]) == "invalid_token"
    assert admit(datagram, 2, token=b"another server's token") == "retry"
    header = InitialHeader(True, VERSION_1, dcid, scid, b"")
    closing = gate.admit(header, datagram, addr, half_open=0, accepting=False, now=1.0)
    assert closing.verdict == "drop_not_accepting"


# --- the real server ---------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["aioquic", "qh3"])
def test_garbage_creates_no_connection_state(
    serve: Callable[..., LabServe], certs: CertPaths, engine: str
) -> None:
    """Short, truncated, wrong-version, bad-length, short-DCID and undecryptable datagrams
    are counted and dropped (unknown versions get Version Negotiation); no connection is made."""
    server = serve("--quic-engine", engine)
    real, _dcid, _scid = quic_flood.real_initial()
    flipped = bytearray(real)
    flipped[200] ^= 0x55
    short_dcid, _, _ = quic_flood.real_initial(dcid=b"\x01\x02\x03\x04")
    kinds = {
        "drop_unparsable": [
            b"\x00",  # too short for any header
            real[:40],  # long header cut inside its fields
            _with_length_field(real, 3000),  # Length beyond the datagram
            b"\xc0\x00\x00\x00\x01\x15" + os.urandom(21) + b"\x00" * 1200,  # DCID of 21 bytes
        ],
        "drop_unknown_cid": [b"\x40" + os.urandom(40)],  # short header, nobody's id
        "drop_short": [real[:1100]],  # an intact Initial in a datagram < 1200 bytes
        "drop_bad_dcid": [short_dcid],  # DCID of 4 bytes
        "drop_undecryptable": [quic_flood.garbage_initial(), bytes(flipped)],
        "version_negotiation": [b"\xc0\x1a\x2a\x3a\x4a\x08" + os.urandom(8) + b"\x00" * 1200],
    }
    repeat = 30
    with _udp(server.port) as sock:
        for datagrams in kinds.values():
            for datagram in datagrams:
                for _ in range(repeat):
                    sock.send(datagram)
                    time.sleep(0.0005)
        replies = []
        with pytest.raises(TimeoutError):
            while True:
                sock.settimeout(1.0)
                replies.append(sock.recv(4096))
    assert len(replies) == repeat  # Version Negotiation, and nothing else
    assert all(r[1:5] == b"\x00\x00\x00\x00" for r in replies)
    server.settle()
    totals = server.totals()
    for kind, datagrams in kinds.items():
        assert totals[kind] == repeat * len(datagrams), (kind, totals)
    assert totals["accept"] == 0
    assert set(server.states()) == {(0, 0)}  # no connection was ever created
    assert trio.run(_get, server, certs, engine) == 200  # and the server still serves


def test_retry_packets_tokens_and_invalid_token_close(serve: Callable[..., LabServe]) -> None:
    """With Retry always on: the Retry's integrity tag and ids are right, echoing the token gets
    the handshake, a forged or replayed-elsewhere token gets CONNECTION_CLOSE(INVALID_TOKEN)."""
    server = serve("--h3-retry-above", "0")
    datagram, dcid, scid = quic_flood.real_initial()
    with _udp(server.port) as sock, _udp(server.port) as other:
        sock.send(datagram)
        retry = quic_flood.parse_retry(sock.recv(4096), original_dcid=dcid)  # tag checked
        assert retry is not None
        assert retry.destination_cid == scid and len(retry.source_cid) == 8
        assert retry.source_cid != dcid and retry.token

        forged = b"LR" + os.urandom(len(retry.token) - 2)
        replays = [
            (sock, os.urandom(8), forged),  # a token of our layout that we never issued
            (other, retry.source_cid, retry.token),  # a real token from another source port
        ]
        for s, bad_dcid, token in replays:
            bad, _, _ = quic_flood.real_initial(dcid=bad_dcid, token=token)
            s.send(bad)
            close = s.recv(4096)
            h = pull_quic_header(Buffer(data=close), 8)
            assert h.packet_type == QuicPacketType.INITIAL
            assert h.destination_cid == scid and h.source_cid == bad_dcid
            crypto = CryptoPair()
            crypto.setup_initial(bad_dcid, is_client=True, version=VERSION_1)
            packet = close[: h.packet_length]
            offset = quic_flood.packet_number_offset(packet)
            _plain, payload, _pn = crypto.decrypt_packet(packet, offset, 0)
            frames = payload.lstrip(b"\x00")
            assert frames[:2] == b"\x1c\x0b"  # CONNECTION_CLOSE (transport), INVALID_TOKEN

        sock.send(quic_flood.retry_answer(retry))  # the right token from the right port
        header = pull_quic_header(Buffer(data=sock.recv(4096)), 8)
        assert header.packet_type == QuicPacketType.INITIAL  # the server's handshake flight
        assert header.destination_cid == scid and header.source_cid != retry.source_cid
    server.settle()
    totals = server.totals()
    assert (totals["retry"], totals["accept"], totals["invalid_token"]) == (1, 1, 2)


def test_half_open_connection_is_discarded_at_the_handshake_timeout(
    serve: Callable[..., LabServe],
) -> None:
    """A ClientHello that is never followed up: the server's retransmissions stop and its state
    is gone at --h3-handshake-timeout (the old server kept it for the 30 s idle timeout)."""
    timeout_s = 2.0
    server = serve("--h3-handshake-timeout", str(timeout_s))
    datagram, _dcid, _scid = quic_flood.real_initial()
    arrivals = []
    with _udp(server.port) as sock:
        t0 = time.monotonic()
        sock.send(datagram)
        sock.settimeout(0.2)
        while time.monotonic() - t0 < timeout_s + 3.0:
            try:
                sock.recv(4096)
                arrivals.append(time.monotonic() - t0)
            except TimeoutError:
                pass
    assert arrivals and arrivals[0] < 1.0  # the server's first flight
    assert any(t > 0.5 for t in arrivals)  # and at least one retransmission (PTO)
    assert max(arrivals) < timeout_s + 0.3  # nothing after the handshake timeout
    server.wait_for(lambda: server.totals()["half_open_expired"] == 1, 3.0, "expiry logged")
    assert (0, 0) in server.states()[1:]


def test_validating_clients_connect_through_retry(
    serve: Callable[..., LabServe], certs: CertPaths
) -> None:
    """Retry on every connection: the lab's client on both engines, ngtcp2's gtlsclient and
    curl_cffi's libcurl each get their response, each after one Retry."""
    connections = 0
    for engine in ("aioquic", "qh3"):
        server = serve("--h3-retry-above", "0", "--quic-engine", engine)
        assert trio.run(_get, server, certs, engine) == 200
        connections = 1
        if engine == "aioquic":
            if shutil.which(ngtcp2.CLIENT_BINARY):
                assert _gtlsclient_status(server.port) == 200
                connections += 1
            try:
                from curl_cffi import CurlHttpVersion, requests
            except ImportError:
                pass
            else:
                url = f"https://localhost:{server.port}/bytes/1000"
                resp = requests.get(
                    url, http_version=CurlHttpVersion.V3ONLY, verify=str(certs.ca_cert), timeout=30
                )
                assert resp.status_code == 200 and len(resp.content) == 1000
                connections += 1
        summary = server.summary()
        assert summary["retry"] >= connections, summary  # a client may resend its first Initial
        assert summary["accept"] == connections, summary
        assert summary["handshake_completed"] == connections, summary


def test_flood_retry_cap_drain_memory_and_real_clients(
    serve: Callable[..., LabServe], certs: CertPaths
) -> None:
    """1,000 ClientHellos from 1,000 ports that ignore Retries (spoofed sources), then 1,000 that
    answer them: Retry starts at the threshold, the cap holds, everything half-open is gone
    within the handshake timeout, RSS returns near its baseline, and real clients are served
    during the first flood (through Retry) and after the second."""
    retry_above, cap, timeout_s, n = 20, 60, 3.0, 1000
    server = serve(
        "--h3-retry-above",
        str(retry_above),
        "--h3-max-half-open",
        str(cap),
        "--h3-handshake-timeout",
        str(timeout_s),
    )
    assert trio.run(_get, server, certs) == 200  # warm-up: baseline with h3 code paths loaded
    server.wait_state(0, 0, timeout_s=6.0)
    baseline_mb = server.rss_mb()
    spoofed = quic_flood.make_initials(n, "real")
    validating = quic_flood.make_initials(n, "real")
    during: dict[str, int | None] = {}

    async def first_flood() -> quic_flood.FloodReport:
        async def real_clients() -> None:
            await trio.sleep(0.05)
            during["lab"] = await _get(server, certs)
            if shutil.which(ngtcp2.CLIENT_BINARY):
                during["gtlsclient"] = await trio.to_thread.run_sync(
                    _gtlsclient_status, server.port
                )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(real_clients)
            return await quic_flood.flood(HOST, server.port, spoofed, sockets=n, listen_s=0.5)

    report = trio.run(first_flood)
    assert set(during.values()) == {200}, during
    server.settle()
    totals = server.totals()
    assert report.retries_received >= 0.9 * (n - retry_above), report
    assert retry_above <= totals["accept"] <= retry_above + len(during) + 1, totals
    assert totals["drop_half_open_cap"] == 0

    second_flood = functools.partial(
        quic_flood.flood, HOST, server.port, validating, sockets=n, answer_retries=True
    )
    report = trio.run(second_flood)
    flood_end = time.monotonic()
    assert report.retry_answers_sent >= 0.9 * n, report
    peak_mb = server.rss_mb()
    server.wait_for(lambda: server.totals()["drop_half_open_cap"] > 0, 3.0, "cap reached")
    seconds = server.wait_state(0, 0, timeout_s=timeout_s + 4.0)
    assert time.monotonic() - flood_end <= timeout_s + 3 * STATS_INTERVAL_S, seconds
    assert max(half_open for _, half_open in server.states()) <= cap
    time.sleep(2 * STATS_INTERVAL_S)  # the memory is given back on the tick after the drain
    after_mb = server.rss_mb()
    assert after_mb <= baseline_mb + RSS_SLACK_MB, (baseline_mb, peak_mb, after_mb)
    assert trio.run(_get, server, certs) == 200  # served after the flood

    summary = server.summary()
    assert summary["peak_half_open"] == cap, summary
    assert summary["half_open_expired"] >= cap, summary
    assert summary["memory_trimmed"] >= 1, summary
