"""Hostile clients against the reference server's bounds: normal load and floods on loopback.

One `lab serve` per protocol section (loopback only, a free port). Each phase reports the
server's RSS before → peak → after (MB; the peak is VmHWM, reset before the phase through
/proc/PID/clear_refs), the requests it served, what the bounds did (the server's one log line
per bound hit, counted per phase) and the wall time.

HTTP/2 (`--h2`): the server runs with its default bounds except the two timeouts, shortened so
the phases end in seconds (`--h2-idle-timeout 5 --h2-stall-timeout 2`). Phases:
  normal       `--requests` GET /bytes/100 through `--connections` × 10 streams (lab client)
  idle         `--idle` connections that send the preface and SETTINGS, then nothing
  rapid reset  10 connections × 10,000 HEADERS + RST_STREAM pairs
  zero window  10 connections × 100 streams of GET /bytes/1000000 with a zero stream window
  bodies       20 POSTs of 15 MiB on 20 connections, all held at once (server total 256 MiB)
  ping flood   one connection with a 4 KiB receive buffer sends 30,000 PINGs, never reads
  normal       the same normal load again: still served, RSS back
HTTP/3 (`--h3`): the server runs with its default bounds (Retry above 100 half-open
connections, at most 256, handshake timeout 10 s). Floods come from 1,000 source ports;
each phase ends when nothing is half-open any more (the "after" RSS is read then). Phases:
  normal            `--requests` GET /bytes/100 through `--connections` × 10 streams (lab client)
  garbage Initials  `--initials` Initials with valid headers and random payloads, sent at
                    `--flood-rate` per second (default 1,000; 0 = as fast as possible)
  Retries ignored   `--initials` real ClientHellos whose sender never answers (as spoofed
                    sources), while the normal load runs on new connections (through Retry)
  Retries answered  the same from a flooder that answers every Retry (validated addresses:
                    the half-open cap holds), while the normal load runs
  normal            the same normal load again
The counts come from the server's log (`h3 event …` lines); "dropped by the kernel" is the
drops column of /proc/net/udp for the server's socket (its receive buffer was full).

    python benchmarks/bench_flood.py --h2 [--requests 10000] [--connections 20] [--idle 300]
    python benchmarks/bench_flood.py --h3 [--requests 10000] [--connections 20] [--initials 10000]

Prints a Markdown table per section.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import hpack
import trio
from concurrent_gets import get_concurrently
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from lab.conform.h2wire import RawH2Peer
from lab.http import payload, quic_flood
from lab.http.quic_engine import load_engine
from lab.http.settings import QuicServerLimits
from lab.http.tls import ensure_certs
from lab.http.types import ConnectOptions

HOST = "127.0.0.1"
MIB = 1024 * 1024


# --- shared: the server process, its log, RSS, the table -------------------------------------
class Server:
    """A `lab serve` subprocess on a free loopback port whose output lines are kept."""

    def __init__(self, cert_dir: Path, *flags: str):
        argv = [sys.executable, "-m", "lab", "serve", "--host", HOST, "--port", "0"]
        argv += ["--cert-dir", str(cert_dir), "--grace", "1", *flags]
        self.cert_dir = cert_dir
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.lines: list[str] = []
        ready = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(ready,), daemon=True)
        self._reader.start()
        if not ready.wait(30) or self.proc.poll() is not None:
            self.proc.kill()
            raise RuntimeError("lab serve did not start:\n" + "".join(self.lines))
        m = re.search(r"listening on port (\d+)", "".join(self.lines))
        assert m, self.lines
        self.port = int(m.group(1))

    def _read(self, ready: threading.Event) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if line.startswith("  grace_s="):
                ready.set()
        ready.set()

    def events(self, pattern: str) -> Counter[str]:
        """How often each `pattern` group 1 appears in the log so far (e.g. bound names)."""
        return Counter(m.group(1) for line in self.lines if (m := re.search(pattern, line)))

    def rss_mb(self, field: str = "VmRSS") -> float:
        """VmRSS (or VmHWM, the peak) of the server in MB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024 / 1e6
        return float("nan")

    def reset_peak(self) -> None:
        """Start a new VmHWM peak (needs Linux ≥ 4.0 and the right to write clear_refs)."""
        with contextlib.suppress(OSError):
            Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def stop(self) -> list[str]:
        """SIGTERM (graceful), then the summary lines of its log ("h2 summary: …", …)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        return [line.strip() for line in self.lines if "summary:" in line]


@dataclass
class Row:
    """One phase: what was sent, what the server did, its memory and the wall time."""

    phase: str
    load: str
    served: int
    bounds: str
    rss_mb: tuple[float, float, float]  # before, peak, after
    wall_s: float

    def cells(self) -> list[str]:
        before, peak, after = self.rss_mb
        return [
            self.phase,
            self.load,
            f"{self.served:,}",
            self.bounds or "-",
            f"{before:.0f} → {peak:.0f} → {after:.0f}",
            f"{self.wall_s:.1f}",
        ]


HEADER = ["phase", "load", "requests served", "bounds hit (server log)", "RSS MB", "wall s"]


def print_table(title: str, rows: list[Row]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")


def phase(
    server: Server,
    pattern: str,
    name: str,
    load: str,
    run: Callable[[], Awaitable[int]],
) -> Row:
    """Run one phase (`run` returns the requests served) and measure it."""
    seen = server.events(pattern)
    server.reset_peak()
    before = server.rss_mb()
    t0 = time.monotonic()
    served = trio.run(run)
    wall = time.monotonic() - t0
    time.sleep(0.5)  # the server finishes closing what the phase left
    hits = server.events(pattern) - seen
    bounds = ", ".join(f"{k} {v:,}" for k, v in sorted(hits.items()))
    rss = (before, max(server.rss_mb("VmHWM"), before), server.rss_mb())
    print(f"done: {name}", file=sys.stderr, flush=True)
    return Row(name, load, served, bounds, rss, wall)


# --- HTTP/2 ------------------------------------------------------------------------------------
H2_FLAGS = ("--h2-idle-timeout", "5", "--h2-stall-timeout", "2")
H2_BOUND_LINE = r"h2 bound (\w+):"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _settings(initial_window: int | None = None) -> bytes:
    f = SettingsFrame(0)
    if initial_window is not None:
        f.settings = {SettingsFrame.INITIAL_WINDOW_SIZE: initial_window}
    return f.serialize()


def _headers(enc: hpack.Encoder, sid: int, method: str, path: str, end: bool) -> bytes:
    f = HeadersFrame(sid)
    f.data = enc.encode(
        [(":method", method), (":scheme", "https"), (":authority", "localhost"), (":path", path)]
    )
    f.flags.add("END_HEADERS")
    if end:
        f.flags.add("END_STREAM")
    return f.serialize()


def _rst(sid: int) -> bytes:
    f = RstStreamFrame(sid)
    f.error_code = 0x8  # CANCEL
    return f.serialize()


def _has_goaway(frames: list[Frame]) -> bool:
    return any(isinstance(f, GoAwayFrame) for f in frames)


async def h2_normal(server: Server, requests: int, connections: int) -> int:
    """`requests` GET /bytes/100 over `connections` × 10 streams; returns the 200s."""
    opts = ConnectOptions("h2", HOST, server.port, ca_file=server.cert_dir / "ca.pem")
    return await get_concurrently(
        opts, "/bytes/100", requests, connections, 10, lambda r: r.status == 200
    )


async def h2_idle(server: Server, count: int) -> int:
    """`count` connections that go quiet after the preface; wait until the server closed them."""
    peers = []
    for _ in range(count):
        p = await RawH2Peer.connect(server)
        await p.send(PREFACE + _settings())
        peers.append(p)
    async with trio.open_nursery() as nursery:
        for p in peers:
            nursery.start_soon(p.read_until, lambda fs: False, 30)
    closed = sum(1 for p in peers if p.eof and p.count(GoAwayFrame))
    for p in peers:
        await p.aclose()
    print(f"  idle: {closed} of {count} got GOAWAY then EOF", file=sys.stderr)
    return 0


async def h2_rapid_reset(server: Server, connections: int = 10, pairs: int = 10_000) -> int:
    """HEADERS + RST_STREAM pairs; each connection reads until GOAWAY or EOF. The burst is built
    before connecting: a connection kept waiting for it would be closed as idle first."""
    enc = hpack.Encoder()
    burst = b"".join(
        _headers(enc, sid, "GET", "/healthz", True) + _rst(sid) for sid in range(1, 2 * pairs, 2)
    )

    async def one() -> None:
        p = await RawH2Peer.connect(server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(p.send, PREFACE + _settings() + burst)
            await p.read_until(_has_goaway, 20)
            nursery.cancel_scope.cancel()
        await p.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one)
    return 0


async def h2_zero_window(server: Server, connections: int = 10, streams: int = 100) -> int:
    """Streams whose window is 0: the server holds their responses until the stall timeout."""

    async def one() -> None:
        p = await RawH2Peer.connect(server)
        enc = hpack.Encoder()
        reqs = b"".join(
            _headers(enc, sid, "GET", "/bytes/1000000", True) for sid in range(1, 2 * streams, 2)
        )
        await p.send(PREFACE + _settings(initial_window=0) + reqs)
        await p.read_until(lambda fs: sum(isinstance(f, RstStreamFrame) for f in fs) >= streams, 30)
        await p.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(one)
    return 0


async def h2_bodies(server: Server, count: int = 20, body_bytes: int = 15 * MIB) -> int:
    """`count` POST bodies held at once (all but the last frame sent everywhere, then the last
    frames); returns the bodies answered (405: POST /healthz), the rest are refused."""
    peers: list[RawH2Peer] = []
    chunk = DataFrame(1)
    chunk.data = bytes(16_384)
    frames = body_bytes // 16_384
    last = DataFrame(1)
    last.data = bytes(16_384)
    last.flags.add("END_STREAM")

    async def start() -> None:
        p = await RawH2Peer.connect(server)
        peers.append(p)
        head = _headers(hpack.Encoder(), 1, "POST", "/healthz", False)
        await p.send(PREFACE + _settings() + head)
        await p.read_until(lambda fs: sum(isinstance(f, SettingsFrame) for f in fs) >= 1, 5)
        await p.send(chunk.serialize() * (frames - 1))  # within the server's 16 MiB windows

    async def finish(p: RawH2Peer) -> None:
        await p.send(last.serialize())
        await p.read_until(
            lambda fs: any(isinstance(f, HeadersFrame | RstStreamFrame) for f in fs), 20
        )

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(start)
    async with trio.open_nursery() as nursery:
        for p in peers:
            nursery.start_soon(finish, p)
    answered = sum(p.count(HeadersFrame) for p in peers)
    for p in peers:
        await p.aclose()
    return answered


async def h2_ping_flood(server: Server, pings: int = 30_000, burst: int = 200) -> int:
    """A peer with a 4 KiB receive buffer floods PINGs in bursts and never reads; then reads."""
    p = await RawH2Peer.connect(server, rcvbuf=4096)
    await p.send(PREFACE + _settings())
    for k in range(0, pings, burst):
        data = b""
        for i in range(burst):
            f = PingFrame(0)
            f.opaque_data = (k + i).to_bytes(8, "big")
            data += f.serialize()
        await p.send(data)
        await trio.sleep(0.002)
    await p.read_until(_has_goaway, 10)
    print(f"  ping flood: {p.count(PingFrame):,} PING ACKs, then GOAWAY", file=sys.stderr)
    await p.aclose()
    return 0


def run_h2(args: argparse.Namespace, cert_dir: Path) -> None:
    server = Server(cert_dir, *H2_FLAGS)
    rows: list[Row] = []
    try:

        def add(name: str, load: str, run: Callable[[], Awaitable[int]]) -> None:
            rows.append(phase(server, H2_BOUND_LINE, name, load, run))

        normal = f"{args.requests:,} GETs, {args.connections} conns × 10 streams"
        add("normal", normal, lambda: h2_normal(server, args.requests, args.connections))
        add("idle", f"{args.idle} conns, preface only", lambda: h2_idle(server, args.idle))
        add("rapid reset", "10 conns × 10,000 HEADERS+RST", lambda: h2_rapid_reset(server))
        add("zero window", "10 conns × 100 streams, window 0", lambda: h2_zero_window(server))
        add("bodies", "20 × 15 MiB POST held at once", lambda: h2_bodies(server))
        add("ping flood", "30,000 PINGs, peer never reads", lambda: h2_ping_flood(server))
        add("normal", normal, lambda: h2_normal(server, args.requests, args.connections))
    finally:
        summaries = server.stop()
    print_table(f"HTTP/2 (lab serve {' '.join(H2_FLAGS)}, other bounds default)", rows)
    for line in summaries:
        if "h2 summary:" in line:
            print("\n    " + line[line.index("h2 summary:") :])


# --- HTTP/3 ------------------------------------------------------------------------------------
H3_EVENT = re.compile(r"h3 event (\w+): \+(\d+) \(total (\d+)\)")
H3_STATE = re.compile(r"h3 state: connections=(\d+) half_open=(\d+)")
H3_DROPS = ("drop_half_open_cap", "drop_undecryptable", "drop_bad_dcid", "drop_short")
H3_SETTLE_S = 2.5  # the server logs its counters once a second


def h3_totals(server: Server) -> Counter[str]:
    """The latest total of every h3 event kind in the server's log."""
    out: Counter[str] = Counter()
    for line in list(server.lines):
        if m := H3_EVENT.search(line):
            out[m[1]] = int(m[3])
    return out


