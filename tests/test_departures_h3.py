"""Departure stamps of the reference HTTP/3 server (issue 11, item 4: where the time went).

The tracker in virtual offsets (known answers), then the real server on loopback with the lab's
h3 client: every watch event is logged once, stamped with the client's `sent_ns`, and
sent_ns ≤ left_ns ≤ received_ns; queue time (left − sent) is small on an idle connection and
grows when a bulk download on the same connection holds the congestion window.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import json
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import trio

from lab.http import app
from lab.http.departure_log import DEPARTURE_LOG_ENV, DEPARTURE_LOG_HEADER, departure_log
from lab.http.h3_client import open_h3
from lab.http.h3_server import serve_h3
from lab.http.quic_departures import DepartureTracker
from lab.http.quic_engine import QuicEngineName
from lab.http.settings import QuicSettings, ServerConfig
from lab.http.tls import CertPaths, ensure_certs
from lab.http.types import Connection, ConnectOptions
from lab.link.emulator import EmulatorProcess
from lab.link.spec import DirectionSpec, LinkSpec, QueueSpec
from lab.net import nsenter
from lab.net.topology import Topology
from lab.workloads.watch import LineSplitter

pytestmark = pytest.mark.timeout(120)

NS = "x"


# --- the tracker ---------------------------------------------------------------------------
def test_event_departs_at_the_first_transmit_that_covers_its_end_offset() -> None:
    t = DepartureTracker()
    t.pending(0, 100, sent_ns=1)
    t.pending(0, 250, sent_ns=2)
    t.pending(4, 80, sent_ns=3)
    assert sorted(t.streams()) == [0, 4]
    assert t.sent({0: 99, 4: 0}) == []  # one byte short: not yet
    assert t.sent({0: 100, 4: 79}) == [1]  # exactly its last byte
    assert t.sent({0: 249, 4: 80}) == [3]
    assert list(t.streams()) == [0] and len(t) == 1
    assert t.sent({0: 1000}) == [2]
    assert not t and list(t.streams()) == []


def test_retransmission_does_not_move_a_departure() -> None:
    """A lost datagram re-sent later leaves the highest sent offset where it was: the event
    departed at its first transmit and is not reported again."""
    t = DepartureTracker()
    t.pending(0, 100, sent_ns=1)
    assert t.sent({0: 120}) == [1]
    t.pending(0, 300, sent_ns=2)
    assert t.sent({0: 120}) == []  # a retransmission of bytes 0..120: nothing new left
    assert t.sent({0: 300}) == [2]


def test_a_closed_or_reset_stream_is_forgotten() -> None:
    t = DepartureTracker()
    t.pending(0, 100, sent_ns=1)
    t.pending(0, 200, sent_ns=2)
    t.pending(4, 50, sent_ns=3)
    assert t.sent({0: None, 4: 10}) == []  # stream 0 gone before its events left
    assert list(t.streams()) == [4] and len(t) == 1
    t.forget(4)
    assert not t and t.sent({4: 1000}) == []


def test_table_is_bounded_and_offsets_only_grow() -> None:
    t = DepartureTracker(max_pending=2)
    assert t.pending(0, 10, 1) and t.pending(4, 10, 2)
    assert not t.pending(8, 10, 3) and t.overflowed == 1 and len(t) == 2
    assert t.sent({0: 10}) == [1]
    assert t.pending(8, 10, 4)  # room again
    with pytest.raises(ValueError, match="backwards"):
        t.pending(8, 9, 5)


# --- the real server -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return ensure_certs(tmp_path_factory.mktemp("departures-tls"))


@pytest.fixture
def log_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """LAB_DEPARTURE_LOG set for this test; the process's cached log reopened on its path."""
    path = tmp_path / "departures.csv"
    monkeypatch.setenv(DEPARTURE_LOG_ENV, str(path))
    departure_log.cache_clear()
    yield path
    departure_log.cache_clear()


