"""Loopback goodput of one large HTTP/3 download: the lab's server + client on trio versus a
minimal asyncio server/client pair written the way aioquic's own examples are (send the whole
body, let the library pace it), for both engines (aioquic, qh3).

Run: `python benchmarks/bench_h3_loopback.py [--size-mb 50] [--repeat 3]`. Prints one row per
(stack, engine): median goodput in Mbit/s (body bytes × 8 / (last byte − request sent)), the
lab/minimal ratio, and CPU seconds per GB of server and client (user + sys). The server runs in
a child process, the client in this one; both share the machine's cores with whatever else runs.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import trio

from lab.http import app, payload
from lab.http.h3_client import open_h3
from lab.http.h3_server import serve_h3
from lab.http.quic_engine import ENGINES, load_engine, send_backlog
from lab.http.settings import QuicSettings, ServerConfig
from lab.http.tls import ensure_certs
from lab.http.types import ConnectOptions

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cpu_s(pid: int) -> float:
    """user + sys CPU seconds of a process, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


# --- the lab's pair ----------------------------------------------------------------------------


def _lab_server(engine: str, port: int, cert: str, key: str) -> None:
    config = ServerConfig(
        host="127.0.0.1",
        port=port,
        cert_file=Path(cert),
        key_file=Path(key),
        quic=QuicSettings(engine=engine),  # type: ignore[arg-type]
    )

    async def main() -> None:
        await serve_h3(config, lambda r, w: app.handle(r, w, config), shutdown=trio.Event())

    trio.run(main)


async def _lab_download(engine: str, port: int, ca: Path, n: int) -> float:
    opts = ConnectOptions(
        protocol="h3",
        host="127.0.0.1",
        port=port,
        ca_file=ca,
        quic=QuicSettings(engine=engine),  # type: ignore[arg-type]
    )
    async with open_h3(opts) as conn:
        r = await conn.request("GET", f"/bytes/{n}", keep_body=False)
    assert r.status == 200 and r.body_bytes == n, (r.status, r.body_bytes)
    return n * 8 / ((r.end_ns - r.request_sent_ns) / 1e9) / 1e6


# --- the minimal pair (aioquic examples style) ---------------------------------------------------


def _minimal_server(engine_name: str, port: int, cert: str, key: str, n: int, fed: bool) -> None:
    """aioquic-examples style server; `fed` hands the body over in 1 MiB pieces while the
    engine's backlog is under 4 MiB (instead of all at once)."""
    engine = load_engine(engine_name)  # type: ignore[arg-type]
    aio = __import__(f"{engine_name}.asyncio", fromlist=["serve", "QuicConnectionProtocol"])
    body = payload.body_slice(0, n)
    piece, high_water = 1 << 20, 4 << 20

    class Server(aio.QuicConnectionProtocol):
        def __init__(self, *a, **k) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*a, **k)
            self.h3 = None
            self.feeding: dict[int, int] = {}  # stream id -> body offset

        def _top_up(self) -> None:
            for sid, off in list(self.feeding.items()):
                while off < n and send_backlog(engine, self._quic, sid) < high_water:
                    end = min(n, off + piece)
                    self.h3.send_data(sid, body[off:end], end_stream=end == n)
                    off = end
                self.feeding[sid] = off
                if off >= n:
                    del self.feeding[sid]
            self.transmit()

        def datagram_received(self, data, addr) -> None:  # type: ignore[no-untyped-def]
            super().datagram_received(data, addr)
            if self.feeding:
                self._top_up()

        def quic_event_received(self, event) -> None:  # type: ignore[no-untyped-def]
            if isinstance(event, engine.events.ProtocolNegotiated):
                self.h3 = engine.h3.H3Connection(self._quic)
            if self.h3 is None:
                return
            for e in self.h3.handle_event(event):
                if isinstance(e, engine.h3_events.HeadersReceived):
                    self.h3.send_headers(e.stream_id, [(b":status", b"200")])
                    if fed:
                        self.feeding[e.stream_id] = 0
                        self._top_up()
                    else:
                        self.h3.send_data(e.stream_id, body, end_stream=True)
                        self.transmit()

    cfg = engine.make_configuration(QuicSettings(engine=engine_name), is_client=False)  # type: ignore[arg-type]
    engine.load_cert_chain(cfg, Path(cert), Path(key))

    async def main() -> None:
        await aio.serve("127.0.0.1", port, configuration=cfg, create_protocol=Server)
        await asyncio.Future()

    asyncio.run(main())


