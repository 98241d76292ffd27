"""Path probes for `lab calibrate`: UDP echo probes, UDP floods and TCP bulk transfers.

Standard library only, so that `python -m lab.calibrate.probes echo …` starts fast inside a
namespace.

- **Echo** (a subprocess in the server namespace, `EchoProcess`): answers every probe at once
  and records which sequence numbers arrived, in arrival order, with their CLOCK_MONOTONIC
  arrival time. Its reply carries the probe's sequence number, a reply index (the echo's arrival
  counter) and the echo's receive and send times. It prints `ready PORT` once bound, and on EOF of
  its stdin (or SIGTERM) prints its record as one JSON line and exits.
- **Probe client** (`run_probe_client`, in the caller's process on a socket created in the client
  namespace): sends `count` probes every `interval_s`, timestamps every send and every reply.
  All namespaces share one CLOCK_MONOTONIC, so one-way delays are real differences of clock reads.
- **Throughput** (`measure_udp`, `measure_tcp`): sender and receiver threads on sockets created in
  the two namespaces; the receiver timestamps every datagram / every `recv` (ns, monotonic).

Every thread is joined and every socket closed in `finally`; every subprocess is killed in
`finally` if it did not exit by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

PROBE_MAGIC = b"LBP1"
REPLY_MAGIC = b"LBR1"
PROBE_FMT = struct.Struct("!4sIQ")  # magic, seq, client send ns
REPLY_FMT = struct.Struct("!4sIIQQQ")  # magic, seq, reply index, client send, echo rx, echo tx
PROBE_PAYLOAD_BYTES = 64  # UDP payload of probes and replies (both directions alike)
UDP_IP_OVERHEAD = {socket.AF_INET: 28, socket.AF_INET6: 48}  # IP + UDP header bytes
MTU_BYTES = 1500
SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; not exported by Python 3.11
RCVBUF_BYTES = 8 << 20
mono = time.monotonic_ns


class SocketFactory(Protocol):
    """What the probes need of `lab.net.topology.Topology`."""

    def socket(self, ns: str, family: int, kind: int, proto: int = 0) -> socket.socket: ...

    def run_in(self, ns: str, argv: list[str]) -> list[str]: ...


def family_of(addr: str) -> int:
    """AF_INET6 for an address with a colon, else AF_INET."""
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


RT_PRIORITY = 5  # SCHED_FIFO priority of the probe loops (below the emulator's 10)


@contextlib.contextmanager
def realtime(enabled: bool = True) -> Iterator[bool]:
    """Run the calling thread with SCHED_FIFO (priority RT_PRIORITY) inside the block, if
    allowed; yields whether it was granted. The loops inside block in select(), never spin."""
    if not enabled:
        yield False
        return
    try:
        old = (os.sched_getscheduler(0), os.sched_getparam(0))
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
    except OSError:
        yield False
        return
    try:
        yield True
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, old[0], old[1])


def _big_rcvbuf(sock: socket.socket) -> None:
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)


# =============================================================================================
# echo (subprocess side)
# =============================================================================================
def echo_main(bind: str, port: int, out: Any = None) -> int:
    """Run the echo until stdin closes or SIGTERM; print `ready PORT`, then the JSON record
    `{"seqs": [...], "rx_ns": [...], "tx_ns": [...], "ignored": n}` (arrival order)."""
    out = out or sys.stdout
    sock = socket.socket(family_of(bind), socket.SOCK_DGRAM)
    _big_rcvbuf(sock)
    sock.bind((bind, port))
    sock.setblocking(False)
    seqs = array("I")
    rx_ns = array("q")
    tx_ns = array("q")
    ignored = 0
    stop = False

    def _on_term(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, _on_term)
    stdin_fd = sys.stdin.fileno()
    pad = bytes(PROBE_PAYLOAD_BYTES - REPLY_FMT.size)
    print(f"ready {sock.getsockname()[1]}", file=out, flush=True)
    with contextlib.suppress(OSError):
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
    try:
        while not stop:
            readable, _, _ = select.select([sock, stdin_fd, wake_r], [], [], 1.0)
            if sock in readable:
                while True:
                    try:
                        data, addr = sock.recvfrom(4096)
                    except BlockingIOError:
                        break
                    t_rx = mono()
                    if len(data) < PROBE_FMT.size or data[:4] != PROBE_MAGIC:
                        ignored += 1
                        continue
                    _, seq, t_send = PROBE_FMT.unpack_from(data)
                    idx = len(seqs)
                    seqs.append(seq)
                    rx_ns.append(t_rx)
                    t_tx = mono()
                    reply = REPLY_FMT.pack(REPLY_MAGIC, seq, idx, t_send, t_rx, t_tx) + pad
                    tx_ns.append(t_tx)
                    with contextlib.suppress(OSError):
                        sock.sendto(reply, addr)
            if stdin_fd in readable and not os.read(stdin_fd, 4096):
                break
            if wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
    finally:
        sock.close()
        signal.set_wakeup_fd(-1)
        os.close(wake_r)
        os.close(wake_w)
    record = {
        "seqs": seqs.tolist(),
        "rx_ns": rx_ns.tolist(),
        "tx_ns": tx_ns.tolist(),
        "ignored": ignored,
    }
    print(json.dumps(record), file=out, flush=True)
    return 0


# =============================================================================================
# echo (caller side)
# =============================================================================================
@dataclass(frozen=True)
class EchoRecord:
    """What the echo saw: probe sequence numbers in arrival order, their arrival times and the
    send times of the replies (CLOCK_MONOTONIC ns)."""

    seqs: list[int]
    rx_ns: list[int]
    tx_ns: list[int]
    ignored: int = 0


class EchoError(RuntimeError):
    """The echo process failed to start or to report."""


class EchoProcess:
    """The echo as `ip netns exec NS python -m lab.calibrate.probes echo`; `start()` → port,
    `stop()` → EchoRecord. A context manager: leaving it kills the process if it still runs."""

    def __init__(self, topology: SocketFactory, ns: str, bind: str) -> None:
        self.argv = topology.run_in(
            ns,
            [sys.executable, "-m", "lab.calibrate.probes", "echo", "--bind", bind, "--port", "0"],
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.port: int | None = None

    def start(self, timeout_s: float = 10.0) -> int:
        """Start the echo and wait for its `ready PORT` line; returns the UDP port."""
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("ready "):
            self.kill()
            raise EchoError(f"echo did not start: {line!r} {self._stderr()}")
        self.port = int(line.split()[1])
        return self.port

    def stop(self, timeout_s: float = 10.0) -> EchoRecord:
        """Close its stdin, read its record, wait for it to exit."""
        if self.proc is None:
            raise EchoError("echo was not started")
        try:
            out, err = self.proc.communicate(input=b"", timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise EchoError(f"echo did not stop within {timeout_s} s") from None
        lines = out.decode().strip().splitlines()
        if self.proc.returncode != 0 or not lines:
            raise EchoError(f"echo exited with {self.proc.returncode}: {err.decode()[-2000:]}")
        raw = json.loads(lines[-1])
        return EchoRecord(
            seqs=raw["seqs"], rx_ns=raw["rx_ns"], tx_ns=raw["tx_ns"], ignored=raw["ignored"]
        )

    def kill(self) -> None:
        """Kill the process if it still runs (idempotent)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def _stderr(self) -> str:
        if self.proc is None or self.proc.stderr is None or self.proc.poll() is None:
            return ""
        return self.proc.stderr.read().decode(errors="replace")[-2000:]

    def __enter__(self) -> EchoProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
        if self.proc is not None:
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()


