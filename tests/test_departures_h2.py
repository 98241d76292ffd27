"""Issue 11.4 (h2): when each watch event's bytes left the reference server.

Pure: the transmit-report parser, the clock offset, the TLS 1.3 record arithmetic and the
`DepartureTracker` on known answers (a report key exactly at an event's last byte, keys that
wrap at 2**32, reports that come before the event is known) and against a brute-force model.
Real: the kernel's own error-queue bytes on a loopback TCP pair; OpenSSL's records as the model
says; then `lab serve` with LAB_DEPARTURE_LOG and real watches over TLS: one line per event,
the stamps the client received, sent ≤ left ≤ received, small queue times unloaded — and large
ones when the client stops reading beside a bulk download on the same connection.
"""

from __future__ import annotations

import io
import math
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from test_server import ServeProcess

from lab.http.client import open_connection
from lab.http.departure_log import DEPARTURE_LOG_ENV, DEPARTURE_LOG_HEADER, DepartureLog
from lab.http.tcp import TCP_NOTSENT_LOWAT
from lab.http.tls import client_ssl_context, ensure_certs, server_ssl_context
from lab.http.tx_stamped_stream import TxStampedStream, enable_tx_timestamps
from lab.http.tx_timestamps import (
    ERRQUEUE_ANCILLARY_BYTES,
    IP_RECVERR,
    KEY_MODULUS,
    SO_TIMESTAMPING_OLD,
    SOL_IP,
    SOL_SOCKET,
    TLS13_RECORD_OVERHEAD_BYTES,
    TLS13_RECORD_PLAINTEXT_BYTES,
    Departed,
    DepartureTracker,
    TxReport,
    clock_offset_ns,
    parse_tx_report,
    tls13_record_ends,
)
from lab.http.types import ConnectOptions
from lab.workloads.base import Row
from lab.workloads.watch import parse_event, watch_path, watch_streams


# --- pure: parsing -------------------------------------------------------------------------------
def _timestamping(sec: int, nsec: int) -> tuple[int, int, bytes]:
    return (SOL_SOCKET, SO_TIMESTAMPING_OLD, struct.pack("=qqqqqq", sec, nsec, 0, 0, 0, 0))


def _recverr(key: int, errno_: int = 42, origin: int = 4, info: int = 0) -> tuple[int, int, bytes]:
    ee = struct.pack("=IBBBBII", errno_, origin, 0, 0, 0, info, key)
    return (SOL_IP, IP_RECVERR, ee + bytes(16))


def test_parse_tx_report_known_answer():
    anc = [_timestamping(1_796_134_462, 774_039_913), _recverr(5099)]
    assert parse_tx_report(anc) == TxReport(5099, 1_796_134_462_774_039_913)
    assert parse_tx_report(list(reversed(anc))) == TxReport(5099, 1_796_134_462_774_039_913)


@pytest.mark.parametrize(
    "anc",
    [
        [_timestamping(1, 2)],  # no key
        [_recverr(7)],  # no time
        [_timestamping(1, 2), _recverr(7, errno_=111)],  # a real socket error
        [_timestamping(1, 2), _recverr(7, origin=2)],  # ICMP, not timestamping
        [_timestamping(1, 2), _recverr(7, info=2)],  # SCM_TSTAMP_ACK, not SND
        [_timestamping(0, 0), _recverr(7)],  # no software stamp
        [(SOL_SOCKET, SO_TIMESTAMPING_OLD, b"\0" * 8), _recverr(7)],  # truncated
    ],
)
def test_parse_tx_report_rejects_other_messages(anc):
    assert parse_tx_report(anc) is None


def test_clock_offset_is_the_midpoint_with_half_the_gap_as_error():
    assert clock_offset_ns(1000, 5_000_500, 2000) == (5_000_500 - 1500, 500)
    assert clock_offset_ns(1000, 9000, 1001) == (8000, 1)


