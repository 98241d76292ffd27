"""Loopback figures for the third-party peers next to the lab's own stack, in one run.

Rows: one large download (goodput, CPU seconds per GB of body) and many small GETs (requests/s,
CPU microseconds per request) for
  - Caddy (quic-go) as server, with the lab client over h2 and h3, h2load and gtlsclient;
  - the Go server (`server: go`: net/http + quic-go, built by scripts/build-go.sh), the same;
  - the lab's reference server, with h2load and gtlsclient as clients, and the lab client;
and the Go agent (lab-go-agent's bulk workload) downloading from each over h2 and h3.
CPU is user+sys: servers from /proc/<pid>/stat (all threads), client subprocesses from wait4's
rusage (the Go agent's includes its process start and the handshake), the in-process lab client
from getrusage(RUSAGE_SELF). Without Go installed the Go rows say so and the others run.

    python benchmarks/bench_peers_loopback.py [--size-mb 100] [--gets 2000] [--quick]

Prints a Markdown table. All traffic stays on 127.0.0.1; every process is stopped on exit.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import trio

from lab.errors import HostNotCapable
from lab.http import tls
from lab.http.client import open_connection
from lab.http.types import ConnectOptions
from lab.peers import go, nghttp2, ngtcp2, registry
from lab.peers.proc import free_port, running
from lab.run.stack import AgentConfig

HOST = "127.0.0.1"
SMALL_BYTES = 1000
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Row:
    """One measurement; CPU in seconds (user+sys)."""

    workload: str  # "download" | "small GETs"
    server: str
    client: str
    protocol: str
    wall_s: float
    body_bytes: int
    requests: int
    server_cpu_s: float
    client_cpu_s: float
    note: str = ""

    def cells(self) -> list[str]:
        """The row as table cells."""
        if self.workload == "download":
            result = f"{self.body_bytes * 8 / self.wall_s / 1e6:,.0f} Mbit/s"
            gb = self.body_bytes / 1e9
            srv, cli = f"{self.server_cpu_s / gb:.1f} s/GB", f"{self.client_cpu_s / gb:.1f} s/GB"
        else:
            result = f"{self.requests / self.wall_s:,.0f} req/s"
            srv = f"{self.server_cpu_s / self.requests * 1e6:,.0f} µs/req"
            cli = f"{self.client_cpu_s / self.requests * 1e6:,.0f} µs/req"
        return [self.workload, self.server, self.client, self.protocol, result, srv, cli, self.note]


def proc_cpu_s(pid: int) -> float:
    """user+sys CPU seconds of a process (all its threads) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def self_cpu_s() -> float:
    """user+sys CPU seconds of this process."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_client(argv: list[str], log: Path, timeout_s: float = 300) -> tuple[float, float, str]:
    """Run a client to completion: (wall s, its CPU s, stdout+stderr). Raises on failure."""
    with log.open("wb") as out:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = t0 + timeout_s
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                p.kill()
                p.wait()
                raise TimeoutError(" ".join(argv))
            time.sleep(0.002)
        wall = time.monotonic() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    text = log.read_text(errors="replace")
    if p.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {p.returncode}: {text[-1500:]}")
    return wall, usage.ru_utime + usage.ru_stime, text


@contextlib.contextmanager
def server(
    name: str, root: Path, certs: tls.CertPaths, sizes: tuple[int, ...]
) -> Iterator[tuple[int, int]]:
    """Start a registry server on a free port; yields (port, pid); stopped on exit."""
    impl = registry.get(name)
    ctx = registry.ServerContext(
        host=HOST,
        port=free_port(HOST),
        workdir=root / name,
        cert_dir=certs.cert.parent,
        bytes_sizes=sizes,
    )
    with running(impl.launch(ctx), root / "logs", name) as proc:
        if not impl.ready(ctx, timeout_s=30):
            raise RuntimeError(f"{name} not ready: {proc.output()[-2000:]}")
        yield ctx.port, proc.process.pid


def measured(pid: int, fn: Callable[[], tuple[float, int, int, float]]) -> tuple[float, ...]:
    """Run fn (→ wall s, bytes, requests, client CPU s) and add the server's CPU s."""
    before = proc_cpu_s(pid)
    wall, nbytes, nreq, client_cpu = fn()
    return wall, nbytes, nreq, proc_cpu_s(pid) - before, client_cpu


