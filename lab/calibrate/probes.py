"""UDP path probes for `lab calibrate`: an echo in one namespace, a probe client in another.

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

Throughput (UDP floods, TCP bulk) is `lab.calibrate.flows`. Every socket is closed in `finally`;
the echo subprocess is killed when its context is left if it did not exit by itself.
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
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab.calibrate.netio import (
    RT_PRIORITY,
    UDP_IP_OVERHEAD,
    SocketFactory,
    big_rcvbuf,
    family_of,
    mono,
)

PROBE_MAGIC = b"LBP1"
REPLY_MAGIC = b"LBR1"
PROBE_FMT = struct.Struct("!4sIQ")  # magic, seq, client send ns
REPLY_FMT = struct.Struct("!4sIIQQQ")  # magic, seq, reply index, client send, echo rx, echo tx
PROBE_PAYLOAD_BYTES = 64  # UDP payload of probes and replies (both directions alike)


# =============================================================================================
# echo (subprocess side)
# =============================================================================================
def echo_main(bind: str, port: int, out: Any = None) -> int:
    """Run the echo until stdin closes or SIGTERM; print `ready PORT`, then the JSON record
    `{"seqs": [...], "rx_ns": [...], "tx_ns": [...], "ignored": n}` (arrival order)."""
    out = out or sys.stdout
    sock = socket.socket(family_of(bind), socket.SOCK_DGRAM)
    big_rcvbuf(sock)
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
    big_rcvbuf(sock)
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