# --- pure: TLS records -------------------------------------------------------------------------
def test_tls13_record_ends_known_answers():
    # lengths measured from OpenSSL 3 (TLS 1.3, AES-GCM): +22 bytes per 16384-byte record
    assert tls13_record_ends(100, 122, [1, 100]) == [122, 122]
    assert tls13_record_ends(16385, 16429, [16384, 16385]) == [16406, 16429]
    assert tls13_record_ends(40000, 40066, [1, 16384, 16385, 32769, 40000]) == [
        16406,
        16406,
        32812,
        40066,
        40066,
    ]
    assert tls13_record_ends(1, 533, [1]) is None  # session tickets rode along
    assert tls13_record_ends(100, 123, [1]) is None
    with pytest.raises(ValueError):
        tls13_record_ends(100, 122, [101])


def test_openssl_makes_the_records_the_model_says(tmp_path):
    """The arithmetic above is what this OpenSSL really writes through trio's SSLStream (else
    every event falls back to its batch's end)."""
    paths = ensure_certs(tmp_path)
    writes: list[int] = []

    class Spy(trio.abc.Stream):
        def __init__(self, inner: trio.abc.Stream) -> None:
            self.inner = inner

        async def send_all(self, data: bytes | bytearray | memoryview) -> None:
            writes.append(len(data))
            await self.inner.send_all(data)

        async def wait_send_all_might_not_block(self) -> None:
            await self.inner.wait_send_all_might_not_block()

        async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
            return await self.inner.receive_some(max_bytes)

        async def aclose(self) -> None:
            await self.inner.aclose()

    async def main() -> None:
        a, b = trio.testing.memory_stream_pair()
        ctx = server_ssl_context(paths.cert, paths.key)
        server = trio.SSLStream(Spy(a), ctx, server_side=True)
        client = trio.SSLStream(
            b, client_ssl_context(tmp_path / "ca.pem"), server_hostname="localhost"
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.do_handshake)
            nursery.start_soon(client.do_handshake)

        async def read_all() -> None:
            while await client.receive_some(1 << 20):
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await server.send_all(b"x")  # the first write carries the session tickets
            assert tls13_record_ends(1, writes[-1], [1]) is None
            for n in (1, 100, 16384, 16385, 40000, 1 << 20):
                writes.clear()
                await server.send_all(b"x" * n)
                assert len(writes) == 1, writes  # one transport write per TLS write
                assert tls13_record_ends(n, writes[0], [n]) == [writes[0]], n
            nursery.cancel_scope.cancel()

    trio.run(main)


# --- pure: the tracker -------------------------------------------------------------------------
def test_tracker_event_departs_with_the_first_report_at_or_past_its_last_byte():
    t = DepartureTracker()
    assert t.pending(10, 100) == []
    assert t.pending(20, 300) == []
    assert t.reported(98, 1000) == []  # one byte short of event 10's end
    assert t.reported(99, 1100) == [Departed(10, 1100)]  # exactly its last byte
    assert t.reported(500, 1200) == [Departed(20, 1200)]
    assert t.waiting == 0


def test_tracker_report_before_the_event_is_known():
    t = DepartureTracker()
    for key, when in ((99, 1000), (199, 1100), (299, 1200)):
        assert t.reported(key, when) == []
    assert t.pending(1, 150) == [Departed(1, 1100)]  # key 199 is the first ≥ 149
    assert t.pending(2, 200) == [Departed(2, 1100)]  # key 199 is exactly its last byte
    assert t.pending(3, 300) == [Departed(3, 1200)]  # the latest key is exactly its last byte
    assert t.pending(4, 301) == []
    assert t.reported(299, 1300) == []  # a repeated key (retransmission) changes nothing
    assert t.reported(300, 1400) == [Departed(4, 1400)]


def test_tracker_keys_wrap_at_2_to_the_32():
    t = DepartureTracker()
    top = 0
    for step in range(1, 5):  # climb to just below 2**32 in 1 GiB strides
        top = step * (1 << 30) - 10
        t.reported(top % KEY_MODULUS, step)
    assert top == KEY_MODULUS - 10
    assert t.pending(7, KEY_MODULUS + 100) == []  # ends past the wrap
    assert t.reported((KEY_MODULUS + 50) % KEY_MODULUS, 10) == []  # 50 after the wrap: short
    assert t.reported((KEY_MODULUS + 99) % KEY_MODULUS, 11) == [Departed(7, 11)]
    with pytest.raises(ValueError):
        t.reported(KEY_MODULUS, 12)


