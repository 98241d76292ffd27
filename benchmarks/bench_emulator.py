"""Emulator accuracy and capacity with real namespaces and packets. Run as root:

    python benchmarks/bench_emulator.py [--duration 4] [--rates 10000,20000,30000,40000]

1. accuracy: 20 Mbit/s, 25 ms each way, 1500-byte IP packets (UDP probes at half the line rate in
   both directions at once). Delay error = one-way latency − (25 ms + serialisation 0.6 ms),
   end to end from timestamped probes (sender and receiver share CLOCK_MONOTONIC), and the
   emulator's own lateness (write − release time).
2. UDP capacity: unlimited rate, 25 ms each way, 1500-byte packets, a UDP flood split evenly over
   both directions at increasing total packet rates.
3. TCP capacity: one TCP bulk flow (server → client) over 25 ms each way at increasing rate_mbit
   (queue 1.5 BDP), counting the data and ACK packets through the emulator.

A rate passes when the delay error p99 ≤ 1 ms and there is no loss that was not configured (no
TUN TX drops, no missing UDP probes). The emulator's CPU is user+sys seconds per wall second.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lab.link.emulator import EmulatorProcess, EmulatorReport
from lab.link.spec import DirectionSpec, LinkSpec, QueueSpec
from lab.net.topology import Topology

IP_SIZE = 1500
HDR = struct.Struct("!QQ")  # seq, send time (CLOCK_REALTIME ns, taken just before sendto)
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35  # kernel receive time (CLOCK_REALTIME): the receiver's scheduling delay
SCM_TIMESTAMPNS = SO_TIMESTAMPNS  # does not count (the box is shared)
EMU_KW: dict[str, float] = {}


# --- probe processes (run inside a namespace) ------------------------------------------------
def role_send(dst: str, port: int, pps: float, duration: float, size: int, catch_up: bool) -> None:
    """Send `pps` timestamped UDP datagrams per second; print how many were sent.

    Without `catch_up`, after a scheduling hiccup the next batch still waits ≥ half an interval,
    so probes never queue behind each other in a rate-limited link (that queueing is configured
    behaviour, not emulator error); with it, late batches are sent back to back (floods)."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    pad = b"\0" * (size - HDR.size)
    batch = max(1, int(pps / 2000))  # send in small bursts every ≥ 0.5 ms at high rates
    step = int(1e9 / pps * batch)
    mono = time.monotonic_ns
    wall = time.time_ns
    end = mono() + int(duration * 1e9)
    due = mono()
    seq = 0
    while due < end:
        now = mono()
        if due - now > 200_000:
            time.sleep((due - now - 150_000) / 1e9)
            continue
        while mono() < due:
            pass
        for _ in range(batch):
            with contextlib.suppress(BlockingIOError):
                s.sendto(HDR.pack(seq, wall()) + pad, (dst, port))
            seq += 1
        due = due + step if catch_up else max(due + step, mono() + step // 2)
    print(json.dumps({"sent": seq}), flush=True)


def role_recv(addr: str, port: int, duration: float, ready_file: str) -> None:
    """Receive probes for `duration` s (+1 s drain); print count and latency samples summary."""
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 << 20)
    s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    s.bind((addr, port))
    s.settimeout(1.0)
    Path(ready_file).write_text("ready")
    lat: list[int] = []
    seqs: set[int] = set()
    deadline = time.monotonic() + duration + 30
    while time.monotonic() < deadline:
        try:
            data, anc, _, _ = s.recvmsg(65536, 64)
        except TimeoutError:
            if seqs:
                break
            continue
        sec, nsec = struct.unpack("qq", anc[0][2][:16])
        t = sec * 1_000_000_000 + nsec
        seq, sent = HDR.unpack_from(data)
        seqs.add(seq)
        lat.append(t - sent)
    print(json.dumps({"received": len(seqs), "latency_ns": lat}), flush=True)


def role_tcp_server(addr: str, port: int, duration: float, ready_file: str) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port))
    s.listen()
    Path(ready_file).write_text("ready")
    conn, _ = s.accept()
    buf = b"\0" * (1 << 20)
    end = time.monotonic() + duration
    sent = 0
    while time.monotonic() < end:
        sent += conn.send(buf)
    conn.close()
    print(json.dumps({"sent": sent}), flush=True)


def role_tcp_client(dst: str, port: int) -> None:
    s = socket.create_connection((dst, port))
    got = 0
    while chunk := s.recv(1 << 20):
        got += len(chunk)
    print(json.dumps({"received": got}), flush=True)


