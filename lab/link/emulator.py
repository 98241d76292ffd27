"""The userspace link emulator: a process in the router namespace that impairs both directions.

The topology (lab/net/topology.py) routes every packet the router forwards into a persistent TUN
device per direction (`<p>-tu` for uplink = client→server, `<p>-td` for downlink). This process
attaches to both, passes each packet through that direction's seeded `DirectionModel`
(lab/link/model.py), and writes it back to the same TUN device at its release time; the kernel then
forwards it on. When this process is not running the TUN devices have no reader and the kernel
drops what is routed to them: traffic never bypasses the emulator.

Hot path: a plain `select` loop (µs timeouts), one clock read per packet, a heap of
(release_ns, seq, direction, packet); it wakes `early_wake_us` before the next release and spins
to it (sleeping alone gives ms-scale errors on a busy box); packets due within `tolerance_us` are
written at once. It asks for SCHED_FIFO (and 1 ns timer slack) and records whether it got it.

Command line (started by the runner as `ip netns exec <router-ns> python -m lab.link.emulator`):

    python -m lab.link.emulator --config '{"link": {...}, "seed": 42, "tun_uplink": "...",
                                           "tun_downlink": "...", "out_dir": "..."}'

It prints `ready` on stdout once attached, stops on SIGTERM/SIGINT, and then writes to `out_dir`:
`emulator.json` (per-direction counters, lateness stats, TUN TX-dropped, CPU, realtime, phases),
`drops.csv` (time_ns, direction, ip_proto, length, reason; time is CLOCK_MONOTONIC ns) and
`tcp-sent.csv` (time_ns, client_port, end_offset): each downlink TCP packet that carried bytes of
the server's stream not seen before, when it reached the router — i.e. when those bytes left the
server host, one veth hop away — and how far into the stream it reached (`TcpSentLog`).

Control: one command per line on stdin, each acknowledged by one line on stdout. `reseed`
restarts both directions' models from the seed (`DirectionModel.restart`: packet index 0,
generators, Gilbert-Elliott state, isolated-loss positions) and begins a new *phase*; the answer
is `reseeded <phase> <started_ns>`. The runner reseeds before each protocol's phase of a cell, so
h2 and h3 see the same drop decisions by packet index. emulator.json's `phases` gives each
phase's start and its own counters; stdin at EOF just ends the control channel.

From Python: `EmulatorProcess(topology, link, seed, out_dir)`, `.start()`, `.reseed()`, `.stop()`,
`.poll()`, `.kill()`; its owner (the runner) makes sure `kill()` runs on every way out.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import gc
import heapq
import json
import os
import resource
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from lab.errors import RunError
from lab.link.model import Deliver, DirectionModel, build_models
from lab.link.spec import LinkSpec
from lab.net import tun
from lab.results.atomic import write_json

if TYPE_CHECKING:
    import pandas as pd

    from lab.net.topology import Topology

STATS_FILE = "emulator.json"
DROP_LOG_FILE = "drops.csv"
TCP_SENT_FILE = "tcp-sent.csv"
TCP_SENT_COLUMNS = ("time_ns", "client_port", "end_offset")
STDERR_FILE = "emulator.stderr"
REPORT_VERSION = 3  # 3: `tcp_sent_log`; 2: `phases` (one per reseed); 1: one implicit phase
READ_BATCH = 64  # packets read from one TUN before looking at the heap again
RT_PRIORITY = 10
PR_SET_TIMERSLACK = 29


class EmulatorConfig(BaseModel):
    """What the emulator process needs; passed as JSON on its command line."""

    model_config = ConfigDict(extra="forbid")

    link: LinkSpec
    seed: int
    tun_uplink: str
    tun_downlink: str
    out_dir: str
    realtime: bool = True  # ask for SCHED_FIFO
    early_wake_us: float = 30.0  # wake this long before a release, then spin
    tolerance_us: float = 10.0  # write a packet this much before its release time at most


# ============================================================================================
# the process
# ============================================================================================
class _Direction:
    """State and counters of one direction inside the emulator process."""

    __slots__ = (
        "bytes_dropped",
        "bytes_in",
        "bytes_out",
        "dropped_by_reason",
        "fd",
        "lateness",
        "model",
        "name",
        "packets_dropped",
        "packets_ignored",
        "packets_in",
        "packets_out",
        "tun",
        "tx_dropped_start",
        "write_errors",
    )

    def __init__(self, name: str, tun_name: str, fd: int, model: DirectionModel) -> None:
        self.name = name
        self.tun = tun_name
        self.fd = fd
        self.model = model
        self.packets_in = self.bytes_in = 0
        self.packets_out = self.bytes_out = 0
        self.packets_dropped = self.bytes_dropped = 0
        self.dropped_by_reason: dict[str, int] = {}
        self.write_errors = 0
        self.packets_ignored = 0  # router-local control packets (MLD): not offered, not sent
        self.lateness = array("q")  # ns: write start − release time, one per packet out
        self.tx_dropped_start = tun.tx_dropped(tun_name)


def ip_proto(packet: bytes) -> int:
    """IP protocol number (IPv4 protocol / IPv6 next header; 6 TCP, 17 UDP), -1 if unknown."""
    if not packet:
        return -1
    version = packet[0] >> 4
    if version == 4 and len(packet) > 9:
        return packet[9]
    if version == 6 and len(packet) > 6:
        return packet[6]
    return -1


def not_end_to_end(packet: bytes) -> bool:
    """True for packets the router itself sends into a TUN device (IPv6 MLD reports from the
    TUN's link-local address, multicast): not client⇄server traffic, so not offered to the
    model (they would shift the drop-list indices) and not forwarded."""
    version = packet[0] >> 4 if packet else 0
    if version == 6 and len(packet) >= 40:
        return packet[24] == 0xFF or (packet[8] == 0xFE and packet[9] & 0xC0 == 0x80)
    if version == 4 and len(packet) >= 20:
        return packet[16] >= 224  # IPv4 multicast/broadcast destination
    return True  # not an IP packet


SEQ_MODULUS = 1 << 32
_SEQ_MASK = SEQ_MODULUS - 1
_HALF_SEQ = 1 << 31
_PORT_SEQ = struct.Struct("!HI")  # TCP destination port, sequence number (from byte 2)
_TCP_SYN = 0x02


class TcpSentLog:
    """First transmissions of the server's TCP streams, seen in the downlink (server → client).

    `offer(packet, now_ns)` takes every downlink packet (IPv4 or IPv6 with TCP right after the
    fixed header; anything else is ignored). Per flow, keyed by the client's port (the
    destination port): a SYN(-ACK) sets the ISN and starts the stream over; a packet with payload
    whose end lies beyond the highest end seen so far carried new bytes and is recorded as
    (now_ns, client_port, end_offset), end_offset = bytes of the stream up to the packet's end,
    counted from ISN + 1 (the first byte after the SYN). A retransmission ends at or below the
    highest end: not recorded, so each byte counts at its first transmission. Sequence numbers
    wrap at 2**32: an end less than 2**31 ahead of the highest (mod 2**32) is new, and offsets
    keep growing past 4 GiB. Flows whose SYN-ACK was not seen are ignored. Sans-I/O: time is
    passed in. Cost on this host: ~1 µs per packet with new data, ~0.4 µs per pure ACK.
    """

    __slots__ = ("flows", "records")

    def __init__(self) -> None:
        self.flows: dict[int, list[int]] = {}  # client port → [ISN + 1, highest end_offset]
        self.records: list[tuple[int, int, int]] = []  # (time_ns, client_port, end_offset)

    def offer(self, pkt: bytes, now_ns: int) -> None:
        """Note one downlink packet that reached the router at `now_ns`."""
        version = pkt[0] >> 4
        if version == 4:
            if pkt[9] != 6:
                return
            tcp = (pkt[0] & 0x0F) << 2
        elif version == 6:
            if pkt[6] != 6:
                return
            tcp = 40
        else:
            return
        size = len(pkt)
        if size < tcp + 20:
            return
        if pkt[tcp + 13] & _TCP_SYN:
            port, seq = _PORT_SEQ.unpack_from(pkt, tcp + 2)
            self.flows[port] = [seq + 1, 0]
            return
        payload = size - tcp - ((pkt[tcp + 12] >> 4) << 2)
        if payload <= 0:
            return
        port, seq = _PORT_SEQ.unpack_from(pkt, tcp + 2)
        flow = self.flows.get(port)
        if flow is None:
            return
        ahead = (seq + payload - flow[0] - flow[1]) & _SEQ_MASK  # from the highest end
        if 0 < ahead < _HALF_SEQ:
            end = flow[1] = flow[1] + ahead
            self.records.append((now_ns, port, end))


def _try_realtime() -> tuple[bool, str]:
    """Ask for SCHED_FIFO and 1 ns timer slack; (granted, reason if not)."""
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_TIMERSLACK, ctypes.c_ulong(1), 0, 0, 0)
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(RT_PRIORITY))
    except OSError as e:
        return False, str(e)
    return True, ""


def _percentiles(values: array[int]) -> dict[str, float | int | None]:
    """count, p50, p99 and max of `values` (None when empty)."""
    if not values:
        return {"count": 0, "p50": None, "p99": None, "max": None}
    s = sorted(values)
    n = len(s)
    return {
        "count": n,
        "p50": s[min(n - 1, int(0.50 * n))],
        "p99": s[min(n - 1, int(0.99 * n))],
        "max": s[-1],
    }


def run(
    cfg: EmulatorConfig, *, ready_out: Any = None, control_fd: int | None = None
) -> dict[str, Any]:
    """Attach to the TUN devices, emulate until SIGTERM/SIGINT, write the outputs; returns the
    stats dict that was written to emulator.json. Commands are read from `control_fd` (stdin
    in the process) and answered on `ready_out`."""
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dirs = _attach(cfg)
    try:
        realtime = _try_realtime() if cfg.realtime else (False, "not requested")
        with _stop_on_signals() as stop:
            started_ns = time.monotonic_ns()
            control = _Control(control_fd, ready_out, dirs, started_ns)
            if ready_out is not None:
                print("ready", file=ready_out, flush=True)
            loop = _emulate(dirs, stop, cfg, control)
    finally:
        for d in dirs.values():
            os.close(d.fd)
    return _write_outputs(cfg, out_dir, dirs, loop, started_ns, realtime, control.phases)


# --- set-up ---------------------------------------------------------------------------------
def _attach(cfg: EmulatorConfig) -> dict[str, _Direction]:
    """Both directions, attached to their (existing) TUN devices, with their seeded models."""
    for name in (cfg.tun_uplink, cfg.tun_downlink):
        try:
            socket.if_nametoindex(name)  # attach() would silently create a fresh device
        except OSError:
            raise SystemExit(
                f"emulator: TUN device {name} does not exist in this namespace "
                "(was the topology built with tun_steering=True?)"
            ) from None
    models = build_models(cfg.link, cfg.seed)
    dirs = {
        "uplink": _Direction(
            "uplink", cfg.tun_uplink, tun.attach(cfg.tun_uplink), models["uplink"]
        ),
        "downlink": _Direction(
            "downlink", cfg.tun_downlink, tun.attach(cfg.tun_downlink), models["downlink"]
        ),
    }
    if not tun.wait_operstate_up([cfg.tun_uplink, cfg.tun_downlink]):
        print("emulator: warning: TUN devices not up after 5 s", file=sys.stderr)
    return dirs


class _StopRequest:
    """Set by SIGTERM/SIGINT; `wake_fd` then becomes readable (signal.set_wakeup_fd), so the
    hot loop's select returns at once."""

    __slots__ = ("requested", "wake_fd")

    def __init__(self, wake_fd: int) -> None:
        self.requested = False
        self.wake_fd = wake_fd


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[_StopRequest]:
    """SIGTERM and SIGINT request a stop while the block runs."""
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    stop = _StopRequest(wake_r)

    def _on_signal(_signum: int, _frame: object) -> None:
        stop.requested = True

    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        yield stop
    finally:
        signal.set_wakeup_fd(-1)
        os.close(wake_r)
        os.close(wake_w)


