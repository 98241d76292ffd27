"""Issue 11.4 (h2): when each watch event's bytes left the reference server — the server logs
where each event's TLS record ends in the TCP stream, the emulator logs when each byte of the
downlink was first transmitted, the runner joins the two.

Pure: the TLS 1.3 record arithmetic; the join on known answers (the first transmission counts, a
later record does not move it, two connections apart, a port reused, an event past the last
record left out); the offset log's reader. Real: OpenSSL's records as the model says; `lab serve`
with LAB_TCP_OFFSET_LOG and a client that reads the raw TCP stream record by record — each
event's logged offset is exactly where it first became readable; then `lab run` through the
emulator on a congestion-limited and an unloaded watch: sent ≤ left ≤ received for every event,
large queue times when congested and small ones when not.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import h2.settings
import numpy as np
import pandas as pd
import pytest
import trio
import trio.testing
from labrun import run_scenario_text, skip_without_netns
from test_server import ServeProcess

from lab.errors import RunError
from lab.http.departure_log import TCP_OFFSET_LOG_ENV, TCP_OFFSET_LOG_HEADER, TcpOffsetLog
from lab.http.tls import client_ssl_context, ensure_certs, server_ssl_context
from lab.http.tls_records import tls13_record_ends
from lab.run.departures import read_tcp_offset_log, tcp_departures
from lab.workloads.watch import parse_event, watch_path

MS = 1_000_000


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


# --- pure: the join ----------------------------------------------------------------------------
def _offsets(*rows: tuple[int, int, int]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["sent_ns", "client_port", "end_offset"], dtype="int64")


def _sent(*rows: tuple[int, int, int]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["time_ns", "client_port", "end_offset"], dtype="int64")


def _left(frame: pd.DataFrame) -> dict[int, int]:
    assert list(frame.columns) == ["sent_ns", "left_ns"]
    assert frame.dtypes.tolist() == [np.dtype("int64")] * 2
    return dict(zip(frame["sent_ns"].tolist(), frame["left_ns"].tolist(), strict=True))


def test_an_event_leaves_with_the_first_packet_reaching_its_end():
    sent = _sent((100, 7, 1448), (200, 7, 2896), (300, 7, 4344))
    offsets = _offsets((10, 7, 1448), (20, 7, 1449), (30, 7, 2896), (40, 7, 4000))
    assert _left(tcp_departures(offsets, sent)) == {10: 100, 20: 200, 30: 200, 40: 300}


def test_a_later_record_does_not_move_a_departure():
    """The emulator logs first transmissions only; even were a retransmission logged again
    with the same end, the earliest record counts — and records ending further on change
    nothing for an event they cover too."""
    sent = _sent((100, 7, 1000), (500, 7, 1000), (600, 7, 5000))
    assert _left(tcp_departures(_offsets((10, 7, 1000)), sent)) == {10: 100}
    unordered = sent.iloc[[2, 1, 0]]
    assert _left(tcp_departures(_offsets((10, 7, 1000)), unordered)) == {10: 100}


def test_two_connections_are_kept_apart_by_port():
    sent = _sent((100, 7, 500), (150, 9, 800), (200, 7, 1000), (250, 9, 1600))
    offsets = _offsets((10, 9, 700), (11, 7, 700), (12, 9, 1500), (13, 7, 1000))
    assert _left(tcp_departures(offsets, sent)) == {10: 150, 11: 200, 12: 250, 13: 200}


def test_a_port_reused_by_a_later_connection_starts_over():
    """A new connection on the same port: its records restart low; its events match its own
    records, an earlier connection's events the earlier ones."""
    sent = _sent((100, 7, 300), (200, 7, 2000), (1000, 7, 200), (1100, 7, 900))
    offsets = _offsets((50, 7, 1500), (1050, 7, 800))
    assert _left(tcp_departures(offsets, sent)) == {50: 200, 1050: 1100}


def test_events_without_a_record_are_left_out():
    sent = _sent((100, 7, 1000))
    offsets = _offsets((10, 7, 900), (20, 7, 1001), (30, 8, 10))  # past the last; no such port
    assert _left(tcp_departures(offsets, sent)) == {10: 100}
    assert _left(tcp_departures(offsets, _sent())) == {}
    assert _left(tcp_departures(_offsets(), sent)) == {}