def test_tracker_bounds_what_waits():
    t = DepartureTracker(max_pending=3)
    for i in range(5):
        t.pending(i, 10 + i)
    assert (t.waiting, t.dropped) == (3, 2)
    assert [d.sent_ns for d in t.reported(100, 5)] == [0, 1, 2]
    with pytest.raises(ValueError):
        t.pending(9, 0)
    t.pending(10, 500)
    with pytest.raises(ValueError):
        t.pending(11, 400)  # offsets never go back


_steps = st.one_of(st.integers(0, 2), st.integers(0, 3000))  # small ones make equal offsets


@st.composite
def _timelines(draw: st.DrawFn) -> list[tuple[str, int]]:
    """Interleaved ("event", end) and ("report", key) steps with rising ends and keys."""
    steps: list[tuple[str, int]] = []
    end = key = 0
    for _ in range(draw(st.integers(1, 40))):
        if draw(st.booleans()):
            end += draw(_steps)
            steps.append(("event", max(end, 1)))
        else:
            key += draw(_steps)
            steps.append(("report", key))
    return steps


@settings(max_examples=300, deadline=None)
@given(_timelines(), st.integers(0, KEY_MODULUS * 3))
def test_tracker_matches_a_brute_force_model(steps, shift):
    """Whatever the interleaving, and wherever the u32 key wraps (offsets start at `shift`,
    reached by reports 1 GiB apart), each event departs at the first new report, in arrival
    order, whose key ≥ its end − 1."""
    t = DepartureTracker()
    reports: list[tuple[int, int]] = []  # (unwrapped key, time) of new keys, in arrival order
    climb = 0
    while climb + (1 << 30) < shift:
        climb += 1 << 30
        reports.append((climb, -climb))
        assert t.reported(climb % KEY_MODULUS, -climb) == []
    got: dict[int, int] = {}
    ends: list[int] = []
    for clock, (kind, value) in enumerate(steps):
        at = value + shift
        if kind == "event":
            ends.append(at)
            departed = t.pending(len(ends) - 1, at)
        else:
            if not reports or at > reports[-1][0]:
                reports.append((at, clock))
            departed = t.reported(at % KEY_MODULUS, clock)
        for d in departed:
            assert d.sent_ns not in got
            got[d.sent_ns] = d.left_ns
    want = {}
    for i, end in enumerate(ends):
        first = next((when for key, when in reports if key >= end - 1), None)
        if first is not None:
            want[i] = first
    assert got == want


# --- real: the kernel's reports ----------------------------------------------------------------
def test_kernel_reports_parse_to_the_last_byte_of_each_send():
    lst = socket.create_server(("127.0.0.1", 0))
    with lst, socket.create_connection(lst.getsockname()) as client:
        server, _ = lst.accept()
        with server:
            assert enable_tx_timestamps(server)
            before = time.time_ns()
            for n in (100, 5000, 20000):
                server.sendall(b"x" * n)
            got = 0
            while got < 25100:
                got += len(client.recv(1 << 20))
            reports: list[TxReport] = []
            deadline = time.monotonic() + 2
            while len(reports) < 3 and time.monotonic() < deadline:
                try:
                    _d, anc, _f, _a = server.recvmsg(
                        0, ERRQUEUE_ANCILLARY_BYTES, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT
                    )
                except BlockingIOError:
                    time.sleep(0.01)
                    continue
                report = parse_tx_report(anc)
                assert report is not None, anc
                reports.append(report)
            after = time.time_ns()
    assert [r.key for r in reports] == [99, 5099, 25099]
    assert all(before <= r.realtime_ns <= after for r in reports)


SO_SNDBUFFORCE = 32  # asm-generic/socket.h; Python lacks it (root may exceed wmem_max)


