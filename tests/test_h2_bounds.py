"""Issue 9.2 (HTTP/2 half) and 9.7: every resource of the h2 server is bounded; frame rules.

Each case runs `lab serve` (a real process, real TLS on loopback) with small limits given as
flags, plays a hostile peer with hand-built frames or python-h2, and asserts the protocol answer
(GOAWAY and its code, RST_STREAM and its code), that a normal client is served afterwards, and
the bound's counter in the server's shutdown summary line.
"""

from __future__ import annotations

import random
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
import pytest
import trio
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)
from test_server import ServeProcess, serve_processes

from lab.conform.h2wire import RawH2Peer
from lab.http.client import open_connection
from lab.http.h2_frames import FrameRuleError, GoAwayFilter, count_control_frames
from lab.http.h2_limits import BodyBudget, ResetRate
from lab.http.types import ConnectOptions

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS = SettingsFrame(0).serialize()
MIB = 1024 * 1024


@pytest.fixture
def serve(cert_dir) -> Iterator[Callable[..., ServeProcess]]:
    """Start `lab serve --grace 1 FLAGS…`; always killed after the test."""
    with serve_processes(cert_dir, "--grace", "1") as start:
        yield start


def summary(server: ServeProcess) -> dict[str, int]:
    """SIGTERM the server; the counters of its shutdown log line "h2 summary: k=v …"."""
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=10) == 0
    server._reader.join(timeout=5)
    lines = [line.split("h2 summary:", 1)[1] for line in server.lines if "h2 summary:" in line]
    assert len(lines) == 1, server.output
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", lines[0])}


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    """Resident set size (or VmHWM: its peak) of process `pid` in KiB, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


async def assert_served(server: ServeProcess) -> None:
    """A normal client still gets an answer on a fresh connection."""
    opts = ConnectOptions("h2", "127.0.0.1", server.port, ca_file=server.cert_dir / "ca.pem")
    async with open_connection(opts) as conn:
        assert (await conn.request("GET", "/healthz")).body == b"ok"


# --- hand-built frames ------------------------------------------------------------------------
def frame_header(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    return length.to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big")


def goaway(stream_id: int = 0, payload_bytes: int = 8) -> bytes:
    """A GOAWAY(NO_ERROR, last stream 0) on `stream_id` with a payload of `payload_bytes`."""
    return frame_header(payload_bytes, 0x7, 0, stream_id) + bytes(payload_bytes)


def headers(encoder: hpack.Encoder, stream_id: int, path: str, end_stream: bool = True) -> bytes:
    method = "GET" if end_stream else "POST"
    f = HeadersFrame(stream_id)
    f.data = encoder.encode(
        [(":method", method), (":scheme", "https"), (":authority", "localhost"), (":path", path)]
    )
    f.flags.add("END_HEADERS")
    if end_stream:
        f.flags.add("END_STREAM")
    return f.serialize()


def rst(stream_id: int, code: int = ErrorCodes.CANCEL) -> bytes:
    f = RstStreamFrame(stream_id)
    f.error_code = code
    return f.serialize()


def ping(i: int) -> bytes:
    f = PingFrame(0)
    f.opaque_data = i.to_bytes(8, "big")
    return f.serialize()


def goaways(frames: list[Frame]) -> list[GoAwayFrame]:
    return [f for f in frames if isinstance(f, GoAwayFrame)]


async def exchange(server: ServeProcess, payload: bytes, timeout_s: float = 5) -> list[Frame]:
    """Send `payload` (while reading), collect frames until GOAWAY, EOF or `timeout_s`."""
    peer = await RawH2Peer.connect(server)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.send, payload)
            await peer.read_until(lambda fs: bool(goaways(fs)), timeout_s)
            nursery.cancel_scope.cancel()
    finally:
        await peer.aclose()
    return peer.frames


# --- frame rules (RFC 9113) -------------------------------------------------------------------
FRAME_RULES = {
    # §6.8: GOAWAY applies to the connection; any other stream id is a PROTOCOL_ERROR
    "goaway_on_stream_1": (PREFACE + SETTINGS + goaway(stream_id=1), ErrorCodes.PROTOCOL_ERROR),
    # §4.2: larger than SETTINGS_MAX_FRAME_SIZE (16,384) → FRAME_SIZE_ERROR, not 16 MB buffered
    "goaway_16_mb": (
        PREFACE + SETTINGS + goaway(payload_bytes=2**24 - 1),
        ErrorCodes.FRAME_SIZE_ERROR,
    ),
    # §4.2: too small for its mandatory fields (last stream id + error code = 8 bytes)
    "goaway_4_bytes": (PREFACE + SETTINGS + goaway(payload_bytes=4), ErrorCodes.FRAME_SIZE_ERROR),
    # §6.5: a SETTINGS frame with ACK set and a payload → FRAME_SIZE_ERROR
    "settings_ack_with_payload": (
        PREFACE + SETTINGS + frame_header(6, 0x4, 0x1, 0) + b"\x00\x03\x00\x00\x00\x10",
        ErrorCodes.FRAME_SIZE_ERROR,
    ),
    # §3.4: the preface must be followed by SETTINGS → PROTOCOL_ERROR
    "ping_instead_of_settings": (PREFACE + ping(1), ErrorCodes.PROTOCOL_ERROR),
}


@pytest.mark.parametrize("case", list(FRAME_RULES))
def test_frame_rule_violation_gets_goaway_with_the_rfc_code(serve, case):
    payload, code = FRAME_RULES[case]
    server = serve()

    async def main() -> None:
        frames = await exchange(server, payload)
        found = goaways(frames)
        assert found, f"no GOAWAY, got {[type(f).__name__ for f in frames]}"
        assert found[-1].error_code == code
        assert found[-1].last_stream_id == 0
        await assert_served(server)

    trio.run(main)
    assert summary(server)["protocol_error_goaways"] == 1


# --- idle connections -------------------------------------------------------------------------
def test_idle_connection_gets_goaway_no_error_then_is_closed(serve):
    server = serve("--h2-idle-timeout", "0.5")

    async def main() -> None:
        peers = [await RawH2Peer.connect(server) for _ in range(5)]
        for p in peers:
            await p.send(PREFACE + SETTINGS)
        took = await peers[0].read_until(lambda fs: bool(goaways(fs)), 5)
        assert 0.3 < took < 3
        for p in peers:
            await p.read_until(lambda fs: bool(goaways(fs)), 5)
            assert [g.error_code for g in goaways(p.frames)] == [ErrorCodes.NO_ERROR]
            await p.read_until(lambda fs: False, 3)
            assert p.eof, "the server did not close the connection after its GOAWAY"
            await p.aclose()
        await assert_served(server)

    trio.run(main)
    assert summary(server)["idle_closed"] >= 5


def test_idle_time_counts_only_while_no_stream_is_open(serve):
    """A watch that outlives the idle timeout several times is not cut; once it ended, the
    connection is closed after the timeout."""
    server = serve("--h2-idle-timeout", "0.4")
    opts = ConnectOptions("h2", "127.0.0.1", server.port, ca_file=server.cert_dir / "ca.pem")

    async def main() -> None:
        async with open_connection(opts) as conn:
            count = 6
            path = f"/api/v1/watch/namespaces/default/pods?interval_ms=300&count={count}"
            r = await conn.request("GET", path)  # 1.5 s with an open stream
            assert r.status == 200 and len(r.body.splitlines()) == count
            assert not conn.goaway_received
            with trio.fail_after(3):
                while not conn.goaway_received:
                    await trio.sleep(0.05)
        await assert_served(server)

    trio.run(main)
    assert summary(server)["idle_closed"] >= 1


# --- flow-control stalls ----------------------------------------------------------------------
def test_streams_stalled_on_a_zero_window_are_reset_with_cancel(serve):
    server = serve("--h2-stall-timeout", "0.5")

    async def main() -> None:
        peer = await RawH2Peer.connect(server)
        zero = SettingsFrame(0)
        zero.settings = {SettingCodes.INITIAL_WINDOW_SIZE: 0}
        enc = hpack.Encoder()
        ids = list(range(1, 40, 2))
        await peer.send(
            PREFACE + zero.serialize() + b"".join(headers(enc, i, "/bytes/100000") for i in ids)
        )

        def all_reset(fs: list[Frame]) -> bool:
            return {f.stream_id for f in fs if isinstance(f, RstStreamFrame)} >= set(ids)

        took = await peer.read_until(all_reset, 5)
        resets = {f.stream_id: f.error_code for f in peer.frames if isinstance(f, RstStreamFrame)}
        assert set(resets) == set(ids), peer.frames
        assert set(resets.values()) == {ErrorCodes.CANCEL}
        assert 0.4 < took < 4
        assert not goaways(peer.frames)
        # a stream error: the same connection still answers once the window opens
        big = SettingsFrame(0)
        big.settings = {SettingCodes.INITIAL_WINDOW_SIZE: 65_535}
        await peer.send(big.serialize() + headers(enc, 41, "/healthz"))

        def answered(fs: list[Frame]) -> bool:
            return any(isinstance(f, DataFrame) and f.stream_id == 41 for f in fs)

        await peer.read_until(answered, 5)
        assert answered(peer.frames)
        await peer.aclose()
        await assert_served(server)

    trio.run(main)
    assert summary(server)["stalled_resets"] == 20


# --- request-body budgets ---------------------------------------------------------------------
class H2Uploader:
    """A python-h2 client that uploads bodies on several streams at once, round robin, as fast
    as flow control allows; records how each stream ended (a status or a reset code)."""

    def __init__(self, peer: RawH2Peer):
        self.peer = peer
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.status: dict[int, int] = {}
        self.reset: dict[int, int] = {}
        self.goaway: int | None = None
        self._changed = trio.Event()

    async def _read(self) -> None:
        while True:
            try:
                data = await self.peer.tls.receive_some(256 * 1024)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.peer.eof = True
                self._changed.set()
                return
            for ev in self.conn.receive_data(data):
                if isinstance(ev, h2.events.ResponseReceived):
                    self.status[ev.stream_id] = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.StreamReset):
                    self.reset[ev.stream_id] = ev.error_code
                elif isinstance(ev, h2.events.ConnectionTerminated):
                    self.goaway = ev.error_code
                elif isinstance(ev, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            self._changed.set()

    async def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.peer.send(data)

    async def upload(self, streams: int, body_bytes: int, path: str = "/healthz") -> None:
        """POST `streams` bodies of `body_bytes` at once; return when every stream has ended."""
        self.conn.initiate_connection()
        ids = []
        for _ in range(streams):
            sid = self.conn.get_next_available_stream_id()
            head = [(":method", "POST"), (":scheme", "https"), (":authority", "localhost")]
            self.conn.send_headers(sid, [*head, (":path", path)])
            ids.append(sid)
        await self._flush()
        sent = dict.fromkeys(ids, 0)
        chunk = bytes(16_384)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read)
            while not self.peer.eof and self.goaway is None:
                open_ids = [i for i in ids if sent[i] < body_bytes and i not in self.reset]
                if not open_ids:
                    break
                progressed = False
                for sid in open_ids:
                    n = min(len(chunk), body_bytes - sent[sid])
                    if self.conn.local_flow_control_window(sid) < n:
                        continue
                    end = sent[sid] + n == body_bytes
                    try:
                        self.conn.send_data(sid, chunk[:n], end_stream=end)
                    except h2.exceptions.StreamClosedError:
                        sent[sid] = body_bytes
                        continue
                    sent[sid] += n
                    progressed = True
                await self._flush()
                if not progressed:
                    self._changed = trio.Event()
                    await self._changed.wait()
            with trio.fail_after(10):
                while not self.peer.eof and set(self.status) | set(self.reset) < set(ids):
                    self._changed = trio.Event()
                    await self._changed.wait()
            nursery.cancel_scope.cancel()


def test_bodies_over_the_connection_budget_are_refused(serve):
    server = serve("--h2-max-buffered-per-conn", str(8 * MIB))

    async def main() -> None:
        up = H2Uploader(await RawH2Peer.connect(server))
        await up.upload(streams=6, body_bytes=3 * MIB)
        await up.peer.aclose()
        assert up.goaway is None
        assert set(up.reset.values()) == {ErrorCodes.REFUSED_STREAM}
        assert set(up.status.values()) == {405}  # POST /healthz: fully received, answered
        assert len(up.status) >= 1 and len(up.reset) >= 3
        assert len(up.status) + len(up.reset) == 6
        await assert_served(server)

    trio.run(main)
    counters = summary(server)
    assert counters["body_refused"] >= 3
    assert counters["peak_buffered_request_bytes"] <= 8 * MIB


def test_many_buffered_bodies_keep_the_server_under_its_total_budget(serve):
    """4 connections × 3 streams × 15 MiB (180 MiB) against a 32 MiB server budget: the
    server's peak RSS stays below its start + budget + 50 MB."""
    budget = 32 * MIB
    server = serve("--h2-max-buffered-total", str(budget))

    async def main() -> None:
        await assert_served(server)
        base_kib = rss_kib(server.proc.pid)
        ups = [H2Uploader(await RawH2Peer.connect(server)) for _ in range(4)]
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                for up in ups:
                    nursery.start_soon(up.upload, 3, 15 * MIB)
        peak_kib = rss_kib(server.proc.pid, "VmHWM")
        for up in ups:
            await up.peer.aclose()
        grew_mb = (peak_kib - base_kib) * 1024 / 1e6
        assert grew_mb < (budget + 50e6) / 1e6, f"RSS grew {grew_mb:.0f} MB"
        refused = sum(len(up.reset) for up in ups)
        answered = sum(len(up.status) for up in ups)
        assert refused + answered == 12
        assert refused >= 8 and answered >= 1
        await assert_served(server)

    trio.run(main)
    counters = summary(server)
    assert counters["body_refused"] >= 8
    assert counters["peak_buffered_request_bytes"] <= budget