# --- orchestration ----------------------------------------------------------------------------
def _spawn(topo: Topology, ns: str, *args: object) -> subprocess.Popen[str]:
    argv = [sys.executable, __file__, "--role", *map(str, args)]
    return subprocess.Popen(topo.run_in(ns, argv), stdout=subprocess.PIPE, text=True)


def _wait_ready(path: Path, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > end:
            raise RuntimeError(f"{path} never appeared")
        time.sleep(0.01)


def _pct(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def udp_run(
    topo: Topology,
    link: LinkSpec,
    pps_total: float,
    duration: float,
    base_ns: int,
    tmp: Path,
    *,
    catch_up: bool = False,
) -> dict:
    """UDP probes at pps_total/2 in each direction at once; returns the figures of one row."""
    out = tmp / f"udp{pps_total:.0f}"
    payload = IP_SIZE - 28
    with EmulatorProcess(topo, link, seed=1, out_dir=out, **EMU_KW):
        recvs, sends = [], []
        for ns, addr, port in (
            (topo.server_ns, topo.server_v4, 9400),
            (topo.client_ns, topo.client_v4, 9401),
        ):
            ready = out / f"ready{port}"
            recvs.append(_spawn(topo, ns, "recv", addr, port, duration, ready))
            _wait_ready(ready)
        t0 = time.monotonic()
        for ns, dst, port in (
            (topo.client_ns, topo.server_v4, 9400),
            (topo.server_ns, topo.client_v4, 9401),
        ):
            sends.append(
                _spawn(topo, ns, "send", dst, port, pps_total / 2, duration, payload, int(catch_up))
            )
        sent = sum(json.loads(p.communicate()[0])["sent"] for p in sends)
        wall = time.monotonic() - t0
        results = [json.loads(p.communicate()[0]) for p in recvs]
    rep = emu_report(out)
    received = sum(r["received"] for r in results)
    errs = [lat - base_ns for r in results for lat in r["latency_ns"]]
    return _row(rep, duration, sent=sent, received=received, errs=errs, wall_s=wall)


def emu_report(out: Path) -> EmulatorReport:
    return EmulatorReport.load(out)


def _row(rep: EmulatorReport, wall: float, **kw: object) -> dict:
    """One table row; rates and CPU per second of traffic (`wall` = the senders' duration)."""
    d = rep.directions
    late = max((x.lateness_ns["p99"] or 0) for x in d.values())
    return {
        "pkts_per_s": sum(x.packets_out for x in d.values()) / wall,
        "late_p99_ms": late / 1e6,
        "tun_drops": sum(x.tun_tx_dropped or 0 for x in d.values()),
        "model_drops": sum(x.packets_dropped for x in d.values()),
        "cpu": (rep.cpu_user_s + rep.cpu_sys_s) / wall,
        "realtime": rep.realtime_granted,
        **kw,
    }


def tcp_run(topo: Topology, rate_mbit: float, duration: float, tmp: Path) -> dict:
    spec = DirectionSpec(delay_ms=25, rate_mbit=rate_mbit, queue=QueueSpec(bdp=1.5))
    link = LinkSpec(uplink=spec, downlink=spec)
    out = tmp / f"tcp{rate_mbit:.0f}"
    with EmulatorProcess(topo, link, seed=1, out_dir=out, **EMU_KW):
        ready = out / "ready"
        srv = _spawn(topo, topo.server_ns, "tcp-server", topo.server_v4, 9500, duration, ready)
        _wait_ready(ready)
        t0 = time.monotonic()
        cli = _spawn(topo, topo.client_ns, "tcp-client", topo.server_v4, 9500)
        got = json.loads(cli.communicate()[0])["received"]
        wall = time.monotonic() - t0
        srv.communicate()
    rep = emu_report(out)
    return _row(rep, duration, goodput_mbit=got * 8 / duration / 1e6, wall_s=wall)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--role", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--duration", type=float, default=4.0)
    p.add_argument("--rates", default="5000,10000,20000,30000,40000")
    p.add_argument("--tcp-rates", default="60,120,240,360")
    p.add_argument("--early-wake-us", type=float, default=30.0)
    p.add_argument("--tolerance-us", type=float, default=10.0)
    p.add_argument("--no-realtime", action="store_true")
    p.add_argument("--skip", default="", help="comma list of sections to skip: 1,2,3")
    args = p.parse_args()
    if args.role:
        r, *a = args.role
        if r == "send":
            role_send(a[0], int(a[1]), float(a[2]), float(a[3]), int(a[4]), a[5] == "1")
        elif r == "recv":
            role_recv(a[0], int(a[1]), float(a[2]), a[3])
        elif r == "tcp-server":
            role_tcp_server(a[0], int(a[1]), float(a[2]), a[3])
        elif r == "tcp-client":
            role_tcp_client(a[0], int(a[1]))
        return

    EMU_KW.update(
        early_wake_us=args.early_wake_us,
        tolerance_us=args.tolerance_us,
        realtime=not args.no_realtime,
    )
    skip = set(args.skip.split(","))
    print(f"emulator: {EMU_KW}")
    with tempfile.TemporaryDirectory() as d, Topology() as topo:
        tmp = Path(d)
        if "1" not in skip:
            accuracy(topo, args.duration, tmp)
        if "2" not in skip:
            udp_capacity(topo, args.rates, args.duration, tmp)
        if "3" not in skip:
            tcp_capacity(topo, args.tcp_rates, args.duration, tmp)


def accuracy(topo: Topology, duration: float, tmp: Path) -> None:
    print("## 1. accuracy: 20 Mbit/s, 25 ms each way, 1500-byte packets, 50% load both ways")
    spec = DirectionSpec(delay_ms=25, rate_mbit=20)
    ser_ns = IP_SIZE * 8 / 20e6 * 1e9
    pps = 20e6 / (IP_SIZE * 8)  # line rate of one direction = half of it in each direction
    link = LinkSpec(uplink=spec, downlink=spec)
    r = udp_run(topo, link, pps, duration, int(25e6 + ser_ns), tmp)
    r["target"] = pps
    _print_udp([r])


def udp_capacity(topo: Topology, rates: str, duration: float, tmp: Path) -> None:
    print("\n## 2. UDP capacity: unlimited rate, 25 ms each way, 1500-byte packets")
    spec = DirectionSpec(delay_ms=25)
    link = LinkSpec(uplink=spec, downlink=spec)
    rows = []
    for rate in (float(x) for x in rates.split(",")):
        rows.append(udp_run(topo, link, rate, duration, int(25e6), tmp, catch_up=True))
        rows[-1]["target"] = rate
    _print_udp(rows)


def tcp_capacity(topo: Topology, tcp_rates: str, duration: float, tmp: Path) -> None:
    print("\n## 3. TCP bulk capacity: 25 ms each way, rate_mbit per direction, queue 1.5 BDP")
    rates = tcp_rates.split(",")
    trows = [tcp_run(topo, float(x), duration, tmp) for x in rates]
    print(
        f"{'rate':>6} {'goodput':>8} {'pkts/s':>8} {'late p99':>9} {'tun drop':>9}"
        f" {'queue drop':>10} {'cpu':>5} {'ok':>3}"
    )
    for rate, t in zip(rates, trows, strict=True):
        ok = t["late_p99_ms"] <= 1 and t["tun_drops"] == 0
        print(
            f"{rate:>6} {t['goodput_mbit']:8.1f} {t['pkts_per_s']:8.0f} "
            f"{t['late_p99_ms']:9.3f} {t['tun_drops']:9d} {t['model_drops']:10d} "
            f"{t['cpu']:5.0%} {'yes' if ok else 'NO':>3}"
        )
    print(f"\nrealtime (SCHED_FIFO) granted: {trows[-1]['realtime']}")


def _print_udp(rows: list[dict]) -> None:
    print(
        f"{'target':>7} {'pkts/s':>8} {'e2e err p50':>11} {'e2e err p99':>11} "
        f"{'late p99':>9} {'lost':>6} {'tun drop':>9} {'cpu':>5} {'ok':>3}"
    )
    for r in rows:
        errs = r["errs"]
        p99 = _pct(errs, 0.99) / 1e6
        lost = r["sent"] - r["received"] - r["model_drops"]
        ok = p99 <= 1 and lost == 0 and r["tun_drops"] == 0
        print(
            f"{r.get('target', 0):7.0f} {r['pkts_per_s']:8.0f} {_pct(errs, 0.5) / 1e6:11.3f} "
            f"{p99:11.3f} {r['late_p99_ms']:9.3f} {lost:6d} {r['tun_drops']:9d} "
            f"{r['cpu']:5.0%} {'yes' if ok else 'NO':>3}"
        )


if __name__ == "__main__":
    main()