def test_stamped_stream_cuts_its_sends_where_event_records_end():
    """A 1 MB TLS write (fake ciphertext of the right length) that the socket takes in one
    call while the peer reads nothing for 300 ms: the event in its first record left at once
    (the send was cut there), the one at its end only once the peer read."""
    plain = 1_000_000
    records = -(-plain // TLS13_RECORD_PLAINTEXT_BYTES)
    cipher = bytes(plain + records * TLS13_RECORD_OVERHEAD_BYTES)
    lst = socket.create_server(("127.0.0.1", 0))
    peer = socket.socket()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # a small window
    peer.connect(lst.getsockname())
    server_sock, _ = lst.accept()
    lst.close()
    server_sock.setsockopt(socket.SOL_SOCKET, SO_SNDBUFFORCE, 8 << 20)  # takes it all
    out = io.StringIO()

    def read_later() -> None:
        time.sleep(0.3)
        got = 0
        while got < len(cipher):
            got += len(peer.recv(1 << 20))

    reader = threading.Thread(target=read_later)

    async def main() -> tuple[int, TxStampedStream]:
        sock_stream = trio.SocketStream(trio.socket.from_stdlib_socket(server_sock))
        # trio sets TCP_NOTSENT_LOWAT to 16 KiB: lift it so one send call takes the megabyte
        sock_stream.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, 2**31 - 1)
        stream = TxStampedStream.open(sock_stream, DepartureLog(out))
        assert stream is not None
        start = time.monotonic_ns()
        reader.start()
        stream.expect(plain, [(1, 100), (2, plain)])
        await stream.send_all(cipher)
        stream.batch_sent()
        assert time.monotonic_ns() - start < 200e6, "the socket did not take it in one go"
        with trio.fail_after(5):
            while stream.logged < 2:
                await trio.sleep(0.01)
                stream.drain()
        await stream.aclose()
        return start, stream

    try:
        start, stream = trio.run(main)
    finally:
        reader.join()
        peer.close()
    assert stream.batch_bounded == 0
    left = {int(s): int(t) for _, s, t in (ln.split(",") for ln in out.getvalue().split()[1:])}
    assert left[1] - start < 100e6, (left[1] - start) / 1e6
    assert left[2] - start > 250e6, (left[2] - start) / 1e6


# --- real: the reference server ----------------------------------------------------------------
@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    ensure_certs(d)
    return d


@pytest.fixture
def stamping_server(cert_dir, tmp_path, monkeypatch) -> Iterator[tuple[ServeProcess, Path]]:
    log_path = tmp_path / "departures.csv"
    monkeypatch.setenv(DEPARTURE_LOG_ENV, str(log_path))
    p = ServeProcess(cert_dir)
    try:
        yield p, log_path
    finally:
        p.stop()


