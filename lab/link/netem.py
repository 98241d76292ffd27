"""The LinkSpec as `tc` argv lists: netem (and a tbf child where needed) on the router's egress.

`netem_commands(link, uplink_dev=…, downlink_dev=…, netns=…)` returns the argv lists to run, in
order; nothing here runs them except the `netem_available()` probe. The uplink (client → server)
is shaped on the router interface that faces the server, the downlink on the one facing the client.

Mapping (docs/link.md has the full table and what netem cannot do):
- delay/jitter → `delay Dus Jus [distribution normal|pareto]` (uniform: netem's default);
- `reorder: preserve` with jitter → netem's own `rate` (with `rate`, netem computes each send time
  from the previous packet's, so jitter cannot reorder); without `rate_mbit`, a 10 Gbit/s `rate`
  (1.2 µs per 1500-byte packet) is added only for that purpose;
- `reorder: allow` (or a reorder mapping) with jitter and `rate_mbit` → netem without `rate`
  and a tbf child for the rate, so that jitter may reorder as in the model;
- bernoulli → `loss random P%`; gilbert_elliott → `loss gemodel p r 1-h 1-k` (percent);
  drop_list and isolated → `UnsupportedByNetem` (emulator only: netem drops neither by index nor
  one data packet per period);
- queue → netem `limit` in packets (bytes and BDP converted at 1500 B per packet) plus the packets
  that are in flight on the delay line, or the tbf child's `limit` in bytes;
- duplicate → `duplicate P%`; reorder mapping → `reorder P% C% gap G`;
- netem's `seed` exists only in newer kernels and iproute2 (not Debian 12's iproute2 6.1): pass
  `seed=` only where `tc` accepts it. netem's decisions never equal the model's, seed or not.
"""

from __future__ import annotations

import math
import os
import secrets
import subprocess
from pathlib import Path

from lab.errors import RunSetupError
from lab.link.spec import (
    DIRECTIONS,
    BernoulliLoss,
    DirectionSpec,
    DropListLoss,
    GilbertElliottLoss,
    IsolatedLoss,
    LinkSpec,
    ReorderSpec,
)
from lab.net.mtu import MTU_BYTES  # bytes per packet when converting byte limits to packets

ORDER_KEEPER_BIT = 10_000_000_000  # netem `rate` used only to keep jitter from reordering
UNLIMITED_PACKETS = 100_000  # netem limit when the model has no queue limit (no rate_mbit)
TBF_BURST_S = 0.001  # tbf bucket: 1 ms of traffic at the rate (at least 2 MTU)


class UnsupportedByNetem(RunSetupError):
    """The link specification uses something tc netem cannot express; use the emulator."""


def _pct(p: float) -> str:
    """Probability 0..1 → tc percent text without exponent, e.g. 0.015 → '1.5%'."""
    text = f"{p * 100:.7f}".rstrip("0").rstrip(".")
    return f"{text or '0'}%"


def _us(ms: float) -> str:
    """Milliseconds → tc time in whole microseconds, e.g. 25 → '25000us'."""
    return f"{round(ms * 1000)}us"


def _bit(rate_mbit: float) -> str:
    """Mbit/s → tc rate in bit/s, e.g. 20 → '20000000bit'."""
    return f"{round(rate_mbit * 1e6)}bit"


def _inflight_packets(spec: DirectionSpec, rate_bit: float) -> int:
    """Packets on the delay line at `rate_bit` (netem counts them against its limit too)."""
    worst_delay_s = (spec.delay_ms + 4 * spec.jitter_ms) / 1e3
    return math.ceil(rate_bit / 8 * worst_delay_s / MTU_BYTES) + 1


def _queue_packets(queue_packets: int | None, queue_bytes: int | None) -> int:
    if queue_packets is not None:
        return queue_packets
    assert queue_bytes is not None
    return max(1, math.ceil(queue_bytes / MTU_BYTES))


