"""Measure what an impaired path really does (I/O): build a topology, apply the link (emulator or
netem), run UDP probes through an echo in the server namespace, then TCP and UDP throughput per
rate-limited direction (`lab.calibrate.probes`, `lab.calibrate.flows`), over the IPv4 or the
IPv6 addresses, and tear everything down. `calibrate_cell` measures one scenario cell (over its
`address_family`: a scenario sweeping `address_family` has a cell for each) and evaluates it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from lab.calibrate.evaluate import evaluate
from lab.calibrate.flows import FlowResult, measure_tcp, measure_udp
from lab.calibrate.measurement import FlowSummary, Measurement, ProbeStats, analyse_probes
from lab.calibrate.netio import realtime
from lab.calibrate.present import ProgressFn
from lab.calibrate.probes import EchoProcess, run_probe_client
from lab.calibrate.result import CalibrationResult
from lab.calibrate.stats import counter_rate_mbit, receiver_rate_mbit
from lab.errors import HostNotCapable
from lab.link.emulator import EmulatorProcess
from lab.link.netem import UnsupportedByNetem, netem_commands, netem_probe
from lab.link.spec import DIRECTIONS, Direction, DirectionSpec, LinkSpec
from lab.net.mtu import MTU_BYTES
from lab.net.topology import Topology
from lab.scenario.models import AddressFamily, Cell

UDP_OVERLOAD = 1.2  # UDP offered load = rate × this / (1 − mean loss)
UDP_WARMUP_S = 0.3
TCP_WARMUP_S = 1.0
DRAIN_MARGIN_S = 0.3  # waited beyond the worst-case round trip for the last packets


class CalibrationError(HostNotCapable):
    """The calibration could not run (backend unavailable, a process failed)."""


Impair = Literal["auto", "emulator", "netem"]


def choose_backend(impair: Impair, link: LinkSpec) -> str:
    """The backend to use, "emulator" or "netem". auto = netem where the kernel has sch_netem
    and it can express the link, else the emulator. Raises CalibrationError when netem is
    asked for but unusable."""
    if impair == "emulator":
        return "emulator"
    usable, why = netem_probe()
    try:
        netem_commands(link, uplink_dev="x", downlink_dev="y")
        expressible, reason = True, ""
    except UnsupportedByNetem as e:
        expressible, reason = False, str(e)
    if impair == "netem":
        if not usable:
            raise CalibrationError(f"--impair netem: {why}")
        if not expressible:
            raise CalibrationError(f"--impair netem: {reason}")
        return "netem"
    return "netem" if usable and expressible else "emulator"


def _drain_s(link: LinkSpec, d: Direction) -> float:
    """Worst-case time a packet can spend in direction `d` (queue + delay + jitter), s."""
    spec: DirectionSpec = getattr(link, d)
    s = (spec.delay_ms + 4 * spec.jitter_ms) / 1e3
    if spec.rate_mbit is not None:
        qp, qb = link.queue_limit(d)
        qbytes = qb if qb is not None else (qp or 0) * MTU_BYTES
        s += qbytes * 8 / (spec.rate_mbit * 1e6)
    return s


def _round_trip_drain_s(link: LinkSpec) -> float:
    """How long to wait after the last send for the last answer or ACK, s."""
    return _drain_s(link, "uplink") + _drain_s(link, "downlink") + DRAIN_MARGIN_S


def _flow_summary(f: FlowResult, d: Direction, warmup_s: float) -> FlowSummary:
    if f.kind == "udp":
        ip = [n + f.ip_overhead_bytes for n in f.arrivals.sizes]
        rate = receiver_rate_mbit(f.arrivals.times_ns, ip, warmup_s)
        return FlowSummary("udp", d, rate, offered_mbit=f.offered_ip_mbit)
    # IP-level rate from the kernel's data-segment counter (full-sized segments = MTU bytes);
    # the bytes recv() returns arrive in bursts under loss (held back behind holes).
    seg_ip = f.segment_bytes + f.ip_overhead_bytes
    rate = counter_rate_mbit(f.arrivals.times_ns, f.arrivals.segs_in, seg_ip, warmup_s)
    if rate is None:
        scale = seg_ip / f.segment_bytes
        ip_scaled = [n * scale for n in f.arrivals.sizes]
        rate = receiver_rate_mbit(f.arrivals.times_ns, ip_scaled, warmup_s)
    return FlowSummary(
        "tcp", d, rate, mss=f.segment_bytes, congestion_control=f.info.get("congestion_control")
    )


@contextlib.contextmanager
def _impairment(
    topo: Topology, backend: str, link: LinkSpec, seed: int, out_dir: Path
) -> Iterator[dict[str, Any]]:
    """Apply the link for the duration of the block; yields a dict that receives the emulator's
    report ("raw", "problems") after the block."""
    report: dict[str, Any] = {}
    if backend == "netem":
        n = topo.names
        for argv in netem_commands(
            link, uplink_dev=n.router_server_if, downlink_dev=n.router_client_if, netns=n.router_ns
        ):
            p = subprocess.run(argv, capture_output=True, text=True, check=False)
            if p.returncode != 0:
                raise CalibrationError(f"{' '.join(argv)}: {p.stderr.strip()}")
        yield report  # the qdiscs go with the namespaces
        return
    emu = EmulatorProcess(topo, link, seed, out_dir)
    emu.start()
    try:
        yield report
    finally:
        if emu.proc is not None and emu.proc.poll() is None:
            rep = emu.stop()
            report["raw"] = rep.raw
            report["problems"] = rep.problems()


def _addresses(topo: Topology, family: AddressFamily) -> tuple[str, str]:
    """(server address, client address) of `family`."""
    if family == "ipv6":
        return topo.server_v6, topo.client_v6
    return topo.server_v4, topo.client_v4


def _probe_phase(
    topo: Topology,
    link: LinkSpec,
    probes: int,
    interval_s: float,
    prog: ProgressFn,
    family: AddressFamily = "ipv4",
) -> ProbeStats:
    """Echo in the server namespace, probe client (SCHED_FIFO while it runs) in the client's."""
    drain = _round_trip_drain_s(link)
    server_addr = _addresses(topo, family)[0]
    with EchoProcess(topo, topo.server_ns, server_addr) as echo:
        assert echo.port is not None
        af = socket.AF_INET6 if family == "ipv6" else socket.AF_INET
        sock = topo.socket(topo.client_ns, af, socket.SOCK_DGRAM)
        try:
            with realtime():
                run = run_probe_client(
                    sock,
                    (server_addr, echo.port),
                    probes,
                    interval_s,
                    drain,
                    lambda n: prog("probes", n, probes),
                )
        finally:
            sock.close()
        record = echo.stop()
    return analyse_probes(
        run.send_ns,
        record.seqs,
        record.rx_ns,
        record.tx_ns,
        [(r.seq, r.reply_index, r.client_rx_ns) for r in run.replies],
        run.ip_bytes,
    )