def _departures(path: Path, want: int) -> dict[int, int]:
    """sent_ns → left_ns of the h2 lines, once `want` of them are there (2 s at most)."""
    deadline = time.monotonic() + 2
    while True:
        text = path.read_text()
        lines = text.splitlines()[1:]
        if len(lines) >= want or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert text.startswith(DEPARTURE_LOG_HEADER)
    out: dict[int, int] = {}
    for line in lines:
        protocol, sent, left = line.split(",")
        assert protocol == "h2"
        assert int(sent) not in out, f"two lines for {sent}"
        out[int(sent)] = int(left)
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def test_unloaded_watch_every_event_has_its_departure(stamping_server):
    server, log_path = stamping_server
    opts = ConnectOptions("h2", "127.0.0.1", server.port, ca_file=server.cert_dir / "ca.pem")
    rows: list[Row] = []

    async def main() -> None:
        async with open_connection(opts) as conn, trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(watch_streams, conn, i, 10, 50, rows)

    trio.run(main)
    assert len(rows) == 200
    left = _departures(log_path, len(rows))
    assert sorted(left) == sorted(int(r["sent_ns"]) for r in rows)  # one line per event
    queue_ms = []
    for r in rows:
        sent, received = int(r["sent_ns"]), int(r["received_ns"])
        assert sent <= left[sent] <= received, (sent, left[sent], received)
        queue_ms.append((left[sent] - sent) / 1e6)
    p50, p99 = _percentile(queue_ms, 0.5), _percentile(queue_ms, 0.99)
    print(f"unloaded queue time p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    assert p50 < 5


class _RawClient:
    """Blocking h2 client over the stdlib's ssl with 16 MiB windows; reads when told to."""

    WINDOW = 16 * 1024 * 1024

    def __init__(self, port: int, ca: Path) -> None:
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.tls = ctx.wrap_socket(raw, server_hostname="localhost")
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.initiate_connection()
        self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: self.WINDOW})
        self.conn.increment_flow_control_window(self.WINDOW)
        self.tls.sendall(self.conn.data_to_send())
        self.lines: dict[int, bytearray] = {}
        self.ended: set[int] = set()

    def get(self, path: str) -> int:
        sid = self.conn.get_next_available_stream_id()
        head = [(":method", "GET"), (":scheme", "https"), (":authority", "localhost")]
        self.conn.send_headers(sid, [*head, (":path", path)], end_stream=True)
        self.tls.sendall(self.conn.data_to_send())
        self.lines[sid] = bytearray()
        return sid

    def read_until(
        self, deadline: float, watch: int, events: list[tuple[int, int]], chunk: int = 1 << 20
    ) -> None:
        """Read (acknowledging all DATA) until `deadline` or the end of stream `watch`;
        append (sent_ns, received_ns) of each complete watch line to `events`."""
        while time.monotonic() < deadline and watch not in self.ended:
            self.tls.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = self.tls.recv(chunk)
            except TimeoutError:
                continue
            now = time.monotonic_ns()
            if not data:
                return
            for ev in self.conn.receive_data(data):
                if isinstance(ev, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    if ev.stream_id == watch:
                        buf = self.lines[watch]
                        buf += ev.data
                        *done, rest = bytes(buf).split(b"\n")
                        self.lines[watch] = bytearray(rest)
                        events.extend((parse_event(line)[1], now) for line in done if line)
                elif isinstance(ev, h2.events.StreamEnded):
                    self.ended.add(ev.stream_id)
            self.tls.sendall(self.conn.data_to_send())
            if chunk < 1 << 20:
                return  # one read per call


def test_events_behind_a_slow_read_bulk_download_queue_at_the_sender(
    cert_dir, tmp_path, monkeypatch
):
    """A 10 ms watch beside a 200 MB download on one connection, the client reading 16 KiB
    every 8 ms (~2 MB/s) and the server at TCP_NOTSENT_LOWAT 16 KiB: each event's bytes wait
    behind a batch and the socket's unsent bytes until the window opens — at the sender."""
    monkeypatch.setenv(DEPARTURE_LOG_ENV, str(log_path := tmp_path / "departures.csv"))
    server = ServeProcess(cert_dir, "--notsent-lowat", "16384")
    c = _RawClient(server.port, server.cert_dir / "ca.pem")
    events: list[tuple[int, int]] = []
    try:
        c.get("/bytes/200000000")
        watch = c.get(watch_path(10, 40, "x"))
        deadline = time.monotonic() + 15
        while watch not in c.ended and time.monotonic() < deadline:
            c.read_until(time.monotonic() + 0.008, watch, events, 16384)
            time.sleep(0.008)
        assert watch in c.ended, f"{len(events)} events"
    finally:
        c.tls.close()
        server.stop()
    assert len(events) == 40
    left = _departures(log_path, 40)
    queue_ms = []
    for sent, received in events:
        assert sent in left, sent
        assert sent <= left[sent] <= received, (sent, left[sent], received)
        queue_ms.append((left[sent] - sent) / 1e6)
    p50, p99 = _percentile(queue_ms, 0.5), _percentile(queue_ms, 0.99)
    print(f"slow-reader queue time p50 {p50:.3f} ms, p99 {p99:.3f} ms")
    assert p50 > 5  # well above the unloaded case (< 5 ms, ~0.3 ms here)