# --- rapid reset (CVE-2023-44487) -------------------------------------------------------------
def test_rapid_reset_gets_goaway_enhance_your_calm(serve):
    server = serve("--h2-rapid-reset-limit", "100")

    async def main() -> None:
        # below the limit: 50 resets on one connection, then a request is still answered
        enc = hpack.Encoder()
        pairs = b"".join(headers(enc, i, "/healthz") + rst(i) for i in range(1, 101, 2))
        polite = await RawH2Peer.connect(server)
        await polite.send(PREFACE + SETTINGS + pairs + headers(enc, 101, "/healthz"))

        def answered(fs: list[Frame]) -> bool:
            return any(isinstance(f, DataFrame) and f.stream_id == 101 for f in fs)

        await polite.read_until(answered, 5)
        assert answered(polite.frames) and not goaways(polite.frames)
        await polite.aclose()
        # 10,000 HEADERS + RST_STREAM pairs
        enc = hpack.Encoder()
        pairs = b"".join(headers(enc, i, "/healthz") + rst(i) for i in range(1, 20_001, 2))
        frames = await exchange(server, PREFACE + SETTINGS + pairs, timeout_s=10)
        found = goaways(frames)
        assert found, f"no GOAWAY; {len(frames)} frames, then EOF"
        assert found[-1].error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert found[-1].last_stream_id < 19_999
        await assert_served(server)

    trio.run(main)
    assert summary(server)["rapid_reset_goaways"] == 1