# --- pure: the offset log ----------------------------------------------------------------------
def test_offset_log_round_trip_and_partial_last_line(tmp_path):
    path = tmp_path / "tcp-offsets.csv"
    with open(path, "w", encoding="ascii") as f:
        log = TcpOffsetLog(f)
        log.record(5, 40000, 122)
        log.record(6, 40002, 244)
        with pytest.raises(ValueError):
            log.record(7, 40000, 0)
        f.write("8,400")  # the server is mid-line
    got = read_tcp_offset_log(path)
    assert got is not None
    assert got.to_dict("list") == {
        "sent_ns": [5, 6],
        "client_port": [40000, 40002],
        "end_offset": [122, 244],
    }
    assert read_tcp_offset_log(tmp_path / "absent.csv") is None
    (header_only := tmp_path / "h.csv").write_text(TCP_OFFSET_LOG_HEADER)
    assert read_tcp_offset_log(header_only) is None


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("protocol,sent_ns,left_ns\nh2,1,2\n", "not a TCP offset log"),
        (TCP_OFFSET_LOG_HEADER + "1,2,x\n", "damaged"),
        (TCP_OFFSET_LOG_HEADER + "1,2\n", "damaged"),
    ],
)
def test_a_damaged_offset_log_is_one_line_naming_the_file(tmp_path, text, match):
    path = tmp_path / "tcp-offsets.csv"
    path.write_text(text)
    with pytest.raises(RunError, match=match) as e:
        read_tcp_offset_log(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


# --- real: the server's offsets against the bytes the client read -----------------------------
@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    ensure_certs(d)
    return d


@pytest.fixture
def offset_server(cert_dir, tmp_path, monkeypatch) -> Iterator[tuple[ServeProcess, Path]]:
    log_path = tmp_path / "tcp-offsets.csv"
    monkeypatch.setenv(TCP_OFFSET_LOG_ENV, str(log_path))
    p = ServeProcess(cert_dir)
    try:
        yield p, log_path
    finally:
        p.stop()


class _RecordClient:
    """A blocking h2 client over a MemoryBIO TLS object that feeds the TLS engine one whole
    record at a time, counting the raw TCP bytes from the first: for each watch line, the
    stream offset at which it first became readable (the end of the record that completed it)."""

    def __init__(self, port: int, ca: Path) -> None:
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.set_alpn_protocols(["h2"])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")
        self.raw = bytearray()  # received, not yet fed (an incomplete record)
        self.offset = 0  # raw bytes fed so far = the stream offset of the next byte
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.lines: dict[int, bytearray] = {}
        self.readable_at: dict[int, int] = {}  # sent_ns → offset where the line was complete
        self.ended: set[int] = set()
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._feed_one_record()
        self.conn.initiate_connection()
        self._send_h2()

    def _flush(self) -> None:
        if data := self.outgoing.read():
            self.sock.sendall(data)

    def _feed_one_record(self) -> None:
        """Receive until one whole TLS record is buffered, then feed exactly that record."""
        while len(self.raw) < 5 or len(self.raw) < 5 + struct.unpack_from("!H", self.raw, 3)[0]:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed")
            self.raw += data
        size = 5 + struct.unpack_from("!H", self.raw, 3)[0]
        self.incoming.write(bytes(self.raw[:size]))
        del self.raw[:size]
        self.offset += size

    def _send_h2(self) -> None:
        self.tls.write(self.conn.data_to_send())
        self._flush()

    def get(self, path: str) -> int:
        sid = self.conn.get_next_available_stream_id()
        head = [(":method", "GET"), (":scheme", "https"), (":authority", "localhost")]
        self.conn.send_headers(sid, [*head, (":path", path)], end_stream=True)
        self.lines[sid] = bytearray()
        self._send_h2()
        return sid

    def run_until_ended(self, streams: set[int], deadline_s: float = 10) -> None:
        deadline = time.monotonic() + deadline_s
        while not streams <= self.ended and time.monotonic() < deadline:
            self._feed_one_record()
            plain = bytearray()
            while True:
                try:
                    plain += self.tls.read(1 << 20)
                except ssl.SSLWantReadError:
                    break
            for ev in self.conn.receive_data(bytes(plain)):
                if isinstance(ev, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    buf = self.lines[ev.stream_id]
                    buf += ev.data
                    *done, rest = bytes(buf).split(b"\n")
                    self.lines[ev.stream_id] = bytearray(rest)
                    for line in done:
                        if line:
                            self.readable_at[parse_event(line)[1]] = self.offset
                elif isinstance(ev, h2.events.StreamEnded):
                    self.ended.add(ev.stream_id)
            self._send_h2()


def _offset_rows(path: Path, want: int) -> pd.DataFrame:
    deadline = time.monotonic() + 2
    while True:
        got = read_tcp_offset_log(path)
        if (got is not None and len(got) >= want) or time.monotonic() > deadline:
            assert got is not None
            return got
        time.sleep(0.02)


def test_each_logged_offset_is_where_the_client_could_first_read_the_event(offset_server):
    server, log_path = offset_server
    c = _RecordClient(server.port, server.cert_dir / "ca.pem")
    try:
        port = c.sock.getsockname()[1]
        watches = {c.get(watch_path(10, 30, f"ns{i}")) for i in range(3)}
        c.run_until_ended(watches)
    finally:
        c.sock.close()
    assert watches <= c.ended and len(c.readable_at) == 90
    logged = _offset_rows(log_path, 90)
    assert set(logged["client_port"]) == {port}
    assert logged["sent_ns"].is_unique
    assert set(logged["sent_ns"]) == set(c.readable_at)
    got = dict(zip(logged["sent_ns"], logged["end_offset"], strict=True))
    assert got == c.readable_at  # to the byte: the end of the event's own record


# --- real: the emulator's view, through `lab run` ---------------------------------------------
CONGESTED_AND_UNLOADED = """\
name: tcpdep
seed: 11
repeat: 1
uplink: {delay_ms: 25, rate_mbit: 100}
downlink: {delay_ms: 25, rate_mbit: 100, loss: {model: isolated, every_ms: 500}}
protocols: [h2]
server: reference
workloads:
  - {kind: watch, streams: 64, interval_ms: 20, duration_s: 3}
matrix:
  watch.streams: [64, 4]
"""


@pytest.fixture(scope="module")
def emulator_run(tmp_path_factory: pytest.TempPathFactory):
    skip_without_netns()
    d = tmp_path_factory.mktemp("tcpdep")
    return run_scenario_text(d, "tcpdep", CONGESTED_AND_UNLOADED)


def _metric(samples: pd.DataFrame, metric: str) -> dict[int, float]:
    rows = samples[(samples["metric"] == metric) & (samples["protocol"] == "h2")]
    return {int(k): float(v) for k, v in rows.groupby("watch.streams")["value"].median().items()}


@pytest.mark.slow
@pytest.mark.netns
def test_emulator_departures_are_consistent_and_split_congestion_from_an_open_path(emulator_run):
    samples = emulator_run.results.samples
    events = samples[(samples["metric"] == "event_latency_ms") & (samples["protocol"] == "h2")]
    n_events = events.groupby("watch.streams").size().to_dict()
    matched = _metric(samples, "departures_matched")
    inconsistent = _metric(samples, "departures_inconsistent")
    p50, p99 = _metric(samples, "queue_p50_ms"), _metric(samples, "queue_p99_ms")
    share = _metric(samples, "queue_share")
    print(f"events {n_events} matched {matched} inconsistent {inconsistent}")
    print(f"queue p50 {p50} p99 {p99} ms, queue_share {share}")
    for streams in (64, 4):
        assert inconsistent[streams] == 0  # sent ≤ left ≤ received for every event
        assert matched[streams] == n_events[streams]  # every event has its departure
    assert p50[4] < 5  # an open path: the bytes leave at once
    assert share[4] < 0.1  # its few stalls are the losses': the network's
    assert p99[64] > 20  # behind the congestion window: at the sender ...
    assert share[64] > 0.1 and share[64] > 4 * share[4]  # ... and that is where its stalls went