# --- control: reseed between phases ----------------------------------------------------------
def _counters(dirs: dict[str, _Direction]) -> dict[str, dict[str, Any]]:
    """Each direction's cumulative packet counters now (packets_in, packets_dropped, by reason)."""
    return {
        name: {
            "packets_in": d.packets_in,
            "packets_dropped": d.packets_dropped,
            "dropped_by_reason": dict(d.dropped_by_reason),
        }
        for name, d in dirs.items()
    }


@dataclass(frozen=True, slots=True)
class _PhaseStart:
    """When a phase began (CLOCK_MONOTONIC ns) and the cumulative counters at that moment."""

    started_ns: int
    counters: dict[str, dict[str, Any]]


class _Control:
    """The command channel: lines on `fd`, one answer line each on `out`."""

    __slots__ = ("_buf", "dirs", "fd", "out", "phases")

    def __init__(self, fd: int | None, out: Any, dirs: dict[str, _Direction], t0: int) -> None:
        self.fd = fd
        self.out = out
        self.dirs = dirs
        self.phases = [_PhaseStart(t0, _counters(dirs))]
        self._buf = b""

    def readable(self) -> bool:
        """Read what `fd` has and run each complete command; False at EOF (stop watching)."""
        assert self.fd is not None
        try:
            data = os.read(self.fd, 4096)
        except BlockingIOError:
            return True
        if not data:
            return False
        self._buf += data
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            self._command(line.strip().decode(errors="replace"))
        return True

    def _command(self, cmd: str) -> None:
        if cmd == "reseed":
            now = time.monotonic_ns()
            for d in self.dirs.values():
                d.model.restart()
            self.phases.append(_PhaseStart(now, _counters(self.dirs)))
            self._answer(f"reseeded {len(self.phases) - 1} {now}")
        elif cmd:
            self._answer(f"error unknown command {cmd!r}")

    def _answer(self, line: str) -> None:
        if self.out is not None:
            print(line, file=self.out, flush=True)