def h3_wait_drained(server: Server, timeout_s: float) -> None:
    """Wait for a `h3 state` line with no half-open connection after the lines seen so far."""
    seen = len(server.lines)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if any((m := H3_STATE.search(x)) and m[2] == "0" for x in list(server.lines)[seen:]):
            return
        time.sleep(0.1)


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped on the server's UDP socket (receive buffer full)."""
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}"):
            return int(fields[-1])
    return 0


@dataclass
class H3Row:
    """One HTTP/3 phase: the load, what the server did (its log), memory, wall time."""

    phase: str
    load: str
    served: int
    events: Counter[str]  # h3 event totals during the phase
    kernel_drops: int
    rss_mb: tuple[float, float, float]  # before, peak (VmHWM), after
    wall_s: float

    def cells(self) -> list[str]:
        before, peak, after = self.rss_mb
        dropped = sum(self.events[k] for k in H3_DROPS)
        detail = ", ".join(f"{k.removeprefix('drop_')} {self.events[k]:,}" for k in H3_DROPS)
        return [
            self.phase,
            self.load,
            f"{self.served:,}",
            f"{self.events['accept']:,}",
            f"{self.events['retry']:,}",
            f"{dropped:,} ({detail})" if dropped else "0",
            f"{self.kernel_drops:,}",
            f"{before:.0f} → {peak:.0f} → {after:.0f}",
            f"{self.wall_s:.1f}",
        ]