# --- control-frame flood ----------------------------------------------------------------------
PINGS, BURST = 10_000, 200  # bursts below the cap: only a peer that does not read piles them up


async def ping_flood(peer: RawH2Peer) -> None:
    await peer.send(PREFACE + SETTINGS)
    for k in range(0, PINGS, BURST):
        await peer.send(b"".join(ping(k + i) for i in range(BURST)))
        await trio.sleep(0.002)


def test_ping_flood_from_a_peer_that_does_not_read_gets_goaway_enhance_your_calm(serve):
    # With the kernel's default TCP_NOTSENT_LOWAT (unbounded) the socket's send buffer takes
    # up to net.ipv4.tcp_wmem's maximum (4 MiB) of PING ACKs before anything queues in the
    # server; a 16 KiB bound makes the socket refuse them early, so the server's own queue —
    # the bound under test — fills within the flood.
    server = serve("--h2-max-queued-control", "1000", "--notsent-lowat", "16384")

    def acks(fs: list[Frame]) -> int:
        return sum(1 for f in fs if isinstance(f, PingFrame))

    async def main() -> None:
        # control: the same flood from a peer that reads is answered in full
        reader = await RawH2Peer.connect(server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ping_flood, reader)
            await reader.read_until(lambda fs: acks(fs) == PINGS or bool(goaways(fs)), 10)
        assert acks(reader.frames) == PINGS and not goaways(reader.frames)
        await reader.aclose()
        # a peer with a tiny receive buffer that never reads while it floods
        peer = await RawH2Peer.connect(server, rcvbuf=4096)
        with trio.fail_after(10):
            await ping_flood(peer)
        await peer.read_until(lambda fs: bool(goaways(fs)), 10)
        found = goaways(peer.frames)
        assert found, f"no GOAWAY after {acks(peer.frames)} PING ACKs"
        assert found[-1].error_code == ErrorCodes.ENHANCE_YOUR_CALM
        assert acks(peer.frames) < PINGS
        await peer.aclose()
        await assert_served(server)

    trio.run(main)
    assert summary(server)["control_flood_goaways"] == 1