# =============================================================================================
# probe client
# =============================================================================================
@dataclass(frozen=True)
class Reply:
    """One reply as the client received it (all times CLOCK_MONOTONIC ns)."""

    seq: int  # the probe's sequence number
    reply_index: int  # the echo's arrival counter for the probe it answers
    echo_rx_ns: int
    echo_tx_ns: int
    client_rx_ns: int


@dataclass(frozen=True)
class ProbeRun:
    """The client's side of a probe run: send time per sequence number, replies in arrival order."""

    send_ns: list[int]
    replies: list[Reply]
    ip_bytes: int  # IP packet size of every probe and reply


def run_probe_client(
    sock: socket.socket,
    dest: tuple[str, int],
    count: int,
    interval_s: float,
    drain_s: float,
    progress: Callable[[int], None] | None = None,
) -> ProbeRun:
    """Send `count` probes to `dest`, one every `interval_s`, and collect replies until `drain_s`
    after the last one. `progress(sent)` is called every ~2 % of the probes. Runs in this thread;
    `sock` is a UDP socket (its namespace decides where the probes come from)."""
    sock.setblocking(False)
    _big_rcvbuf(sock)
    send_ns = [0] * count
    replies: list[Reply] = []
    pad = bytes(PROBE_PAYLOAD_BYTES - PROBE_FMT.size)
    interval_ns = round(interval_s * 1e9)
    step = max(1, count // 50)
    start = mono()
    end: int | None = None
    sent = 0
    while True:
        now = mono()
        if sent < count and now >= start + sent * interval_ns:
            t = mono()
            with contextlib.suppress(BlockingIOError, InterruptedError):
                sock.sendto(PROBE_FMT.pack(PROBE_MAGIC, sent, t) + pad, dest)
            send_ns[sent] = t
            sent += 1
            if progress is not None and (sent % step == 0 or sent == count):
                progress(sent)
            continue
        if sent == count and end is None:
            end = now + round(drain_s * 1e9)
        due = start + sent * interval_ns if end is None else end
        if end is not None and now >= end:
            break
        readable, _, _ = select.select([sock], [], [], max(0, due - now) / 1e9)
        if readable:
            while True:
                try:
                    data = sock.recv(4096)
                except BlockingIOError:
                    break
                t_rx = mono()
                if len(data) < REPLY_FMT.size or data[:4] != REPLY_MAGIC:
                    continue
                _, seq, idx, _t_send, e_rx, e_tx = REPLY_FMT.unpack_from(data)
                replies.append(Reply(seq, idx, e_rx, e_tx, t_rx))
    ip_bytes = PROBE_PAYLOAD_BYTES + UDP_IP_OVERHEAD[sock.family]
    return ProbeRun(send_ns=send_ns, replies=replies, ip_bytes=ip_bytes)


# =============================================================================================
# throughput
# =============================================================================================
TCPI_DATA_SEGS_IN = 152  # offset of tcpi_data_segs_in (u32) in struct tcp_info (Linux ≥ 4.6)


def tcp_data_segs_in(sock: socket.socket) -> int | None:
    """The kernel's count of data segments received on `sock` (in order or not, retransmits
    included): unlike the bytes `recv` returns, it does not wait for holes to be filled."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    except OSError:
        return None
    if len(raw) < TCPI_DATA_SEGS_IN + 4:
        return None
    return int(struct.unpack_from("=I", raw, TCPI_DATA_SEGS_IN)[0])


@dataclass
class Arrivals:
    """What a receiver saw: one (time ns, bytes) per datagram or per `recv` call; for TCP also
    the kernel's data-segment counter sampled at each of those times (`segs_in`)."""

    times_ns: array = field(default_factory=lambda: array("q"))
    sizes: array = field(default_factory=lambda: array("q"))
    segs_in: array = field(default_factory=lambda: array("q"))

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes)