H3_HEADER = [
    "phase",
    "load",
    "requests served",
    "connections accepted",
    "Retries sent",
    "Initials dropped by the server",
    "dropped by the kernel",
    "RSS MB before → peak → after",
    "wall s",
]


async def h3_requests(server: Server, requests: int, connections: int) -> int:
    """`requests` GET /bytes/100 over `connections` new h3 connections × 10 streams."""
    opts = ConnectOptions(
        "h3", HOST, server.port, ca_file=server.cert_dir / "ca.pem", connect_timeout_s=60
    )
    body = payload.body_slice(0, 100)
    return await get_concurrently(
        opts, "/bytes/100", requests, connections, 10, lambda r: r.status == 200 and r.body == body
    )


async def h3_flood_only(server: Server, datagrams: list[bytes], rate_per_s: float | None) -> int:
    """The flood from 1,000 source ports, nothing else (no request is served)."""
    await quic_flood.flood(HOST, server.port, datagrams, sockets=1000, rate_per_s=rate_per_s)
    return 0


async def h3_flood_with_requests(
    server: Server,
    datagrams: list[bytes],
    answer_retries: bool,
    rate_per_s: float | None,
    requests: int,
    connections: int,
) -> int:
    """The flood from 1,000 source ports and, at the same time, the requests."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            functools.partial(
                quic_flood.flood,
                HOST,
                server.port,
                datagrams,
                sockets=1000,
                answer_retries=answer_retries,
                rate_per_s=rate_per_s,
            )
        )
        served = await h3_requests(server, requests, connections)
    return served


def h3_phase(
    server: Server, name: str, load: str, run: Callable[[], Awaitable[int]], drain_s: float
) -> H3Row:
    """Run one phase, wait until nothing is half-open any more, then measure."""
    seen, drops = h3_totals(server), udp_drops(server.port)
    server.reset_peak()
    before = server.rss_mb()
    t0 = time.monotonic()
    served = trio.run(run)
    wall = time.monotonic() - t0
    h3_wait_drained(server, drain_s)
    time.sleep(H3_SETTLE_S)  # counters logged; memory given back after a burst
    events = h3_totals(server) - seen
    rss = (before, max(server.rss_mb("VmHWM"), before), server.rss_mb())
    print(f"done: {name}", file=sys.stderr, flush=True)
    return H3Row(name, load, served, events, udp_drops(server.port) - drops, rss, wall)


def run_h3(args: argparse.Namespace, cert_dir: Path) -> None:
    limits = QuicServerLimits()
    server = Server(cert_dir, "--quic-engine", "aioquic")
    n, requests, conns = args.initials, args.requests, args.connections
    rate = args.flood_rate or None
    pace = f"{rate:,.0f}/s" if rate else "unpaced"
    drain_s = limits.handshake_timeout_s + 5
    print(f"building {n:,} garbage and 2 × {n:,} ClientHello Initials…", file=sys.stderr)
    garbage = quic_flood.make_initials(n, "garbage")
    spoofed = quic_flood.make_initials(n, "real")
    validating = quic_flood.make_initials(n, "real")
    rows: list[H3Row] = []
    try:

        def add(name: str, load: str, run: Callable[[], Awaitable[int]]) -> None:
            rows.append(h3_phase(server, name, load, run, drain_s))

        normal = f"{requests:,} GETs, {conns} conns × 10 streams"
        add("normal", normal, lambda: h3_requests(server, requests, conns))
        add(
            "garbage Initials",
            f"{n:,} undecryptable Initials ({pace}), 1,000 ports",
            lambda: h3_flood_only(server, garbage, rate),
        )
        add(
            "ClientHello flood, Retries ignored",
            f"{n:,} ClientHellos ({pace}, spoofed sources) + {normal}",
            lambda: h3_flood_with_requests(server, spoofed, False, rate, requests, conns),
        )
        add(
            "ClientHello flood, Retries answered",
            f"{n:,} ClientHellos ({pace}, validating flooder) + {normal}",
            lambda: h3_flood_with_requests(server, validating, True, rate, requests, conns),
        )
        add("normal", normal, lambda: h3_requests(server, requests, conns))
    finally:
        summaries = server.stop()
    title = (
        f"HTTP/3 (lab serve, default bounds: retry above {limits.retry_above_half_open} "
        f"half-open, at most {limits.max_half_open}, handshake timeout "
        f"{limits.handshake_timeout_s:g} s; aioquic {load_engine('aioquic').version})"
    )
    print(f"\n{title}\n")
    print("| " + " | ".join(H3_HEADER) + " |")
    print("|" + "---|" * len(H3_HEADER))
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")
    for line in summaries:
        if "h3 summary:" in line:
            print("\n    " + line[line.index("h3 summary:") :])


SECTIONS: dict[str, Callable[[argparse.Namespace, Path], None]] = {"h2": run_h2, "h3": run_h3}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in SECTIONS:
        p.add_argument(f"--{name}", action="store_true", help=f"run the {name} section")
    p.add_argument("--requests", type=int, default=10_000, help="GETs per normal phase")
    p.add_argument("--connections", type=int, default=20, help="connections of a normal phase")
    p.add_argument("--idle", type=int, default=300, help="idle connections")
    p.add_argument("--initials", type=int, default=10_000, help="Initials per h3 flood")
    p.add_argument(
        "--flood-rate", type=float, default=1000, help="h3 Initials per second (0 = unpaced)"
    )
    args = p.parse_args()
    chosen = [name for name in SECTIONS if getattr(args, name)] or list(SECTIONS)
    with tempfile.TemporaryDirectory(prefix="lab-bench-flood-") as tmp:
        ensure_certs(Path(tmp))
        for name in chosen:
            SECTIONS[name](args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