def _flow_phase(
    topo: Topology,
    link: LinkSpec,
    d: Direction,
    tcp_s: float,
    udp_s: float,
    prog: ProgressFn,
    family: AddressFamily = "ipv4",
) -> list[FlowSummary]:
    """TCP bulk, then a UDP flood above the rate, in direction `d`."""
    spec: DirectionSpec = getattr(link, d)
    assert spec.rate_mbit is not None
    server_addr, client_addr = _addresses(topo, family)
    if d == "uplink":
        src, dst, dst_addr = topo.client_ns, topo.server_ns, server_addr
    else:
        src, dst, dst_addr = topo.server_ns, topo.client_ns, client_addr
    drain = _round_trip_drain_s(link)
    prog(f"TCP {d}", 0, 1)
    tcp = measure_tcp(topo, src, dst, dst_addr, tcp_s, drain)
    prog(f"TCP {d}", 1, 1)
    offered = spec.rate_mbit * UDP_OVERLOAD / max(1 - spec.mean_loss, 0.3)
    prog(f"UDP {d}", 0, 1)
    udp = measure_udp(topo, src, dst, dst_addr, offered, udp_s, drain)
    prog(f"UDP {d}", 1, 1)
    return [_flow_summary(tcp, d, TCP_WARMUP_S), _flow_summary(udp, d, UDP_WARMUP_S)]


def measure(
    link: LinkSpec,
    seed: int,
    *,
    backend: str = "emulator",
    probes: int = 2000,
    interval_s: float = 0.002,
    tcp_s: float = 3.0,
    udp_s: float = 2.0,
    out_dir: Path | None = None,
    progress: ProgressFn | None = None,
    address_family: AddressFamily = "ipv4",
) -> Measurement:
    """Build a topology, apply `link` with `backend`, and measure over `address_family`'s
    addresses: probes first (so a drop list meets the probes' indices), then TCP and UDP
    throughput for each rate-limited direction. Everything (processes, threads, namespaces) is
    gone when it returns or raises."""
    started = time.monotonic()
    prog: ProgressFn = progress or (lambda *_: None)
    flows: list[FlowSummary] = []
    with contextlib.ExitStack() as stack:
        if out_dir is None:
            out_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lab-cal-")))
        prog("topology", 0, 1)
        topo = stack.enter_context(Topology(tun_steering=backend == "emulator"))
        prefix = topo.prefix
        prog("topology", 1, 1)
        with _impairment(topo, backend, link, seed, out_dir) as emu_report:
            probe_stats = _probe_phase(topo, link, probes, interval_s, prog, address_family)
            for d in DIRECTIONS:
                if getattr(link, d).rate_mbit is not None:
                    flows += _flow_phase(topo, link, d, tcp_s, udp_s, prog, address_family)
    return Measurement(
        probes=probe_stats,
        flows=flows,
        backend=backend,
        seed=seed,
        emulator=emu_report.get("raw"),
        emulator_problems=emu_report.get("problems", []),
        elapsed_s=time.monotonic() - started,
        topology_prefix=prefix,
        address_family=address_family,
    )


def calibrate_cell(
    cell: Cell,
    *,
    scenario_name: str,
    impair: Impair = "auto",
    probes: int = 2000,
    out_dir: Path | None = None,
    progress: ProgressFn | None = None,
) -> CalibrationResult:
    """Measure one cell's link over its `address_family` (seed: the cell's seed for repetition
    0) and evaluate it."""
    link = cell.link
    backend = choose_backend(impair, link)
    seed = cell.seed(0)
    m = measure(
        link,
        seed,
        backend=backend,
        probes=probes,
        out_dir=out_dir,
        progress=progress,
        address_family=cell.scenario.address_family,
    )
    if progress:
        progress("evaluate", 0, 1)
    checks = evaluate(link, m, seed)
    if progress:
        progress("evaluate", 1, 1)
    return CalibrationResult(scenario_name, cell.id, link, m, checks)
