"""Throughput flows for `lab calibrate`: a paced UDP flood (`measure_udp`) and a TCP bulk transfer
(`measure_tcp`) between two namespaces. Standard library only.

Both run the same harness (`run_sender_receiver`): a sender thread and a receiver thread on
sockets created in the two namespaces, joined with timeouts, stopped through one event, their
socket errors handed back to the caller. The receiver timestamps every datagram / every `recv`
(ns, CLOCK_MONOTONIC). Every thread is joined and every socket closed before a measurement returns.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lab.calibrate.netio import (
    UDP_IP_OVERHEAD,
    SocketFactory,
    big_rcvbuf,
    family_of,
    mono,
    realtime,
)
from lab.net.mtu import MTU_BYTES, TCP_MSS_IPV4_BYTES, TCP_MSS_IPV6_BYTES

TCPI_DATA_SEGS_IN = 152  # offset of tcpi_data_segs_in (u32) in struct tcp_info (Linux ≥ 4.6)
STOP_GRACE_S = 2.0  # how long stopped threads get to end


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


Worker = Callable[[threading.Event], None]  # a thread's body; returns soon once the event is set


def _join(threads: list[threading.Thread], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))


def run_sender_receiver(
    name: str,
    send: Worker,
    receive: Worker,
    *,
    send_timeout_s: float,
    receive_timeout_s: float,
    after_send: Callable[[], None] | None = None,
) -> list[OSError]:
    """Run `receive` and `send` in daemon threads `{name}-rx` and `{name}-tx`, both given one
    stop event. Wait up to `send_timeout_s` for the sender, call `after_send()` here, then wait
    up to `receive_timeout_s` more for the receiver. Whatever happens, the event is then set and
    the threads get STOP_GRACE_S to end. Returns the OSErrors the threads raised, in order."""
    stop = threading.Event()
    errors: list[OSError] = []

    def guarded(work: Worker) -> Callable[[], None]:
        def run() -> None:
            try:
                work(stop)
            except OSError as e:
                errors.append(e)

        return run

    receiver = threading.Thread(target=guarded(receive), name=f"{name}-rx", daemon=True)
    sender = threading.Thread(target=guarded(send), name=f"{name}-tx", daemon=True)
    try:
        receiver.start()
        sender.start()
        sender.join(send_timeout_s)
        if after_send is not None:
            after_send()
        receiver.join(receive_timeout_s)
    finally:
        stop.set()
        _join([t for t in (receiver, sender) if t.ident is not None], STOP_GRACE_S)
    return errors


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
    1 ms ticks; the receiver in `dst_ns` timestamps every datagram until `drain_s` after the end.
    A socket error ends the thread it happens in; what arrived until then is the result."""
    fam = family_of(dst_addr)
    overhead = UDP_IP_OVERHEAD[fam]
    payload = payload_bytes if payload_bytes is not None else MTU_BYTES - overhead
    arrivals = Arrivals()
    sender_done = threading.Event()
    totals = {"packets": 0, "start": 0, "end": 0}

    with (
        topo.socket(dst_ns, fam, socket.SOCK_DGRAM) as rx,
        topo.socket(src_ns, fam, socket.SOCK_DGRAM) as tx,
    ):

        def receive(stop: threading.Event) -> None:
            with realtime():
                rx.settimeout(0.05)
                buf = bytearray(65536)
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

        def send(stop: threading.Event) -> None:
            with realtime():  # a stalled sender lets the queue run dry and the link idle
                datagram = bytes(payload)
                pps = offered_ip_mbit * 1e6 / 8 / (payload + overhead)
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
                                tx.sendto(datagram, (dst_addr, port))
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

        big_rcvbuf(rx)
        rx.bind((dst_addr, 0))
        port = rx.getsockname()[1]
        run_sender_receiver(
            "udp", send, receive, send_timeout_s=duration_s + 5.0, receive_timeout_s=drain_s + 5.0
        )
    return FlowResult(
        kind="udp",
        sent_bytes=totals["packets"] * payload,
        sent_packets=totals["packets"],
        send_start_ns=totals["start"],
        send_end_ns=totals["end"],
        arrivals=arrivals,
        ip_overhead_bytes=overhead,
        segment_bytes=payload,
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
    (None = the host default, recorded in `info`). Raises OSError when a thread failed and
    nothing arrived."""
    fam = family_of(dst_addr)
    arrivals = Arrivals()
    totals = {"bytes": 0, "start": 0, "end": 0}
    info: dict[str, Any] = {}

    with (
        topo.socket(dst_ns, fam, socket.SOCK_STREAM) as lsock,
        topo.socket(src_ns, fam, socket.SOCK_STREAM) as tx,
    ):

        def receive(stop: threading.Event) -> None:
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
            finally:
                if conn is not None:
                    conn.close()

        def send(stop: threading.Event) -> None:
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
            finally:
                totals["bytes"] = sent
                if not totals["end"]:
                    totals["end"] = mono()

        def read_sender_info() -> None:
            with contextlib.suppress(OSError):
                info["mss"] = tx.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
                cc = tx.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
                info["congestion_control"] = cc.split(b"\0", 1)[0].decode()

        if congestion_control:
            for s in (lsock, tx):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion_control.encode())
        lsock.bind((dst_addr, 0))
        lsock.listen(1)
        port = lsock.getsockname()[1]
        errors = run_sender_receiver(
            "tcp",
            send,
            receive,
            send_timeout_s=duration_s + 10.0,
            receive_timeout_s=drain_s + 2.0,
            after_send=read_sender_info,
        )
    if errors and not arrivals.times_ns:
        raise OSError(f"TCP transfer failed: {errors[0]!r}")
    default_mss = TCP_MSS_IPV4_BYTES if fam == socket.AF_INET else TCP_MSS_IPV6_BYTES
    mss = int(info.get("mss") or default_mss)
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