def phase_counters(
    phases: list[_PhaseStart], final: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """emulator.json's `phases`: each phase's start and its own counters (the difference of
    the cumulative counters at its start and at the next phase's start, or at the end)."""
    out = []
    ends = [p.counters for p in phases[1:]] + [final]
    for i, (start, end) in enumerate(zip(phases, ends, strict=True)):
        dirs = {}
        for name, e in end.items():
            b = start.counters[name]
            reasons = {
                r: n - b["dropped_by_reason"].get(r, 0)
                for r, n in e["dropped_by_reason"].items()
                if n - b["dropped_by_reason"].get(r, 0)
            }
            dirs[name] = {
                "packets_in": e["packets_in"] - b["packets_in"],
                "packets_dropped": e["packets_dropped"] - b["packets_dropped"],
                "dropped_by_reason": reasons,
            }
        out.append({"index": i, "started_ns": start.started_ns, "directions": dirs})
    return out


# --- the hot loop ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _LoopEnd:
    """What the hot loop leaves: the drop log rows, the TCP first transmissions, packets
    still queued, when it stopped."""

    drops: list[tuple[int, str, int, int, str]]  # time_ns, direction, ip_proto, length, reason
    tcp_sent: list[tuple[int, int, int]]  # time_ns, client_port, end_offset (TcpSentLog)
    pending: dict[str, int]  # direction → packets in the heap at stop
    stopped_ns: int


def _emulate(
    dirs: dict[str, _Direction], stop: _StopRequest, cfg: EmulatorConfig, control: _Control
) -> _LoopEnd:
    """Read, decide, hold and release packets until a stop is requested."""
    drops: list[tuple[int, str, int, int, str]] = []
    tcp_sent = TcpSentLog()
    note_downlink = tcp_sent.offer
    downlink = dirs["downlink"]
    heap: list[tuple[int, int, _Direction, bytes]] = []
    by_fd = {d.fd: d for d in dirs.values()}
    wake_r = stop.wake_fd
    ctrl_fd = control.fd if control.fd is not None else -1
    rfds = [wake_r, *by_fd] + ([ctrl_fd] if ctrl_fd >= 0 else [])
    early_ns = int(cfg.early_wake_us * 1000)
    tol_ns = int(cfg.tolerance_us * 1000)
    mono = time.monotonic_ns
    heappush, heappop = heapq.heappush, heapq.heappop
    write, read = os.write, os.read
    seq = 0

    gc.disable()  # no collector pauses in the hot loop; packets make no reference cycles
    try:
        while not stop.requested:
            now = mono()
            while heap and heap[0][0] <= now + tol_ns:
                release, _, d, pkt = heappop(heap)
                now = mono()
                try:
                    write(d.fd, pkt)
                except OSError:
                    d.write_errors += 1
                    continue
                d.lateness.append(now - release)  # may be slightly < 0 (tolerance)
                d.packets_out += 1
                d.bytes_out += len(pkt)
            if heap:
                wait = heap[0][0] - now
                timeout = (wait - early_ns) / 1e9 if wait > early_ns else 0.0
            else:
                timeout = 0.5
            readable, _, _ = select.select(rfds, [], [], timeout)
            for fd in readable:
                if fd == wake_r:
                    with contextlib.suppress(BlockingIOError):
                        read(wake_r, 512)
                    continue
                if fd == ctrl_fd:
                    if not control.readable():
                        rfds.remove(ctrl_fd)  # EOF: no more commands
                    continue
                d = by_fd[fd]
                model = d.model
                for _ in range(READ_BATCH):
                    try:
                        pkt = read(fd, 65536)
                    except BlockingIOError:
                        break
                    t = mono()
                    size = len(pkt)
                    if not_end_to_end(pkt):
                        d.packets_ignored += 1
                        continue
                    d.packets_in += 1
                    d.bytes_in += size
                    if d is downlink:
                        note_downlink(pkt, t)  # before the model: a dropped packet left too
                    decision = model.offer(size, t)
                    if type(decision) is Deliver:
                        for rel in decision.release_ns:
                            seq += 1
                            heappush(heap, (rel, seq, d, pkt))
                    else:
                        d.packets_dropped += 1
                        d.bytes_dropped += size
                        reason = decision.reason  # type: ignore[union-attr]  # a Drop (type())
                        d.dropped_by_reason[reason] = d.dropped_by_reason.get(reason, 0) + 1
                        drops.append((t, d.name, ip_proto(pkt), size, reason))
    finally:
        gc.enable()
        stopped_ns = mono()
    pending = {name: 0 for name in dirs}
    for _, _, d, _ in heap:
        pending[d.name] += 1
    return _LoopEnd(drops, tcp_sent.records, pending, stopped_ns)


# --- outputs --------------------------------------------------------------------------------
def _write_outputs(
    cfg: EmulatorConfig,
    out_dir: Path,
    dirs: dict[str, _Direction],
    loop: _LoopEnd,
    started_ns: int,
    realtime: tuple[bool, str],
    phases: list[_PhaseStart],
) -> dict[str, Any]:
    """Write drops.csv, tcp-sent.csv and emulator.json to `out_dir`; returns the stats."""
    with open(out_dir / DROP_LOG_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["time_ns", "direction", "ip_proto", "length", "reason"])
        w.writerows(loop.drops)
    with open(out_dir / TCP_SENT_FILE, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(TCP_SENT_COLUMNS)
        w.writerows(loop.tcp_sent)
    stats = _stats(cfg, dirs, loop, started_ns, realtime)
    stats["phases"] = phase_counters(phases, _counters(dirs))
    write_json(out_dir / STATS_FILE, stats, indent=2)
    return stats


def _stats(
    cfg: EmulatorConfig,
    dirs: dict[str, _Direction],
    loop: _LoopEnd,
    started_ns: int,
    realtime: tuple[bool, str],
) -> dict[str, Any]:
    """The emulator.json document (version REPORT_VERSION)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    rt_granted, rt_error = realtime
    return {
        "version": REPORT_VERSION,
        "seed": cfg.seed,
        "link": cfg.link.model_dump(mode="json"),
        "realtime": {"requested": cfg.realtime, "granted": rt_granted, "error": rt_error},
        "early_wake_us": cfg.early_wake_us,
        "tolerance_us": cfg.tolerance_us,
        "started_ns": started_ns,
        "stopped_ns": loop.stopped_ns,
        "cpu_user_s": usage.ru_utime,
        "cpu_sys_s": usage.ru_stime,
        "drop_log": DROP_LOG_FILE,
        "tcp_sent_log": TCP_SENT_FILE,
        "directions": {name: _direction_stats(d, loop.pending[name]) for name, d in dirs.items()},
    }


def _direction_stats(d: _Direction, pending: int) -> dict[str, Any]:
    """One direction's counters in emulator.json (lateness in ns)."""
    end = tun.tx_dropped(d.tun)
    tx_dropped = None if end is None or d.tx_dropped_start is None else end - d.tx_dropped_start
    return {
        "tun": d.tun,
        "packets_in": d.packets_in,
        "bytes_in": d.bytes_in,
        "packets_out": d.packets_out,
        "bytes_out": d.bytes_out,
        "packets_dropped": d.packets_dropped,
        "bytes_dropped": d.bytes_dropped,
        "dropped_by_reason": d.dropped_by_reason,
        "write_errors": d.write_errors,
        "packets_ignored": d.packets_ignored,
        "pending_at_stop": pending,
        "tun_tx_dropped": tx_dropped,
        "lateness_ns": _percentiles(d.lateness),
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m lab.link.emulator`."""
    p = argparse.ArgumentParser(prog="python -m lab.link.emulator", description=__doc__)
    p.add_argument("--config", required=True, help="EmulatorConfig as JSON")
    args = p.parse_args(argv)
    cfg = EmulatorConfig.model_validate_json(args.config)
    run(cfg, ready_out=sys.stdout, control_fd=sys.stdin.fileno())
    return 0


# ============================================================================================
# the runner's handle on it
# ============================================================================================
class EmulatorError(RunError):
    """The emulator process failed to start or to stop cleanly (message carries its stderr)."""


@dataclass(frozen=True)
class DirectionReport:
    """Counters of one direction (packets/bytes in, out, dropped; lateness in ns)."""

    packets_in: int
    bytes_in: int
    packets_out: int
    bytes_out: int
    packets_dropped: int
    bytes_dropped: int
    dropped_by_reason: dict[str, int]
    write_errors: int
    packets_ignored: int  # router-local control packets (IPv6 MLD) discarded unmodelled
    pending_at_stop: int
    tun_tx_dropped: int | None  # packets the kernel dropped because the emulator lagged
    lateness_ns: dict[str, float | int | None]  # count, p50, p99, max of write − release


@dataclass(frozen=True)
class PhaseReport:
    """One phase (from the start or a `reseed` to the next one): its start (CLOCK_MONOTONIC
    ns) and, per direction, packets_in, packets_dropped and dropped_by_reason."""

    index: int
    started_ns: int
    directions: dict[str, dict[str, Any]]


@dataclass(frozen=True)
class EmulatorReport:
    """What the emulator did: per-direction counters, the drop log and TCP first-transmission
    log paths (the latter None before version 3), realtime, CPU and the phases (one per reseed;
    a version-1 report has one)."""

    directions: dict[str, DirectionReport]
    drop_log: Path
    tcp_sent_log: Path | None
    stats_path: Path
    realtime_granted: bool
    cpu_user_s: float
    cpu_sys_s: float
    phases: list[PhaseReport]
    raw: dict[str, Any] = field(repr=False)

    @classmethod
    def load(cls, out_dir: Path) -> EmulatorReport:
        """Read emulator.json from `out_dir`."""
        path = Path(out_dir) / STATS_FILE
        raw = json.loads(path.read_text())
        dirs = {
            name: DirectionReport(
                **{k: v for k, v in d.items() if k in DirectionReport.__dataclass_fields__}
            )
            for name, d in raw["directions"].items()
        }
        phases = [
            PhaseReport(p["index"], p["started_ns"], p["directions"])
            for p in raw.get("phases")
            or [{"index": 0, "started_ns": raw["started_ns"], "directions": raw["directions"]}]
        ]
        return cls(
            directions=dirs,
            drop_log=path.parent / raw["drop_log"],
            tcp_sent_log=path.parent / raw["tcp_sent_log"] if raw.get("tcp_sent_log") else None,
            stats_path=path,
            realtime_granted=raw["realtime"]["granted"],
            cpu_user_s=raw["cpu_user_s"],
            cpu_sys_s=raw["cpu_sys_s"],
            phases=phases,
            raw=raw,
        )

    def drops(self) -> pd.DataFrame:
        """The drop log as a DataFrame (time_ns, direction, ip_proto, length, reason)."""
        import pandas as pd  # deferred: pandas would add ~0.5 s to the emulator process start

        return pd.read_csv(self.drop_log)

    def tcp_sent(self) -> pd.DataFrame:
        """The downlink TCP first transmissions (time_ns, client_port, end_offset; int64, in
        arrival order; `TcpSentLog`); empty for a report written before they were logged."""
        import pandas as pd  # deferred: pandas would add ~0.5 s to the emulator process start

        if self.tcp_sent_log is None:
            return pd.DataFrame({c: pd.Series(dtype="int64") for c in TCP_SENT_COLUMNS})
        return pd.read_csv(self.tcp_sent_log, dtype="int64")

    def problems(self, max_lateness_p99_ns: int = 1_000_000) -> list[str]:
        """Reasons to flag the cell: TUN overflow drops, write errors, late releases."""
        out = []
        for name, d in self.directions.items():
            if d.tun_tx_dropped:
                out.append(f"{name}: TUN dropped {d.tun_tx_dropped} packets (emulator overloaded)")
            if d.write_errors:
                out.append(f"{name}: {d.write_errors} TUN write errors")
            p99 = d.lateness_ns.get("p99")
            if p99 is not None and p99 > max_lateness_p99_ns:
                out.append(f"{name}: release lateness p99 {p99 / 1e6:.2f} ms")
        return out


class EmulatorProcess:
    """Start/stop the emulator for one topology (runs in its router namespace).

    ```python
    emu = EmulatorProcess(topo, link, seed=42, out_dir=cell_dir)
    emu.start()            # returns once the emulator is attached; EmulatorError if it died
    t0 = emu.reseed()      # the models start over from the seed (a new phase from t0 ns)
    ...                    # traffic
    report = emu.stop()    # SIGTERM, wait, read emulator.json → EmulatorReport
    ```
    Also a context manager (stop on exit). `kill()` ends it at once (the owner's teardown).
    """

    def __init__(
        self,
        topology: Topology,
        link: LinkSpec,
        seed: int,
        out_dir: str | Path,
        *,
        realtime: bool = True,
        early_wake_us: float = 30.0,
        tolerance_us: float = 10.0,
    ) -> None:
        self.topology = topology
        self.out_dir = Path(out_dir)
        self.config = EmulatorConfig(
            link=link,
            seed=seed,
            tun_uplink=topology.names.tun_uplink,
            tun_downlink=topology.names.tun_downlink,
            out_dir=str(self.out_dir.resolve()),
            realtime=realtime,
            early_wake_us=early_wake_us,
            tolerance_us=tolerance_us,
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    @property
    def stderr_path(self) -> Path:
        """Where the process's stderr goes."""
        return self.out_dir / STDERR_FILE

    def poll(self) -> int | None:
        """Its exit status once it has exited (negative: the signal that killed it); None
        while it runs or before `start()`."""
        return self.proc.poll() if self.proc is not None else None

    def argv(self) -> list[str]:
        """The command line that runs the emulator inside the router namespace."""
        return self.topology.run_in(
            self.topology.router_ns,
            [sys.executable, "-m", "lab.link.emulator", "--config", self.config.model_dump_json()],
        )

    def start(self, timeout_s: float = 10.0) -> None:
        """Start it and wait for its `ready` line; raise EmulatorError (with stderr) otherwise."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with open(self.stderr_path, "wb") as stderr:
            self.proc = subprocess.Popen(
                self.argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr
            )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout_s)
        line = self.proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self.kill()
            raise EmulatorError(f"emulator did not become ready: {self._stderr_text()}")

    def reseed(self, timeout_s: float = 5.0) -> int:
        """Restart both directions' models from the seed (a new phase) and wait for the
        acknowledgement; the phase's start (CLOCK_MONOTONIC ns, the emulator's clock). Raises
        EmulatorError when the emulator does not answer."""
        proc = self.proc
        if proc is None or proc.stdin is None or proc.stdout is None or proc.poll() is not None:
            raise EmulatorError(f"emulator is not running: {self._stderr_text()}")
        try:
            proc.stdin.write(b"reseed\n")
            proc.stdin.flush()
        except BrokenPipeError:
            raise EmulatorError(f"emulator closed its control: {self._stderr_text()}") from None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        words = (proc.stdout.readline() if ready else b"").split()
        if len(words) != 3 or words[0] != b"reseeded":
            raise EmulatorError(f"emulator did not acknowledge reseed: {self._stderr_text()}")
        return int(words[2])

    def stop(self, timeout_s: float = 10.0) -> EmulatorReport:
        """SIGTERM it, wait for it to write its outputs, and return the report."""
        if self.proc is None:
            raise EmulatorError("emulator was not started")
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise EmulatorError(
                f"emulator ignored SIGTERM for {timeout_s} s: {self._stderr_text()}"
            ) from None
        finally:
            self._forget()
        if rc != 0:
            raise EmulatorError(f"emulator exited with {rc}: {self._stderr_text()}")
        return EmulatorReport.load(self.out_dir)

    def __enter__(self) -> EmulatorProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()
        self._forget()

    def _stderr_text(self) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace").strip()
        except FileNotFoundError:
            text = ""
        return text[-4000:] or "(no stderr)"

    def kill(self) -> None:
        """SIGKILL it now if it still runs (no outputs written); idempotent."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._forget()

    def _forget(self) -> None:
        if self.proc is not None:
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()


if __name__ == "__main__":
    sys.exit(main())
