"""No memory growth per request: RSS of the reference server and of the client, before and after
many small GETs, for h2 and for h3 (each QUIC engine).

For each row a `lab serve` subprocess is started on loopback (with that row's QUIC engine). The
client (this process, the lab's client API) opens `--connections` connections with `--streams`
requests in flight on each and GETs /bytes/100 (bodies checked against the deterministic
payload): first `--warmup` requests, then the server's and the client's VmRSS are read
(/proc/PID/status), then `--requests` more, then VmRSS again; before each reading the script
waits until the server has dropped the phase's closed connections. Growth per 1,000 requests is
(after − before) / (requests / 1000), in KB. Each phase uses fresh connections, so per-connection
state is created and freed in both phases. req/s is for the measured phase.

    python benchmarks/bench_memory.py [--requests 100000] [--warmup 5000] \\
        [--rows h2,h3-qh3,h3-aioquic] [--aioquic-requests 20000]

Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_http_loopback import HOST, lab_server, proc_rss_mb
from concurrent_gets import get_concurrently

from lab.http.h3_driver import DRAIN_CAP_S
from lab.http.payload import body_slice
from lab.http.settings import QuicEngine, QuicSettings
from lab.http.types import ConnectOptions, HttpProtocol

BODY_BYTES = 100
SETTLE_S = DRAIN_CAP_S + 1.0
ROWS: dict[str, tuple[HttpProtocol, QuicEngine]] = {
    "h2": ("h2", "aioquic"),  # the server's QUIC engine is irrelevant to h2
    "h3-qh3": ("h3", "qh3"),
    "h3-aioquic": ("h3", "aioquic"),
}


@dataclass
class Row:
    """One protocol/engine: RSS in MB before and after `requests` GETs, and their rate."""

    protocol: str
    engine: str
    requests: int
    server_rss_mb: tuple[float, float]
    client_rss_mb: tuple[float, float]
    seconds: float
    failures: int

    def cells(self) -> list[str]:
        per_k = self.requests / 1000

        def growth(rss: tuple[float, float]) -> str:
            return f"{(rss[1] - rss[0]) * 1024 / per_k:+.2f}"

        return [
            self.protocol,
            self.engine if self.protocol == "h3" else "-",
            f"{self.requests:,}",
            f"{self.server_rss_mb[0]:.1f} → {self.server_rss_mb[1]:.1f}",
            growth(self.server_rss_mb),
            f"{self.client_rss_mb[0]:.1f} → {self.client_rss_mb[1]:.1f}",
            growth(self.client_rss_mb),
            f"{self.requests / self.seconds:,.0f}",
            str(self.failures),
        ]


HEADER = [
    "protocol",
    "engine",
    "requests",
    "server RSS MB before → after",
    "server KB / 1k req",
    "client RSS MB before → after",
    "client KB / 1k req",
    "req/s",
    "failed",
]


async def run_gets(opts: ConnectOptions, count: int, connections: int, streams: int) -> int:
    """`count` GETs of /bytes/100 over `connections` × `streams` workers; returns failures."""
    expected = body_slice(0, BODY_BYTES)
    ok = await get_concurrently(
        opts,
        f"/bytes/{BODY_BYTES}",
        count,
        connections,
        streams,
        lambda r: r.status == 200 and r.body == expected,
    )
    return count - ok


def settle() -> None:
    """Let the server finish closing the phase's connections (a closing QUIC connection is kept
    up to DRAIN_CAP_S), then collect this process's garbage, before RSS is read."""
    time.sleep(SETTLE_S)
    gc.collect()


def bench(name: str, requests: int, args: argparse.Namespace, cert_dir: Path) -> Row:
    """One row: warm up, read RSS, run `requests` GETs, read RSS again."""
    protocol, engine = ROWS[name]
    with lab_server(cert_dir, "--quic-engine", engine) as (proc, port):
        opts = ConnectOptions(
            protocol, HOST, port, ca_file=cert_dir / "ca.pem", quic=QuicSettings(engine=engine)
        )
        failures = trio.run(run_gets, opts, args.warmup, args.connections, args.streams)
        settle()
        before = proc_rss_mb(proc.pid), proc_rss_mb(os.getpid())
        t0 = time.perf_counter()
        failures += trio.run(run_gets, opts, requests, args.connections, args.streams)
        seconds = time.perf_counter() - t0
        settle()
        after = proc_rss_mb(proc.pid), proc_rss_mb(os.getpid())
    return Row(
        protocol,
        engine,
        requests,
        (before[0], after[0]),
        (before[1], after[1]),
        seconds,
        failures,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=100_000, help="measured GETs per row")
    p.add_argument("--aioquic-requests", type=int, default=None, help="override for h3-aioquic")
    p.add_argument("--warmup", type=int, default=5000, help="GETs before the first RSS reading")
    p.add_argument("--connections", type=int, default=4, help="connections per phase")
    p.add_argument("--streams", type=int, default=8, help="requests in flight per connection")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {sorted(ROWS)}")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lab-bench-mem-") as tmp:
        from lab.http.tls import ensure_certs

        ensure_certs(Path(tmp))
        for name in args.rows.split(","):
            n = args.requests
            if name == "h3-aioquic" and args.aioquic_requests is not None:
                n = args.aioquic_requests
            try:
                rows.append(bench(name, n, args, Path(tmp)))
            except Exception as e:  # one broken row must not hide the others
                print(f"row {name} failed: {e!r}", file=sys.stderr)
            print(f"done: {name}", file=sys.stderr, flush=True)
    print(f"{args.connections} connections × {args.streams} streams, GET /bytes/{BODY_BYTES}, ")
    print(f"RSS read after a warm-up of {args.warmup:,} GETs and after the measured ones\n")
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