# --- the flags --------------------------------------------------------------------------------
@pytest.mark.parametrize("flag", ["--h2-idle-timeout", "--h2-max-buffered-total"])
def test_a_bound_that_is_not_positive_is_bad_input(cert_dir, flag):
    argv = [sys.executable, "-m", "lab", "serve", "--port", "0", "--cert-dir", str(cert_dir)]
    p = subprocess.run([*argv, flag, "0"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 2
    assert f"{flag} must be > 0" in p.stderr


# --- the pure parts ---------------------------------------------------------------------------
def _feed_split(f: GoAwayFilter, wire: bytes, cuts: list[int]) -> tuple[bytes, list]:
    out, found, prev = b"", [], 0
    for cut in [*cuts, len(wire)]:
        passed, g = f.feed(wire[prev:cut])
        out, found, prev = out + passed, found + g, cut
    return out, found


@pytest.mark.parametrize("case", [c for c in FRAME_RULES if c != "goaway_16_mb"])
def test_frame_rules_are_found_at_any_split(case):
    wire, code = FRAME_RULES[case]
    rng = random.Random(case)
    for _ in range(100):
        cuts = sorted(rng.sample(range(1, len(wire)), min(len(wire) - 1, rng.randint(0, 8))))
        with pytest.raises(FrameRuleError) as e:
            _feed_split(GoAwayFilter(server_side=True, max_frame_bytes=16_384), wire, cuts)
        assert e.value.error_code == code


def test_the_16_mb_goaway_is_refused_from_its_header_alone():
    with pytest.raises(FrameRuleError) as e:
        GoAwayFilter(server_side=True, max_frame_bytes=16_384).feed(
            PREFACE + SETTINGS + goaway(payload_bytes=2**24 - 1)[:20]
        )
    assert e.value.error_code == ErrorCodes.FRAME_SIZE_ERROR


def test_strict_filter_passes_a_conformant_stream_and_still_takes_goaway_out():
    ack = frame_header(0, 0x4, 0x1, 0)
    wire = PREFACE + SETTINGS + ack + ping(1) + goaway() + rst(1)
    expected = PREFACE + SETTINGS + ack + ping(1) + rst(1)
    rng = random.Random(2)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(wire)), rng.randint(0, 10)))
        f = GoAwayFilter(server_side=True, max_frame_bytes=16_384)
        out, found = _feed_split(f, wire, cuts)
        assert out == expected
        assert [(g.last_stream_id, g.error_code) for g in found] == [(0, 0)]
    # the lenient (client) filter keeps its old reading of a short GOAWAY
    _, found = GoAwayFilter().feed(SETTINGS + goaway(payload_bytes=4))
    assert [g.error_code for g in found] == [ErrorCodes.PROTOCOL_ERROR]