def in_namespace(ns: str | None) -> contextlib.AbstractContextManager[None]:
    """This thread inside network namespace `ns` for the body (None: where it is)."""
    return nsenter.enter(ns) if ns else contextlib.nullcontext()


@contextlib.contextmanager
def reference_h3(
    certs: CertPaths, host: str, ns: str | None = None, engine: QuicEngineName = "aioquic"
) -> Iterator[int]:
    """serve_h3 with the lab's routes on an ephemeral UDP port of `host`, in its own thread and
    trio loop (inside namespace `ns` when given: its socket stays there); yields the port."""
    quic = QuicSettings(engine=engine)
    config = ServerConfig(host=host, port=0, cert_file=certs.cert, key_file=certs.key, quic=quic)
    ready: queue.Queue[tuple[int, trio.lowlevel.TrioToken] | BaseException] = queue.Queue()
    shutdown: list[trio.Event] = []

    async def handler(request: app.Request, writer: app.ResponseWriter) -> None:
        await app.handle(request, writer, config)

    async def serve() -> None:
        shutdown.append(trio.Event())
        async with trio.open_nursery() as nursery:
            _host, port = await nursery.start(
                functools.partial(serve_h3, config, handler, shutdown=shutdown[0])
            )
            ready.put((port, trio.lowlevel.current_trio_token()))

    def thread_main() -> None:
        try:
            with in_namespace(ns):
                trio.run(serve)
        except BaseException as exc:  # reported to the test thread
            ready.put(exc)

    thread = threading.Thread(target=thread_main, name="h3-server")
    thread.start()
    got = ready.get(timeout=30)
    if isinstance(got, BaseException):
        thread.join()
        raise got
    port, token = got
    try:
        yield port
    finally:
        trio.from_thread.run_sync(shutdown[0].set, trio_token=token)
        thread.join(timeout=30)
        assert not thread.is_alive(), "the server did not stop"


def read_departures(path: Path) -> dict[int, int]:
    """sent_ns → left_ns of the h3 lines; each sent_ns once."""
    text = path.read_text()
    assert text.startswith(DEPARTURE_LOG_HEADER)
    rows = list(csv.DictReader(text.splitlines()))
    assert {r["protocol"] for r in rows} <= {"h3"}
    out = {int(r["sent_ns"]): int(r["left_ns"]) for r in rows}
    assert len(out) == len(rows), "an event was logged twice"
    return out


async def watch(conn: Connection, interval_ms: int, count: int) -> list[tuple[int, int]]:
    """(sent_ns, received_ns) of each event of one watch."""
    splitter = LineSplitter()
    lines: list[tuple[bytes, int]] = []

    def on_chunk(data: bytes, now_ns: int) -> None:
        lines.extend(splitter.feed(data, now_ns))

    path = f"/api/v1/watch/namespaces/{NS}/pods?interval_ms={interval_ms}&count={count}"
    resp = await conn.request("GET", path, keep_body=False, on_chunk=on_chunk)
    assert resp.status == 200
    return [(json.loads(line)["lab"]["sent_ns"], received) for line, received in lines]


