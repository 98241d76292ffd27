"""Loopback goodput and small-request rate of the lab's HTTP stacks: one row per (impl, protocol).

For each row: one download of `--size-mb` MB (goodput = body bytes / (end − request sent)),
then `--gets` small GETs (1000-byte bodies, `--concurrency` at a time on one connection). The
server is a `lab serve` subprocess (CPU from /proc/<pid>/stat, user+sys of all threads); the
client runs in this process (CPU from getrusage). Every server is stopped on exit.

    python benchmarks/bench_http_loopback.py [--size-mb 100] [--gets 2000] [--rows lab-h2,lab-h3]

Memory growth per request: `--gets 100000 --rows lab-h2` and read the RSS column (measured after
a warm-up of 1000 GETs, before and after the timed ones).

Prints a Markdown table. To add a column source (another implementation or protocol), add a
function to ROWS that returns a `Row`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import trio

from lab.http.client import open_connection
from lab.http.payload import expected_sha256
from lab.http.types import ConnectOptions, HttpProtocol

HOST = "127.0.0.1"
SMALL_BYTES = 1000
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    """One (implementation, protocol) measurement; CPU in seconds user+sys."""

    implementation: str
    protocol: str
    download_bytes: int
    download_s: float  # end − request sent
    server_cpu_download_s: float
    client_cpu_download_s: float
    gets: int
    gets_s: float
    server_cpu_gets_s: float
    client_cpu_gets_s: float
    server_rss_mb: tuple[float, float] = (0.0, 0.0)  # before and after the small GETs
    note: str = ""

    def cells(self) -> list[str]:
        gb = self.download_bytes / 1e9
        return [
            self.implementation,
            self.protocol,
            f"{self.download_bytes * 8 / self.download_s / 1e6:,.0f}",
            f"{self.server_cpu_download_s / gb:.1f}",
            f"{self.client_cpu_download_s / gb:.1f}",
            f"{self.gets / self.gets_s:,.0f}",
            f"{self.server_cpu_gets_s / self.gets * 1e6:,.0f}",
            f"{self.client_cpu_gets_s / self.gets * 1e6:,.0f}",
            f"{self.server_rss_mb[0]:.0f} → {self.server_rss_mb[1]:.0f}",
            self.note,
        ]


HEADER = [
    "implementation",
    "protocol",
    "goodput Mbit/s",
    "server CPU s/GB",
    "client CPU s/GB",
    "small GETs req/s",
    "server CPU µs/req",
    "client CPU µs/req",
    "server RSS MB before → after GETs",
    "note",
]


def proc_cpu_s(pid: int) -> float:
    """user+sys CPU seconds of a process (all threads) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def proc_rss_mb(pid: int) -> float:
    """Resident set size of a process in MB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def self_cpu_s() -> float:
    """user+sys CPU seconds of this process."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@contextlib.contextmanager
def lab_server(cert_dir: Path, *extra: str) -> Iterator[tuple[subprocess.Popen, int]]:
    """A `lab serve` subprocess on a free loopback port; killed on exit."""
    argv = [sys.executable, "-m", "lab", "serve", "--host", HOST, "--port", "0"]
    proc = subprocess.Popen(
        [*argv, "--cert-dir", str(cert_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("  grace_s="):
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(30) or proc.poll() is not None:
            raise RuntimeError("lab serve did not start:\n" + "".join(lines))
        m = re.search(r"listening on port (\d+)", "".join(lines))
        assert m, lines
        yield proc, int(m.group(1))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _download(opts: ConnectOptions, n: int) -> tuple[float, bool]:
    h = hashlib.sha256()
    async with open_connection(opts) as conn:
        r = await conn.request(
            "GET", f"/bytes/{n}", keep_body=False, on_chunk=lambda d, t: h.update(d)
        )
    return (r.end_ns - r.request_sent_ns) / 1e9, h.hexdigest() == expected_sha256(n)


async def _gets(opts: ConnectOptions, count: int, concurrency: int) -> float:
    async with open_connection(opts) as conn:
        await conn.request("GET", "/healthz")  # warm up
        left = count
        t0 = time.perf_counter()

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                r = await conn.request("GET", f"/bytes/{SMALL_BYTES}")
                assert r.status == 200 and r.body_bytes == SMALL_BYTES

        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(worker)
        return time.perf_counter() - t0


def bench_lab(protocol: HttpProtocol, args: argparse.Namespace, cert_dir: Path) -> Row:
    """The lab's server and client over `protocol`."""
    size = int(args.size_mb * 1e6) if protocol == "h2" else int(args.h3_size_mb * 1e6)
    with lab_server(cert_dir) as (proc, port):
        opts = ConnectOptions(protocol, HOST, port, ca_file=cert_dir / "ca.pem")
        s0, c0 = proc_cpu_s(proc.pid), self_cpu_s()
        secs, ok = trio.run(_download, opts, size)
        s1, c1 = proc_cpu_s(proc.pid), self_cpu_s()
        trio.run(_gets, opts, min(args.gets, 1000), args.concurrency)  # warm-up for the RSS
        rss0 = proc_rss_mb(proc.pid)
        s2, c2 = proc_cpu_s(proc.pid), self_cpu_s()
        gets_s = trio.run(_gets, opts, args.gets, args.concurrency)
        s3, c3 = proc_cpu_s(proc.pid), self_cpu_s()
        rss1 = proc_rss_mb(proc.pid)
    return Row(
        "lab server + lab client",
        protocol,
        size,
        secs,
        s1 - s0,
        c1 - c0,
        args.gets,
        gets_s,
        s3 - s2,
        c3 - c2,
        (rss0, rss1),
        ("" if ok else "HASH MISMATCH ") + f"{size / 1e6:.0f} MB",
    )


ROWS: dict[str, Callable[[argparse.Namespace, Path], Row]] = {
    "lab-h2": lambda a, d: bench_lab("h2", a, d),
    "lab-h3": lambda a, d: bench_lab("h3", a, d),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mb", type=float, default=100, help="download size over h2 (MB)")
    p.add_argument("--h3-size-mb", type=float, default=20, help="download size over h3 (MB)")
    p.add_argument("--gets", type=int, default=2000, help="small GETs per row")
    p.add_argument("--concurrency", type=int, default=10, help="small GETs in flight")
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma list of {sorted(ROWS)}")
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lab-bench-") as tmp:
        from lab.http.tls import ensure_certs

        ensure_certs(Path(tmp))
        for name in args.rows.split(","):
            try:
                rows.append(ROWS[name](args, Path(tmp)))
            except Exception as e:  # one broken row must not hide the others
                print(f"row {name} failed: {e!r}", file=sys.stderr)
    print("| " + " | ".join(HEADER) + " |")
    print("|" + "---|" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(row.cells()) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
