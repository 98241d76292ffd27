"""What a calibration measured, as plain data: per-direction probe statistics (`analyse_probes`
turns the raw probe records into them), throughput summaries, and the whole `Measurement`.
Times in ns (CLOCK_MONOTONIC, shared by every namespace), rates in IP-level Mbit/s."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lab.calibrate.stats import count_reordered
from lab.link.spec import Direction


@dataclass(frozen=True)
class DirectionStats:
    """What the probes saw in one direction."""

    offered: int  # packets that entered the direction
    received: int  # distinct packets that came out
    duplicates: int  # extra copies
    reordered: int  # count_reordered over first copies in arrival order
    owd_ns: list[int]  # one-way delay of every first copy (ns)
    schedule_ns: list[int]  # when the packets entered (for the model's expectations)

    @property
    def lost(self) -> int:
        return self.offered - self.received


@dataclass(frozen=True)
class ProbeStats:
    """Both directions plus the round trip of every answered probe."""

    uplink: DirectionStats
    downlink: DirectionStats
    rtt_ns: list[int]
    ip_bytes: int


def analyse_probes(
    send_ns: Sequence[int],
    echo_seqs: Sequence[int],
    echo_rx_ns: Sequence[int],
    echo_tx_ns: Sequence[int],
    replies: Sequence[tuple[int, int, int]],
    ip_bytes: int,
) -> ProbeStats:
    """Per-direction loss, duplicates, reordering and one-way delays from the raw records.

    send_ns[seq]: client send time; echo_seqs/echo_rx_ns/echo_tx_ns: the echo's arrivals in
    order and the send times of its replies (one reply per arrival, reply index = position);
    replies: (seq, reply_index, client_rx_ns) in client arrival order.
    Uplink loss = probes the echo never saw; downlink loss = replies sent but never received."""
    seen: set[int] = set()
    up_owd: list[int] = []
    up_order: list[int] = []
    for seq, t in zip(echo_seqs, echo_rx_ns, strict=True):
        if seq in seen or seq >= len(send_ns):
            continue
        seen.add(seq)
        up_order.append(seq)
        up_owd.append(t - send_ns[seq])
    uplink = DirectionStats(
        offered=len(send_ns),
        received=len(seen),
        duplicates=len(echo_seqs) - len(seen),
        reordered=count_reordered(up_order),
        owd_ns=up_owd,
        schedule_ns=list(send_ns),
    )
    got: set[int] = set()
    down_owd: list[int] = []
    down_order: list[int] = []
    rtt: list[int] = []
    answered: set[int] = set()
    for seq, idx, c_rx in replies:
        if idx in got or idx >= len(echo_seqs):
            continue
        got.add(idx)
        down_order.append(idx)
        down_owd.append(c_rx - echo_tx_ns[idx])
        if seq not in answered and seq < len(send_ns):
            answered.add(seq)
            rtt.append(c_rx - send_ns[seq])
    downlink = DirectionStats(
        offered=len(echo_seqs),
        received=len(got),
        duplicates=sum(1 for _ in replies) - len(got),
        reordered=count_reordered(down_order),
        owd_ns=down_owd,
        schedule_ns=list(echo_tx_ns),
    )
    return ProbeStats(uplink=uplink, downlink=downlink, rtt_ns=rtt, ip_bytes=ip_bytes)


@dataclass(frozen=True)
class FlowSummary:
    """A throughput test reduced to what `evaluate` needs (IP-level Mbit/s)."""

    kind: Literal["udp", "tcp"]
    direction: Direction
    receiver_mbit: float | None
    offered_mbit: float | None = None  # udp: achieved send rate
    mss: int | None = None
    congestion_control: str | None = None


@dataclass
class Measurement:
    """Everything `measure` collected, reduced to plain data."""

    probes: ProbeStats
    flows: list[FlowSummary] = field(default_factory=list)
    backend: str = "emulator"
    seed: int = 0
    emulator: dict[str, Any] | None = None  # EmulatorReport.raw
    emulator_problems: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    topology_prefix: str = ""  # run prefix of the (removed) namespaces
    address_family: str = "ipv4"  # of the probes' and flows' addresses (ipv4 | ipv6)