def direction_qdiscs(
    spec: DirectionSpec,
    *,
    queue_packets: int | None,
    queue_bytes: int | None,
    seed: int | None = None,
) -> tuple[list[str], list[str] | None]:
    """(netem options, tbf child options or None) for one direction."""
    netem: list[str] = []
    tbf: list[str] | None = None
    jitter_reorders = spec.jitter_ms > 0 and spec.reorder != "preserve"
    q_pkts = _queue_packets(queue_packets, queue_bytes)

    if spec.rate_mbit is not None and jitter_reorders:
        rate_bit = spec.rate_mbit * 1e6
        limit = UNLIMITED_PACKETS
        burst = max(2 * MTU_BYTES, math.ceil(rate_bit / 8 * TBF_BURST_S))
        q_bytes = queue_bytes if queue_bytes is not None else q_pkts * MTU_BYTES
        tbf = ["tbf", "rate", _bit(spec.rate_mbit), "burst", str(burst), "limit", str(q_bytes)]
        netem_rate = None
    elif spec.rate_mbit is not None:
        netem_rate = _bit(spec.rate_mbit)
        limit = q_pkts + _inflight_packets(spec, spec.rate_mbit * 1e6)
    elif spec.jitter_ms > 0 and spec.reorder == "preserve":
        netem_rate = f"{ORDER_KEEPER_BIT}bit"
        limit = UNLIMITED_PACKETS
    else:
        netem_rate = None
        limit = UNLIMITED_PACKETS

    netem += ["limit", str(limit)]
    if spec.delay_ms > 0 or spec.jitter_ms > 0:
        netem += ["delay", _us(spec.delay_ms)]
        if spec.jitter_ms > 0:
            netem.append(_us(spec.jitter_ms))
            if spec.jitter_distribution != "uniform":
                netem += ["distribution", spec.jitter_distribution]

    loss = spec.loss
    if isinstance(loss, BernoulliLoss):
        if loss.rate > 0:
            netem += ["loss", "random", _pct(loss.rate)]
    elif isinstance(loss, GilbertElliottLoss):
        netem += ["loss", "gemodel", _pct(loss.p), _pct(loss.r), _pct(1 - loss.h), _pct(1 - loss.k)]
    elif isinstance(loss, DropListLoss) and loss.packets:
        raise UnsupportedByNetem(
            "loss model drop_list (drop by packet index) cannot be expressed with tc netem; "
            "use the emulator backend (--impair emulator)"
        )
    elif isinstance(loss, IsolatedLoss):
        raise UnsupportedByNetem(
            "loss model isolated (one data packet about every every_ms) is emulator only: "
            "tc netem cannot express it; use the emulator backend (--impair emulator)"
        )

    if spec.duplicate > 0:
        netem += ["duplicate", _pct(spec.duplicate)]

    if isinstance(spec.reorder, ReorderSpec) and spec.reorder.probability > 0:
        if spec.delay_ms <= 0:
            raise UnsupportedByNetem(
                "netem reorders only packets it delays: reorder needs delay_ms > 0"
            )
        ro = spec.reorder
        netem += ["reorder", _pct(ro.probability)]
        if ro.correlation > 0:
            netem.append(_pct(ro.correlation))
        netem += ["gap", str(ro.gap)]

    if netem_rate is not None:
        netem += ["rate", netem_rate]
    if seed is not None:
        netem += ["seed", str(seed)]
    return ["netem", *netem], tbf


def _tc(netns: str | None) -> list[str]:
    return ["tc", "-netns", netns] if netns else ["tc"]