def test_count_control_frames_skips_data_and_headers():
    enc = hpack.Encoder()
    data = DataFrame(1)
    data.data = b"x" * 100
    wire = SETTINGS + headers(enc, 1, "/") + data.serialize() + ping(1) + rst(1) + goaway()
    assert count_control_frames(wire) == 4


def test_reset_rate_allows_bursts_of_the_limit_refilled_per_second():
    r = ResetRate(10, now=0.0)
    assert all(r.take(0.0) for _ in range(10))
    assert not r.take(0.0)
    assert [r.take(0.5) for _ in range(6)] == [True] * 5 + [False]
    assert all(r.take(100.0) for _ in range(10)) and not r.take(100.0)  # no more than a burst


def test_body_budget_charges_the_parent_and_gives_everything_back():
    total = BodyBudget(100)
    a, b = BodyBudget(80, total), BodyBudget(80, total)
    assert a.reserve(60) and not a.reserve(30)  # over its own limit
    assert not b.reserve(50)  # over the total: 60 + 50 > 100
    assert b.reserve(40) and total.used_bytes == 100
    a.release(10)
    assert (a.used_bytes, total.used_bytes) == (50, 90)
    a.close()
    b.release(1000)  # never more than it holds
    assert (a.used_bytes, b.used_bytes, total.used_bytes, total.peak_bytes) == (0, 0, 0, 100)