@dataclass(frozen=True)
class FlowResult:
    """One throughput test: sender totals and the receiver's arrivals (payload bytes)."""

    kind: str  # "udp" or "tcp"
    sent_bytes: int  # payload bytes the sender handed to the kernel
    sent_packets: int  # datagrams (udp) / 0 for tcp
    send_start_ns: int
    send_end_ns: int
    arrivals: Arrivals
    ip_overhead_bytes: int  # per datagram (udp) / per MSS-sized segment (tcp)
    segment_bytes: int  # payload per datagram (udp) or the MSS (tcp)
    info: dict[str, Any] = field(default_factory=dict)  # e.g. congestion control

    @property
    def offered_ip_mbit(self) -> float:
        """The sender's achieved rate in IP-level Mbit/s (udp)."""
        dur = max(self.send_end_ns - self.send_start_ns, 1)
        ip_bytes = self.sent_bytes + self.sent_packets * self.ip_overhead_bytes
        return ip_bytes * 8e3 / dur


def _join(threads: list[threading.Thread], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


def measure_udp(
    topo: SocketFactory,
    src_ns: str,
    dst_ns: str,
    dst_addr: str,
    offered_ip_mbit: float,
    duration_s: float,
    drain_s: float,
    payload_bytes: int | None = None,
) -> FlowResult:
    """Flood `dst_addr` from `src_ns` at `offered_ip_mbit` (IP level) for `duration_s`, paced in
    1 ms ticks; the receiver in `dst_ns` timestamps every datagram until `drain_s` after the end."""
    fam = family_of(dst_addr)
    overhead = UDP_IP_OVERHEAD[fam]
    if payload_bytes is None:
        payload_bytes = MTU_BYTES - overhead  # 1500-byte IP packets
    rx = topo.socket(dst_ns, fam, socket.SOCK_DGRAM)
    tx = topo.socket(src_ns, fam, socket.SOCK_DGRAM)
    arrivals = Arrivals()
    stop = threading.Event()
    sender_done = threading.Event()
    totals = {"packets": 0, "start": 0, "end": 0}

    def receive() -> None:
        with realtime():
            _receive()

    def _receive() -> None:
        rx.settimeout(0.05)
        quiet_deadline: float | None = None
        while not stop.is_set():
            if sender_done.is_set() and quiet_deadline is None:
                quiet_deadline = time.monotonic() + drain_s
            if quiet_deadline is not None and time.monotonic() >= quiet_deadline:
                return
            try:
                n = rx.recv_into(buf)
            except TimeoutError:
                continue
            except OSError:
                return
            arrivals.times_ns.append(mono())
            arrivals.sizes.append(n)

    def send() -> None:
        with realtime():  # a stalled sender lets the queue run dry and the link idle
            _send()

    def _send() -> None:
        payload = bytes(payload_bytes)
        pkt_ip = payload_bytes + overhead
        pps = offered_ip_mbit * 1e6 / 8 / pkt_ip
        start = mono()
        totals["start"] = start
        end = start + round(duration_s * 1e9)
        sent = 0
        try:
            while not stop.is_set():
                now = mono()
                if now >= end:
                    break
                due = int((now - start) / 1e9 * pps) + 1
                while sent < due:
                    try:
                        tx.sendto(payload, (dst_addr, port))
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        return
                    sent += 1
                time.sleep(0.001)
        finally:
            totals["packets"] = sent
            totals["end"] = mono()
            sender_done.set()

    buf = bytearray(65536)
    threads: list[threading.Thread] = []
    try:
        _big_rcvbuf(rx)
        rx.bind((dst_addr, 0))
        port = rx.getsockname()[1]
        threads = [
            threading.Thread(target=receive, name="udp-rx", daemon=True),
            threading.Thread(target=send, name="udp-tx", daemon=True),
        ]
        for t in threads:
            t.start()
        _join(threads, duration_s + drain_s + 5.0)
    finally:
        stop.set()
        _join(threads, 2.0)
        tx.close()
        rx.close()
    return FlowResult(
        kind="udp",
        sent_bytes=totals["packets"] * payload_bytes,
        sent_packets=totals["packets"],
        send_start_ns=totals["start"],
        send_end_ns=totals["end"],
        arrivals=arrivals,
        ip_overhead_bytes=overhead,
        segment_bytes=payload_bytes,
    )


def measure_tcp(
    topo: SocketFactory,
    src_ns: str,
    dst_ns: str,
    dst_addr: str,
    duration_s: float,
    drain_s: float,
    congestion_control: str | None = None,
) -> FlowResult:
    """One TCP bulk transfer from `src_ns` to `dst_addr` in `dst_ns` for `duration_s`; the
    receiver timestamps every `recv`. `congestion_control` sets TCP_CONGESTION on both ends
    (None = the host default, recorded in `info`)."""
    fam = family_of(dst_addr)
    lsock = topo.socket(dst_ns, fam, socket.SOCK_STREAM)
    tx = topo.socket(src_ns, fam, socket.SOCK_STREAM)
    arrivals = Arrivals()
    stop = threading.Event()
    totals = {"bytes": 0, "start": 0, "end": 0}
    errors: list[BaseException] = []

    def receive() -> None:
        lsock.settimeout(0.1)
        conn = None
        try:
            deadline = time.monotonic() + 5.0
            while conn is None and not stop.is_set() and time.monotonic() < deadline:
                with contextlib.suppress(TimeoutError):
                    conn, _ = lsock.accept()
            if conn is None:
                return
            conn.settimeout(0.05)
            buf = bytearray(1 << 16)
            while not stop.is_set():
                try:
                    n = conn.recv_into(buf)
                except TimeoutError:
                    n = -1  # sample the counter anyway: segments may wait behind a hole
                if n == 0:
                    return
                t = mono()
                segs = tcp_data_segs_in(conn)
                arrivals.times_ns.append(t)
                arrivals.sizes.append(max(n, 0))
                arrivals.segs_in.append(-1 if segs is None else segs)
        except OSError as e:
            errors.append(e)
        finally:
            if conn is not None:
                conn.close()

    def send() -> None:
        chunk = bytes(1 << 16)
        sent = 0
        try:
            tx.settimeout(5.0)
            tx.connect((dst_addr, port))
            tx.settimeout(0.1)
            start = mono()
            totals["start"] = start
            end = start + round(duration_s * 1e9)
            while not stop.is_set() and mono() < end:
                try:
                    sent += tx.send(chunk)
                except TimeoutError:
                    continue
            totals["end"] = mono()
            tx.shutdown(socket.SHUT_WR)
        except OSError as e:
            errors.append(e)
        finally:
            totals["bytes"] = sent
            if not totals["end"]:
                totals["end"] = mono()

    info: dict[str, Any] = {}
    threads: list[threading.Thread] = []
    try:
        if congestion_control:
            for s in (lsock, tx):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion_control.encode())
        lsock.bind((dst_addr, 0))
        lsock.listen(1)
        port = lsock.getsockname()[1]
        threads = [
            threading.Thread(target=receive, name="tcp-rx", daemon=True),
            threading.Thread(target=send, name="tcp-tx", daemon=True),
        ]
        for t in threads:
            t.start()
        threads[1].join(duration_s + 10.0)
        with contextlib.suppress(OSError):
            info["mss"] = tx.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
            cc = tx.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
            info["congestion_control"] = cc.split(b"\0", 1)[0].decode()
        threads[0].join(drain_s + 2.0)
    finally:
        stop.set()
        _join(threads, 2.0)
        tx.close()
        lsock.close()
    if errors and not arrivals.times_ns:
        raise OSError(f"TCP transfer failed: {errors[0]!r}")
    mss = int(info.get("mss") or (1448 if fam == socket.AF_INET else 1428))
    return FlowResult(
        kind="tcp",
        sent_bytes=totals["bytes"],
        sent_packets=0,
        send_start_ns=totals["start"],
        send_end_ns=totals["end"],
        arrivals=arrivals,
        ip_overhead_bytes=MTU_BYTES - mss,  # full segments are MTU-sized IP packets
        segment_bytes=mss,
        info=info,
    )


# =============================================================================================
# command line (the subprocess side)
# =============================================================================================
def main(argv: list[str] | None = None) -> int:
    """`python -m lab.calibrate.probes echo --bind ADDR --port N`."""
    p = argparse.ArgumentParser(
        prog="python -m lab.calibrate.probes", description=__doc__.splitlines()[0]
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("echo", help="UDP probe echo; stops on stdin EOF or SIGTERM")
    e.add_argument("--bind", required=True, help="address to bind")
    e.add_argument("--port", type=int, default=0, help="UDP port (0 = pick one)")
    args = p.parse_args(argv)
    return echo_main(args.bind, args.port)


if __name__ == "__main__":
    sys.exit(main())