def watch_queue_ms(
    certs: CertPaths,
    log_path: Path,
    *,
    bulk_bytes: int = 0,
    topology: Topology | None = None,
    engine: QuicEngineName = "aioquic",
) -> tuple[np.ndarray, np.ndarray]:
    """Run one watch (10 ms × 50 events) against the reference server, beside a download of
    `bulk_bytes` on the same connection when > 0; on loopback, or from the client namespace to
    the server namespace of `topology`. Checks one departure per event with the events' own
    stamps and sent ≤ left ≤ received; returns the events' queue times (left − sent) and the
    rest (received − left), ms."""
    count = 50
    host = "127.0.0.1" if topology is None else topology.server_v4

    async def client(port: int) -> list[tuple[int, int]]:
        quic = QuicSettings(engine=engine)
        opts = ConnectOptions("h3", host, port, ca_file=certs.ca_cert, quic=quic)
        async with open_h3(opts) as conn, trio.open_nursery() as nursery:
            if bulk_bytes:
                nursery.start_soon(
                    functools.partial(conn.request, "GET", f"/bytes/{bulk_bytes}", keep_body=False)
                )
                await trio.sleep(0.3)  # the download fills the congestion window
            events = await watch(conn, 10, count)
            nursery.cancel_scope.cancel()
        return events

    started = time.monotonic_ns()
    server_ns, client_ns = (topology.server_ns, topology.client_ns) if topology else (None, None)
    with reference_h3(certs, host, server_ns, engine) as port, in_namespace(client_ns):
        events = trio.run(client, port)
    assert len(events) == count
    if engine == "qh3":  # not stamped (its stream state is out of Python's reach)
        assert read_departures(log_path) == {}
        return np.array([]), np.array([])
    mine = {s: left for s, left in read_departures(log_path).items() if s >= started}
    assert sorted(mine) == sorted(s for s, _ in events), "one departure per event, same stamps"
    queued, rest = [], []
    for sent, received in events:
        left = mine[sent]
        assert sent <= left <= received, (sent, left, received)
        queued.append((left - sent) / 1e6)
        rest.append((received - left) / 1e6)
    return np.array(queued), np.array(rest)


def report(name: str, queued: np.ndarray, rest: np.ndarray) -> None:
    q50, q99 = np.percentile(queued, [50, 99])
    r50, r99 = np.percentile(rest, [50, 99])
    print(f"{name}: queue p50 {q50:.3f} p99 {q99:.3f} ms; rest p50 {r50:.3f} p99 {r99:.3f} ms")


def test_each_event_departs_once_soon_after_its_stamp_on_an_idle_connection(
    certs: CertPaths, log_path: Path
) -> None:
    queued, rest = watch_queue_ms(certs, log_path)
    report("idle loopback", queued, rest)
    assert np.median(queued) < 5.0, queued


def test_every_event_is_stamped_once_beside_a_download_on_loopback(
    certs: CertPaths, log_path: Path
) -> None:
    """Many transmits carrying bulk data and events interleaved: still one departure per
    event, between its stamp and its arrival."""
    queued, rest = watch_queue_ms(certs, log_path, bulk_bytes=200_000_000)
    report("beside a download, loopback", queued, rest)


def test_qh3_writes_no_departures(certs: CertPaths, log_path: Path) -> None:
    watch_queue_ms(certs, log_path, engine="qh3")


@pytest.mark.netns
@pytest.mark.parametrize("queue_packets", [8, 1000])
def test_queue_time_grows_behind_a_download_on_a_slow_link(
    certs: CertPaths, log_path: Path, topology: Topology, tmp_path: Path, queue_packets: int
) -> None:
    """2 Mbit/s, 20 ms RTT: alone, an event leaves at once; beside a download on the same
    connection it waits for the congestion window (queue time). With a deep router queue the
    download's standing queue lands in the rest (network), not in the queue time."""
    slow = DirectionSpec(delay_ms=10, rate_mbit=2, queue=QueueSpec(packets=queue_packets))
    with EmulatorProcess(topology, LinkSpec(uplink=slow, downlink=slow), 1, tmp_path / "emu"):
        idle = watch_queue_ms(certs, log_path, topology=topology)
        loaded = watch_queue_ms(certs, log_path, bulk_bytes=50_000_000, topology=topology)
    report(f"2 Mbit/s, 20 ms RTT, queue {queue_packets}, idle", *idle)
    report(f"2 Mbit/s, 20 ms RTT, queue {queue_packets}, loaded", *loaded)
    idle_queue, loaded_queue = np.median(idle[0]), np.median(loaded[0])
    assert idle_queue < 5.0, idle[0]
    assert loaded_queue > max(1.0, 3 * idle_queue), (idle[0], loaded[0])
    if queue_packets == 1000:  # ≈ 1.2 MB of router buffer that the download fills
        assert np.median(loaded[1]) > np.median(idle[1]) + 50, (idle[1], loaded[1])