# --- clients ----------------------------------------------------------------------------------
def lab_download(protocol: str, port: int, ca: Path, n: int) -> tuple[float, int, int, float]:
    async def main() -> tuple[float, int]:
        opts = ConnectOptions(protocol=protocol, host=HOST, port=port, ca_file=ca)
        async with open_connection(opts) as conn:
            r = await conn.request("GET", f"/bytes/{n}", keep_body=False)
        assert r.status == 200 and r.body_bytes == n, (r.status, r.body_bytes)
        return (r.end_ns - r.request_sent_ns) / 1e9, r.body_bytes

    c0 = self_cpu_s()
    wall, nbytes = trio.run(main)
    return wall, nbytes, 1, self_cpu_s() - c0


def lab_gets(
    protocol: str, port: int, ca: Path, total: int, concurrency: int = 10
) -> tuple[float, int, int, float]:
    async def main() -> float:
        opts = ConnectOptions(protocol=protocol, host=HOST, port=port, ca_file=ca)
        async with open_connection(opts) as conn:
            await conn.request("GET", f"/bytes/{SMALL_BYTES}")  # warm up

            async def worker(k: int) -> None:
                for _ in range(k):
                    r = await conn.request("GET", f"/bytes/{SMALL_BYTES}")
                    assert r.status == 200 and r.body_bytes == SMALL_BYTES

            t0 = time.monotonic()
            async with trio.open_nursery() as nursery:
                for _ in range(concurrency):
                    nursery.start_soon(worker, total // concurrency)
            return time.monotonic() - t0

    c0 = self_cpu_s()
    wall = trio.run(main)
    n = total // concurrency * concurrency
    return wall, n * SMALL_BYTES, n, self_cpu_s() - c0


def h2load(port: int, path: str, n: int, c: int, m: int, log: Path) -> tuple[float, ...]:
    args = nghttp2.H2loadArgs(
        urls=(f"https://{HOST}:{port}{path}",), requests=n, clients=c, max_concurrent_streams=m
    )
    _wall, cpu, text = run_client(nghttp2.h2load_argv(args), log)
    res = nghttp2.parse_h2load(text)
    assert res.succeeded == n and res.failed == 0, text[-1500:]
    return res.duration_s, res.data_bytes, res.succeeded, cpu


def gtlsclient(port: int, path: str, n: int, workdir: Path) -> tuple[float, ...]:
    dl = workdir / "gtls-download"
    dl.mkdir(parents=True, exist_ok=True)
    args = ngtcp2.ClientArgs(
        host=HOST,
        port=port,
        urls=(f"https://localhost:{port}{path}",),
        requests=n,
        quiet=True,
        download_dir=dl,
    )
    wall, cpu, _text = run_client(ngtcp2.client_argv(args), workdir / "gtlsclient.log")
    name = path.rsplit("/", 1)[1]
    got = (dl / name).stat().st_size
    (dl / name).unlink()
    return wall, got * n, n, cpu


def go_agent_download(
    protocol: str, port: int, ca: Path, n: int, workdir: Path
) -> tuple[float, ...]:
    """lab-go-agent's bulk workload: (wall s of the transfer, bytes, 1, the agent's CPU s)."""
    out = workdir / f"go-agent-{protocol}.json"
    cfg = AgentConfig(
        protocol=protocol,
        host=HOST,
        port=port,
        ca_file=str(ca),
        base_rtt_ms=0.0,
        workloads=[{"kind": "bulk", "bytes": n}],  # type: ignore[list-item]
        out=str(out),
    )
    config = workdir / f"go-agent-{protocol}.config.json"
    config.write_text(cfg.model_dump_json())
    _wall, cpu, _text = run_client(go.agent_argv(config), workdir / "go-agent.log")
    (bulk,) = json.loads(out.read_text())["workloads"]
    if bulk["error"]:
        raise RuntimeError(bulk["error"])
    ms = next(r["value"] for r in bulk["rows"] if r["metric"] == "completion_ms")
    return ms / 1e3, n, 1, cpu


# --- the run --------------------------------------------------------------------------------
Job = tuple[
    str, str, str, Callable[[], tuple[float, ...]], str
]  # workload, client, proto, fn, note


def jobs(port: int, ca: Path, size: int, gets: int, h2load_gets: int, root: Path) -> list[Job]:
    """Every client measurement against one server listening on `port`."""
    big, small, log = f"/bytes/{size}", f"/bytes/{SMALL_BYTES}", root / "h2load.log"
    out: list[Job] = []
    for proto in ("h2", "h3"):
        out.append(("download", "lab", proto, lambda p=proto: lab_download(p, port, ca, size), ""))
    for proto in ("h2", "h3"):
        fn = lambda p=proto: go_agent_download(p, port, ca, size, root)  # noqa: E731
        out.append(("download", "go agent", proto, fn, ""))
    out.append(("download", "h2load", "h2", lambda: h2load(port, big, 1, 1, 1, log), ""))
    out.append(("download", "gtlsclient", "h3", lambda: gtlsclient(port, big, 1, root), ""))
    for proto in ("h2", "h3"):
        fn = lambda p=proto: lab_gets(p, port, ca, gets)  # noqa: E731
        out.append(("small GETs", "lab", proto, fn, "1 conn, 10 concurrent"))
    fn = lambda: h2load(port, small, h2load_gets, 10, 10, log)  # noqa: E731
    out.append(("small GETs", "h2load", "h2", fn, "10 conns × 10 streams"))
    fn = lambda: gtlsclient(port, small, gets, root)  # noqa: E731
    out.append(("small GETs", "gtlsclient", "h3", fn, "1 conn, ≤100 streams"))
    return out


def go_missing() -> str | None:
    """Why the Go server and agent cannot run here (after building them), or None."""
    try:
        print(go.build(), file=sys.stderr)
    except HostNotCapable as e:
        return str(e).splitlines()[0]
    return None


def bench(size: int, gets: int, h2load_gets: int) -> list[Row]:
    """Run every job against Caddy, the Go server, then the reference server."""
    rows: list[Row] = []
    no_go = go_missing()
    with tempfile.TemporaryDirectory(prefix="lab-bench-peers-") as tmp:
        root = Path(tmp)
        certs = tls.ensure_certs(root / "tls")
        for srv in ("caddy", "go", "reference"):
            if no_go and srv == "go":
                rows.append(Row("download", "go", "-", "-", 1, 0, 1, 0, 0, f"SKIPPED {no_go}"))
                continue
            with server(srv, root, certs, (SMALL_BYTES, size)) as (port, pid):
                for workload, cli, proto, fn, note in jobs(
                    port, certs.ca_cert, size, gets, h2load_gets, root
                ):
                    if no_go and cli == "go agent":
                        continue
                    try:  # one failing peer must not hide the others
                        wall, nbytes, nreq, scpu, ccpu = measured(pid, fn)
                        row = Row(workload, srv, cli, proto, wall, nbytes, nreq, scpu, ccpu, note)
                    except Exception as exc:
                        row = Row(workload, srv, cli, proto, 1, 0, 1, 0, 0, f"FAILED {exc!r:.90}")
                    rows.append(row)
                    print("  " + " | ".join(row.cells()[:5]), file=sys.stderr)
    return rows


def table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    head = ["workload", "server", "client", "proto", "result", "server CPU", "client CPU", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mb", type=float, default=100.0, help="download size, MB (10^6 B)")
    p.add_argument("--gets", type=int, default=2000, help="small GETs per lab/gtlsclient row")
    p.add_argument("--quick", action="store_true", help="10 MB download, 500 GETs")
    args = p.parse_args()
    size = 10_000_000 if args.quick else int(args.size_mb * 1e6)
    gets = 500 if args.quick else args.gets
    h2load_gets = 2000 if args.quick else 10_000
    print(f"body {size:,} B, small GETs of {SMALL_BYTES} B, {os.cpu_count()} CPUs", file=sys.stderr)
    print(table(bench(size, gets, h2load_gets)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