def _minimal_download(engine_name: str, port: int, n: int) -> float:
    engine = load_engine(engine_name)  # type: ignore[arg-type]
    aio = __import__(f"{engine_name}.asyncio", fromlist=["connect", "QuicConnectionProtocol"])

    class Client(aio.QuicConnectionProtocol):
        def __init__(self, *a, **k) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*a, **k)
            self.h3 = engine.h3.H3Connection(self._quic)
            self.got = 0
            self.done = asyncio.get_running_loop().create_future()

        def quic_event_received(self, event) -> None:  # type: ignore[no-untyped-def]
            for e in self.h3.handle_event(event):
                if isinstance(e, engine.h3_events.DataReceived):
                    self.got += len(e.data)
                    if e.stream_ended and not self.done.done():
                        self.done.set_result(time.monotonic())

    cfg = engine.make_configuration(
        QuicSettings(engine=engine_name),
        is_client=True,
        server_name="localhost",  # type: ignore[arg-type]
    )
    engine.set_verification(cfg, None)

    async def main() -> float:
        async with aio.connect("127.0.0.1", port, configuration=cfg, create_protocol=Client) as c:
            sid = c._quic.get_next_available_stream_id()
            head = [
                (b":method", b"GET"),
                (b":scheme", b"https"),
                (b":authority", b"localhost"),
                (b":path", b"/"),
            ]
            c.h3.send_headers(sid, head, end_stream=True)
            c.transmit()
            start = time.monotonic()
            end = await c.done
            assert c.got == n, c.got
            return n * 8 / (end - start) / 1e6

    return asyncio.run(main())


# --- driver --------------------------------------------------------------------------------------


def _measure(stack: str, engine: str, n: int, repeat: int, certs) -> dict:  # type: ignore[no-untyped-def]
    port = _free_udp_port()
    ctx = mp.get_context("spawn")
    if stack == "lab":
        proc = ctx.Process(target=_lab_server, args=(engine, port, str(certs.cert), str(certs.key)))
    else:
        fed = stack == "minimal-fed"
        args = (engine, port, str(certs.cert), str(certs.key), n, fed)
        proc = ctx.Process(target=_minimal_server, args=args)
    proc.start()
    try:
        time.sleep(1.5)  # imports + bind
        rates, server_cpu, client_cpu = [], 0.0, 0.0
        for _ in range(repeat):
            s0, c0 = _cpu_s(proc.pid), time.process_time()
            if stack == "lab":
                rates.append(trio.run(_lab_download, engine, port, certs.ca_cert, n))
            else:
                rates.append(_minimal_download(engine, port, n))
            server_cpu += _cpu_s(proc.pid) - s0
            client_cpu += time.process_time() - c0
        gb = n * repeat / 1e9
        return {
            "stack": stack,
            "engine": engine,
            "mbit_s": statistics.median(rates),
            "runs": rates,
            "server_cpu_s_per_gb": server_cpu / gb,
            "client_cpu_s_per_gb": client_cpu / gb,
        }
    finally:
        proc.terminate()
        proc.join(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=50.0, help="body size, MB (10^6 bytes)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--engines", nargs="+", default=list(ENGINES))
    args = parser.parse_args(argv)
    n = int(args.size_mb * 1e6)
    certs = ensure_certs()
    rows = []
    for engine in args.engines:
        for stack in ("minimal", "minimal-fed", "lab"):
            rows.append(_measure(stack, engine, n, args.repeat, certs))
    versions = {e: load_engine(e).version for e in args.engines}  # type: ignore[arg-type]
    print("lab/min: the lab's goodput over the better minimal pair of the same engine")
    print(f"one {n / 1e6:.0f} MB download over h3 on loopback, median of {args.repeat}; {versions}")
    print(
        f"{'stack':11} {'engine':8} {'Mbit/s':>8} {'lab/min':>8} {'srv CPU s/GB':>13} "
        f"{'cli CPU s/GB':>13}  runs"
    )
    base: dict[str, float] = {}  # the better of the two minimal pairs, per engine
    for r in rows:
        if r["stack"].startswith("minimal"):
            base[r["engine"]] = max(base.get(r["engine"], 0.0), r["mbit_s"])
    for r in rows:
        ratio = r["mbit_s"] / base[r["engine"]] if r["engine"] in base else float("nan")
        runs = " ".join(f"{x:.0f}" for x in r["runs"])
        print(
            f"{r['stack']:11} {r['engine']:8} {r['mbit_s']:8.1f} {ratio:8.2f} "
            f"{r['server_cpu_s_per_gb']:13.1f} {r['client_cpu_s_per_gb']:13.1f}  {runs}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