def netem_commands(
    link: LinkSpec,
    *,
    uplink_dev: str,
    downlink_dev: str,
    netns: str | None = None,
    seeds: dict[str, int] | None = None,
) -> list[list[str]]:
    """argv lists that install `link` on the router's two egress interfaces (idempotent:
    `qdisc replace`). `uplink_dev` carries client → server packets (the router's server-side
    interface), `downlink_dev` server → client. `seeds` (per direction) adds netem's `seed`,
    which only newer tc/kernels accept. Raises `UnsupportedByNetem`."""
    cmds: list[list[str]] = []
    for direction, dev in (("uplink", uplink_dev), ("downlink", downlink_dev)):
        qp, qb = link.queue_limit(direction)  # type: ignore[arg-type]
        netem, tbf = direction_qdiscs(
            getattr(link, direction),
            queue_packets=qp,
            queue_bytes=qb,
            seed=None if seeds is None else seeds[direction],
        )
        cmds.append([*_tc(netns), "qdisc", "replace", "dev", dev, "root", "handle", "1:", *netem])
        if tbf is not None:
            cmds.append(
                [
                    *_tc(netns),
                    "qdisc",
                    "replace",
                    "dev",
                    dev,
                    "parent",
                    "1:1",
                    "handle",
                    "10:",
                    *tbf,
                ]
            )
    return cmds


def netem_teardown_commands(
    *, uplink_dev: str, downlink_dev: str, netns: str | None = None
) -> list[list[str]]:
    """argv lists that remove the qdiscs again (the child goes with the root)."""
    return [[*_tc(netns), "qdisc", "del", "dev", dev, "root"] for dev in (uplink_dev, downlink_dev)]


# --- availability -------------------------------------------------------------------------
def _module_present() -> bool:
    """sch_netem loaded, built in, or installed as a loadable module for this kernel."""
    if Path("/sys/module/sch_netem").exists():
        return True
    moddir = Path("/lib/modules") / os.uname().release
    builtin = moddir / "modules.builtin"
    try:
        if "sch_netem" in builtin.read_text():
            return True
    except OSError:
        pass
    return any((moddir / "kernel" / "net" / "sched").glob("sch_netem.ko*"))


def _run(argv: list[str]) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def netem_probe() -> tuple[bool, str]:
    """(usable, reason): as root, install netem on the loopback of a throwaway namespace;
    otherwise look for the sch_netem module. Leaves nothing behind."""
    if os.geteuid() != 0:
        if _module_present():
            return True, "sch_netem module present (not probed: not root)"
        return False, "no sch_netem module for this kernel"
    ns = f"lab{secrets.token_hex(3)}-netem"
    if not _run(["ip", "netns", "add", ns]):
        return False, "cannot create a network namespace to probe netem"
    try:
        # Every namespace has its own loopback: no dummy/veth module needed for the probe.
        if _run(["tc", "-netns", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"]):
            return True, "tc netem works"
        return False, "the kernel refuses a netem qdisc (no sch_netem)"
    finally:
        _run(["ip", "netns", "del", ns])


def netem_available() -> bool:
    """True when tc netem can be used on this host (see `netem_probe`)."""
    return netem_probe()[0]


# --- what netem leaves out (run.json `impairment.applied.<cell>.not_expressed`) --------------
def netem_not_expressed(link: LinkSpec, *, seeded: bool = False) -> list[str]:
    """What the netem backend does not reproduce of `link` and of the emulator's guarantees,
    one sentence each (stated in run.json and the report)."""
    out = []
    if not seeded:
        out.append(
            "seed: netem's random decisions are not seeded (Debian 12's tc has no `seed`): "
            "h2 and h3 do not see the same drops by packet index (no common random numbers) "
            "and a repetition is not reproducible"
        )
    out.append(
        "drop log: netem records no dropped packets, so the loss-anchored HOL metrics "
        "(blast radius, HOL spread) are not computed"
    )
    for direction in DIRECTIONS:
        spec: DirectionSpec = getattr(link, direction)
        qp, qb = link.queue_limit(direction)
        uses_tbf = spec.rate_mbit is not None and spec.jitter_ms > 0 and spec.reorder_allowed
        if qb is not None and not uses_tbf:
            out.append(
                f"{direction} queue: {qb} bytes counted as {_queue_packets(qp, qb)} packets of "
                f"{MTU_BYTES} B (netem limits packets, not bytes)"
            )
    return out
