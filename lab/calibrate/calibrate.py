"""`lab calibrate`: measure what an impaired path really does and compare it with its LinkSpec.

Two halves, kept apart:

- **Pure comparison** (no I/O, no clock): `analyse_probes` turns raw probe records into
  per-direction statistics; `evaluate(link, measurement, seed)` returns one `Check` per quantity —
  configured next to measured, the tolerance, and pass/fail (`ok=None` for information only).
  Expectations that depend on randomness (jitter quantiles, Gilbert-Elliott loss, reordering)
  come from running the sans-I/O link model (`lab.link.model`) in virtual time over the probes'
  actual send schedule, with a seed independent of the emulator's.
- **Measurement** (`measure`): builds a topology, applies the link (emulator or netem), runs UDP
  probes through an echo in the server namespace, then TCP and UDP throughput per rate-limited
  direction (`lab.calibrate.probes`), and tears everything down.

Tolerances (docs/calibrate.md): one-way delay median within 0.5 ms of the expected median; loss
count inside the 99 % acceptance interval of the configured loss model (binomial for Bernoulli);
receiver rate within ±5 % of `rate_mbit`.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy import stats

from lab.errors import HostNotCapable
from lab.link.model import Deliver, DirectionModel
from lab.link.spec import (
    BernoulliLoss,
    DirectionSpec,
    DropListLoss,
    GilbertElliottLoss,
    LinkSpec,
    ReorderSpec,
)

if TYPE_CHECKING:
    from rich.table import Table

    from lab.calibrate.probes import EchoRecord, FlowResult, ProbeRun
    from lab.scenario.models import Cell

Direction = Literal["uplink", "downlink"]
DIRECTIONS: tuple[Direction, Direction] = ("uplink", "downlink")

DELAY_TOLERANCE_MS = 0.5  # |measured − expected| one-way delay median
LEVEL = 0.99  # acceptance level of the loss / reorder / duplicate intervals
RATE_TOLERANCE = 0.05  # relative, receiver rate vs rate_mbit
SPREAD_TOLERANCE_MS = 0.5  # jitter: |p95−p5 measured − expected| ≤ max(this, 20 % of expected)
SPREAD_TOLERANCE_REL = 0.20
JITTER_REORDER_SLACK = 0.25  # jitter-made reordering: model interval widened by 25 % of median
MONTE_CARLO_RUNS = 200  # model runs for intervals that are not binomial
SIM_SALT = 0xCA1B  # expectations use SeedSequence([seed, SIM_SALT]), not the emulator's seed
UDP_OVERLOAD = 1.2  # UDP offered load = rate × this / (1 − mean loss)
UDP_WARMUP_S = 0.3
TCP_WARMUP_S = 1.0


# =============================================================================================
# pure statistics
# =============================================================================================
def binomial_interval(n: int, p: float, level: float = LEVEL) -> tuple[int, int]:
    """Central `level` acceptance interval [lo, hi] of a Binomial(n, p) count."""
    if n <= 0 or p <= 0:
        return 0, 0
    if p >= 1:
        return n, n
    a = (1 - level) / 2
    return int(stats.binom.ppf(a, n, p)), int(stats.binom.ppf(1 - a, n, p))


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """Exact (Clopper-Pearson) `level` confidence interval of a proportion k/n."""
    if n <= 0:
        return 0.0, 1.0
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def count_reordered(seqs: Sequence[int]) -> int:
    """Packets that overtook one: with the received sequence numbers sorted, count the adjacent
    pairs (a < b) where b arrived before a. A packet sent early past ten others counts once
    (netem's `reorder` meaning), as does one held back behind ten others. Duplicates: first copy."""
    pos: dict[int, int] = {}
    for i, s in enumerate(seqs):
        pos.setdefault(s, i)
    order = sorted(pos)
    return sum(1 for a, b in itertools.pairwise(order) if pos[b] < pos[a])


def quantiles_ms(values_ns: Sequence[int] | np.ndarray) -> dict[str, float | None]:
    """p5/p50/p95/p99 and mean of nanosecond values, in ms (None when empty)."""
    v = np.asarray(values_ns, dtype=np.float64)
    if v.size == 0:
        return {"p5": None, "p50": None, "p95": None, "p99": None, "mean": None}
    p5, p50, p95, p99 = np.percentile(v, [5, 50, 95, 99]) / 1e6
    return {
        "p5": float(p5),
        "p50": float(p50),
        "p95": float(p95),
        "p99": float(p99),
        "mean": float(v.mean() / 1e6),
    }


def receiver_rate_mbit(
    times_ns: Sequence[int], ip_bytes: Sequence[int], warmup_s: float
) -> float | None:
    """IP-level rate seen by a receiver after `warmup_s` from its first arrival: bytes that
    arrived after the window's first arrival ÷ (last − first). None with < 10 arrivals."""
    t = np.asarray(times_ns, dtype=np.int64)
    b = np.asarray(ip_bytes, dtype=np.float64)
    if t.size == 0:
        return None
    keep = t >= t[0] + round(warmup_s * 1e9)
    t, b = t[keep], b[keep]
    if t.size < 10 or t[-1] <= t[0]:
        return None
    return float(b[1:].sum() * 8e3 / (t[-1] - t[0]))


def counter_rate_mbit(
    times_ns: Sequence[int], counts: Sequence[int], bytes_per_count: float, warmup_s: float
) -> float | None:
    """Rate from a cumulative counter sampled at `times_ns` (e.g. TCP data segments received):
    from the first sample `warmup_s` after the first to the first sample that reached the final
    count, in Mbit/s of `bytes_per_count` per unit. None with fewer than 2 usable samples."""
    t = np.asarray(times_ns, dtype=np.int64)
    c = np.asarray(counts, dtype=np.int64)
    ok = c >= 0
    t, c = t[ok], c[ok]
    if t.size < 2:
        return None
    start = int(np.searchsorted(t, t[0] + round(warmup_s * 1e9)))
    end = int(np.argmax(c == c.max()))
    if end <= start or t[end] <= t[start]:
        return None
    return float((c[end] - c[start]) * bytes_per_count * 8e3 / (t[end] - t[start]))


def mathis_mbit(mss_bytes: int, rtt_ms: float, loss: float) -> float | None:
    """Mathis et al. TCP (Reno) throughput bound MSS/RTT·√(3/2p), Mbit/s; None without loss."""
    if loss <= 0 or rtt_ms <= 0:
        return None
    return mss_bytes * 8 / (rtt_ms / 1e3) * math.sqrt(1.5 / loss) / 1e6


def mean_loss(spec: DirectionSpec) -> float:
    """Long-run loss probability of a direction's loss model (drop lists count as 0)."""
    loss = spec.loss
    if isinstance(loss, BernoulliLoss):
        return loss.rate
    if isinstance(loss, GilbertElliottLoss):
        return loss.mean_loss
    return 0.0


# =============================================================================================
# the model in virtual time
# =============================================================================================
@dataclass(frozen=True)
class Simulated:
    """One run of a direction's model over an arrival schedule."""

    owd_ns: np.ndarray  # release − arrival of the first copy of every delivered packet
    lost: int
    reordered: int  # count_reordered of the delivered packets in release order
    duplicates: int


def simulate(
    link: LinkSpec, direction: Direction, arrivals_ns: Sequence[int], size: int, seed: int
) -> Simulated:
    """Feed packets of `size` bytes arriving at `arrivals_ns` through the model of `direction`."""
    qp, qb = link.queue_limit(direction)
    model = DirectionModel(getattr(link, direction), queue_packets=qp, queue_bytes=qb, seed=seed)
    owd: list[int] = []
    releases: list[tuple[int, int]] = []
    lost = dups = 0
    last = None
    for i, t in enumerate(arrivals_ns):
        t = int(t) if last is None or t >= last else last  # the model wants non-decreasing times
        last = t
        d = model.offer(size, t)
        if type(d) is Deliver:
            owd.append(d.release_ns[0] - t)
            releases.append((d.release_ns[0], i))
            dups += len(d.release_ns) - 1
        else:
            lost += 1
    releases.sort()
    return Simulated(
        owd_ns=np.asarray(owd, dtype=np.int64),
        lost=lost,
        reordered=count_reordered([i for _, i in releases]),
        duplicates=dups,
    )


def _sim_seeds(seed: int, direction: Direction, runs: int) -> list[int]:
    ss = np.random.SeedSequence([seed, SIM_SALT, DIRECTIONS.index(direction)])
    return [int(s) for s in ss.generate_state(runs, np.uint64)]


def monte_carlo(
    link: LinkSpec,
    direction: Direction,
    arrivals_ns: Sequence[int],
    size: int,
    seed: int,
    runs: int = MONTE_CARLO_RUNS,
) -> list[Simulated]:
    """`runs` independent model runs over the same schedule (seeds derived from `seed`)."""
    return [
        simulate(link, direction, arrivals_ns, size, s) for s in _sim_seeds(seed, direction, runs)
    ]


def _mc_interval(values: Sequence[int], level: float = LEVEL) -> tuple[int, int]:
    a = (1 - level) / 2
    v = np.asarray(values)
    return int(np.floor(np.quantile(v, a))), int(np.ceil(np.quantile(v, 1 - a)))


def needs_monte_carlo(spec: DirectionSpec) -> bool:
    """True when loss or reordering of this direction is not a simple binomial/zero case."""
    jitter_reorders = spec.jitter_ms > 0 and spec.reorder_allowed
    explicit = isinstance(spec.reorder, ReorderSpec) and spec.reorder.probability > 0
    return isinstance(spec.loss, GilbertElliottLoss) or jitter_reorders or explicit


def loss_interval(
    spec: DirectionSpec, n: int, sims: Sequence[Simulated] | None = None, level: float = LEVEL
) -> tuple[int, int, str]:
    """(lo, hi, method) for the number of lost packets out of `n` offered.

    bernoulli: binomial; none: exactly 0; drop_list: exactly the listed indices below `n`;
    gilbert_elliott: the model's Monte Carlo quantiles (`sims` over the same schedule)."""
    loss = spec.loss
    if isinstance(loss, BernoulliLoss):
        return (*binomial_interval(n, loss.rate, level), "binomial")
    if isinstance(loss, DropListLoss):
        k = sum(1 for i in set(loss.packets) if i < n)
        return k, k, "drop list"
    if isinstance(loss, GilbertElliottLoss):
        if not sims:
            raise ValueError("gilbert_elliott loss needs Monte Carlo runs of the model")
        return (*_mc_interval([s.lost for s in sims], level), "model Monte Carlo")
    return 0, 0, "none"


def check_delay(measured_ms: float | None, expected_ms: float, tol_ms: float) -> bool:
    """|measured − expected| ≤ tol (a missing measurement fails)."""
    return measured_ms is not None and abs(measured_ms - expected_ms) <= tol_ms


def check_rate(measured_mbit: float | None, configured_mbit: float, tol: float) -> bool:
    """|measured / configured − 1| ≤ tol (a missing measurement fails)."""
    return measured_mbit is not None and abs(measured_mbit / configured_mbit - 1) <= tol


def in_interval(k: int, interval: tuple[int, int]) -> bool:
    """lo ≤ k ≤ hi."""
    return interval[0] <= k <= interval[1]


# =============================================================================================
# probe analysis
# =============================================================================================
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


# =============================================================================================
# evaluation
# =============================================================================================
@dataclass(frozen=True)
class Check:
    """One row of the calibration table. ok: True pass, False fail, None information only."""

    name: str
    direction: str  # "uplink", "downlink" or "round trip"
    configured: str
    measured: str
    tolerance: str
    ok: bool | None
    note: str = ""


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


def _ms(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{x:.{digits}f} ms"


def _pct(k: int, n: int) -> str:
    return f"{k}/{n} ({100 * k / n:.2f} %)" if n else f"{k}/0"


def _delay_checks(
    link: LinkSpec,
    d: Direction,
    st: DirectionStats,
    ip_bytes: int,
    sims: list[Simulated] | None,
    seed: int,
) -> list[Check]:
    spec: DirectionSpec = getattr(link, d)
    ref = simulate(link, d, st.schedule_ns, ip_bytes, _sim_seeds(seed, d, 1)[0])
    pool = np.concatenate([s.owd_ns for s in sims]) if sims else ref.owd_ns
    exp = quantiles_ms(pool if pool.size else ref.owd_ns)
    got = quantiles_ms(st.owd_ns)
    configured = f"{spec.delay_ms:g} ms"
    if spec.jitter_ms:
        configured += f" ± {spec.jitter_ms:g} ({spec.jitter_distribution})"
    exp50 = exp["p50"] if exp["p50"] is not None else spec.delay_ms
    out = [
        Check(
            "one-way delay p50",
            d,
            f"{configured} → p50 {exp50:.2f} ms",
            _ms(got["p50"]),
            f"±{DELAY_TOLERANCE_MS} ms",
            check_delay(got["p50"], exp50, DELAY_TOLERANCE_MS),
            "expected p50: model incl. serialisation",
        )
    ]
    if spec.jitter_ms > 0 and exp["p95"] is not None and got["p95"] is not None:
        assert exp["p5"] is not None and got["p5"] is not None
        e_spread = exp["p95"] - exp["p5"]
        g_spread = got["p95"] - got["p5"]
        tol = max(SPREAD_TOLERANCE_MS, SPREAD_TOLERANCE_REL * e_spread)
        out.append(
            Check(
                "delay spread p95−p5",
                d,
                _ms(e_spread),
                _ms(g_spread),
                f"±{tol:.2f} ms",
                abs(g_spread - e_spread) <= tol,
                "expected: model over the same schedule",
            )
        )
    else:
        p99 = got["p99"]
        out.append(
            Check(
                "one-way delay p99",
                d,
                _ms(exp["p99"]),
                _ms(p99),
                "info",
                None,
                "host scheduling adds to the tail",
            )
        )
    return out


def _count_check(
    name: str, d: Direction, k: int, n: int, interval: tuple[int, int], method: str, conf: str
) -> Check:
    lo, hi = interval
    ci = clopper_pearson(k, n)
    return Check(
        name,
        d,
        conf,
        _pct(k, n),
        f"{lo}–{hi} ({method}, {int(LEVEL * 100)} %)",
        in_interval(k, interval),
        f"99 % CI {100 * ci[0]:.2f}–{100 * ci[1]:.2f} %",
    )


def _loss_conf(spec: DirectionSpec) -> str:
    loss = spec.loss
    if isinstance(loss, BernoulliLoss):
        return f"bernoulli {100 * loss.rate:g} %"
    if isinstance(loss, GilbertElliottLoss):
        return f"gilbert_elliott, mean {100 * loss.mean_loss:.3g} %"
    if isinstance(loss, DropListLoss):
        return f"drop_list {len(loss.packets)} packets"
    return "none"


def _reorder_conf(spec: DirectionSpec) -> str:
    if isinstance(spec.reorder, ReorderSpec):
        r = spec.reorder
        return f"reorder {100 * r.probability:g} % gap {r.gap}"
    if spec.reorder == "allow" and spec.jitter_ms > 0:
        return "jitter may reorder"
    return "preserve (0)"


def _direction_checks(
    link: LinkSpec, d: Direction, st: DirectionStats, ip_bytes: int, seed: int, runs: int
) -> list[Check]:
    spec: DirectionSpec = getattr(link, d)
    sims = (
        monte_carlo(link, d, st.schedule_ns, ip_bytes, seed, runs)
        if needs_monte_carlo(spec) or spec.jitter_ms > 0
        else None
    )
    out = _delay_checks(link, d, st, ip_bytes, sims, seed)
    lo, hi, method = loss_interval(spec, st.offered, sims)
    out.append(_count_check("loss", d, st.lost, st.offered, (lo, hi), method, _loss_conf(spec)))
    if sims is not None and isinstance(spec.reorder, ReorderSpec):
        r_int = _mc_interval([s.reordered for s in sims])
        r_method = "model Monte Carlo"
    elif sims is not None and spec.reorder_allowed:
        # Jitter-made reordering depends on sub-0.1 ms packet spacing that the host adds noise
        # to; allow JITTER_REORDER_SLACK of the model's median on either side.
        lo, hi = _mc_interval([s.reordered for s in sims])
        slack = JITTER_REORDER_SLACK * float(np.median([s.reordered for s in sims]))
        r_int = (max(0, math.floor(lo - slack)), math.ceil(hi + slack))
        r_method = f"model ±{JITTER_REORDER_SLACK:.0%}"
    else:
        r_int, r_method = (0, 0), "none expected"
    out.append(
        _count_check(
            "reordered", d, st.reordered, st.received, r_int, r_method, _reorder_conf(spec)
        )
    )
    if spec.duplicate > 0 or st.duplicates:
        dup_int = binomial_interval(st.received, spec.duplicate)
        out.append(
            _count_check(
                "duplicated",
                d,
                st.duplicates,
                st.received,
                dup_int,
                "binomial",
                f"{100 * spec.duplicate:g} %",
            )
        )
    return out


def _flow_check(link: LinkSpec, f: FlowSummary) -> Check:
    spec: DirectionSpec = getattr(link, f.direction)
    assert spec.rate_mbit is not None
    rate = spec.rate_mbit
    conf = f"{rate:g} Mbit/s"
    got = "—" if f.receiver_mbit is None else f"{f.receiver_mbit:.2f} Mbit/s"
    tol = f"±{RATE_TOLERANCE * 100:g} %"
    if f.kind == "udp":
        offered_after_loss = (f.offered_mbit or 0.0) * (1 - mean_loss(spec))
        if offered_after_loss < rate * (1 + RATE_TOLERANCE):
            return Check(
                "rate (UDP)",
                f.direction,
                conf,
                got,
                tol,
                None,
                f"inconclusive: sender offered only {f.offered_mbit or 0:.1f} Mbit/s",
            )
        return Check(
            "rate (UDP)",
            f.direction,
            conf,
            got,
            tol,
            check_rate(f.receiver_mbit, rate, RATE_TOLERANCE),
            f"offered {f.offered_mbit:.1f} Mbit/s, measured at the receiver",
        )
    loss = mean_loss(spec) + mean_loss(getattr(link, _other(f.direction)))
    cc = f.congestion_control or "default cc"
    frac = "" if f.receiver_mbit is None else f", {100 * f.receiver_mbit / rate:.0f} % of rate"
    if loss > 0 or isinstance(spec.loss, DropListLoss):
        # Under loss TCP may stay below the rate (cubic/reno); it must never exceed it.
        bound = mathis_mbit(f.mss or 1448, link.base_rtt_ms, loss)
        note = f"{cc}{frac}; loss-limited: upper bound only"
        if bound is not None and cc != "bbr":
            note += f" (Mathis ≈ {bound:.1f} Mbit/s)"
        ok = f.receiver_mbit is not None and f.receiver_mbit <= rate * (1 + RATE_TOLERANCE)
        return Check(
            "rate (TCP)", f.direction, conf, got, f"≤ +{RATE_TOLERANCE * 100:g} %", ok, note
        )
    return Check(
        "rate (TCP)",
        f.direction,
        conf,
        got,
        tol,
        check_rate(f.receiver_mbit, rate, RATE_TOLERANCE),
        f"{cc}{frac}; data segments received × MTU",
    )


def _other(d: Direction) -> Direction:
    return "downlink" if d == "uplink" else "uplink"


def evaluate(
    link: LinkSpec, m: Measurement, seed: int, runs: int = MONTE_CARLO_RUNS
) -> list[Check]:
    """Compare a measurement with `link`; one Check per quantity and direction."""
    checks: list[Check] = []
    for d in DIRECTIONS:
        checks += _direction_checks(link, d, getattr(m.probes, d), m.probes.ip_bytes, seed, runs)
    rtt = quantiles_ms(m.probes.rtt_ns)
    checks.append(
        Check(
            "RTT p50 / p95 / p99",
            "round trip",
            f"base {link.base_rtt_ms:g} ms",
            " / ".join("—" if rtt[k] is None else f"{rtt[k]:.2f}" for k in ("p50", "p95", "p99"))
            + " ms",
            "info",
            None,
            f"{len(m.probes.rtt_ns)} answered probes",
        )
    )
    for f in m.flows:
        checks.append(_flow_check(link, f))
    for problem in m.emulator_problems:
        checks.append(Check("emulator", "both", "—", problem, "none", False, "see emulator.json"))
    return checks


def passed(checks: Sequence[Check]) -> bool:
    """True when no check failed (information rows do not count)."""
    return all(c.ok is not False for c in checks)


# =============================================================================================
# presentation
# =============================================================================================
@dataclass
class CalibrationResult:
    """The outcome of `lab calibrate`: the checks and what they were computed from."""

    scenario: str
    cell: str
    link: LinkSpec
    measurement: Measurement
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return passed(self.checks)

    def to_json(self) -> dict[str, Any]:
        """Machine-readable form (`lab calibrate --json`)."""
        m = self.measurement
        return {
            "scenario": self.scenario,
            "cell": self.cell,
            "backend": m.backend,
            "seed": m.seed,
            "topology_prefix": m.topology_prefix,
            "passed": self.ok,
            "elapsed_s": round(m.elapsed_s, 3),
            "link": self.link.model_dump(mode="json"),
            "checks": [asdict(c) for c in self.checks],
            "probes": {
                d: {
                    "offered": s.offered,
                    "received": s.received,
                    "lost": s.lost,
                    "duplicates": s.duplicates,
                    "reordered": s.reordered,
                    "owd_ms": quantiles_ms(s.owd_ns),
                }
                for d, s in (("uplink", m.probes.uplink), ("downlink", m.probes.downlink))
            }
            | {"rtt_ms": quantiles_ms(m.probes.rtt_ns), "ip_bytes": m.probes.ip_bytes},
            "flows": [asdict(f) for f in m.flows],
            "emulator": m.emulator,
            "emulator_problems": m.emulator_problems,
        }


def result_table(result: CalibrationResult) -> Table:
    """A rich table: configured next to measured, tolerance, PASS/FAIL/info."""
    from rich.markup import escape
    from rich.table import Table

    m = result.measurement
    verdict = "[green]PASS[/]" if result.ok else "[red]FAIL[/]"
    t = Table(
        title=f"calibrate {escape(result.scenario)} \\[{result.cell}] — {m.backend}, "
        f"seed {m.seed}: {verdict} ({m.elapsed_s:.1f} s)",
        title_justify="left",
    )
    for col in ("check", "direction", "configured", "measured", "tolerance", "result", "note"):
        t.add_column(col, overflow="fold")
    for c in result.checks:
        res = "[dim]info[/]" if c.ok is None else ("[green]pass[/]" if c.ok else "[red]FAIL[/]")
        t.add_row(c.name, c.direction, c.configured, c.measured, c.tolerance, res, c.note)
    return t


# =============================================================================================
# measurement (I/O)
# =============================================================================================
class CalibrationError(HostNotCapable):
    """The calibration could not run (backend unavailable, a process failed)."""


Impair = Literal["auto", "emulator", "netem"]
ProgressFn = Callable[[str, float, float], None]  # (phase, done, total)


def choose_backend(impair: Impair, link: LinkSpec) -> str:
    """The backend to use, "emulator" or "netem". auto = netem where the kernel has sch_netem
    and it can express the link, else the emulator. Raises CalibrationError when netem is
    asked for but unusable."""
    from lab.link.netem import UnsupportedByNetem, netem_commands, netem_probe

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
        qbytes = qb if qb is not None else (qp or 0) * 1500
        s += qbytes * 8 / (spec.rate_mbit * 1e6)
    return s


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
        ip = [n * scale for n in f.arrivals.sizes]
        rate = receiver_rate_mbit(f.arrivals.times_ns, ip, warmup_s)
    return FlowSummary(
        "tcp", d, rate, mss=f.segment_bytes, congestion_control=f.info.get("congestion_control")
    )


@contextlib.contextmanager
def _impairment(
    topo: Any, backend: str, link: LinkSpec, seed: int, out_dir: Path
) -> Iterator[dict[str, Any]]:
    """Apply the link for the duration of the block; yields a dict that receives the emulator's
    report ("raw", "problems") after the block."""
    report: dict[str, Any] = {}
    if backend == "netem":
        from lab.link.netem import netem_commands

        n = topo.names
        for argv in netem_commands(
            link, uplink_dev=n.router_server_if, downlink_dev=n.router_client_if, netns=n.router_ns
        ):
            p = subprocess.run(argv, capture_output=True, text=True, check=False)
            if p.returncode != 0:
                raise CalibrationError(f"{' '.join(argv)}: {p.stderr.strip()}")
        yield report  # the qdiscs go with the namespaces
        return
    from lab.link.emulator import EmulatorProcess

    emu = EmulatorProcess(topo, link, seed, out_dir)
    emu.start()
    try:
        yield report
    finally:
        if emu.proc is not None and emu.proc.poll() is None:
            rep = emu.stop()
            report["raw"] = rep.raw
            report["problems"] = rep.problems()


def _probe_phase(
    topo: Any, link: LinkSpec, probes: int, interval_s: float, prog: ProgressFn
) -> ProbeStats:
    """Echo in the server namespace, probe client (SCHED_FIFO while it runs) in the client's."""
    import socket

    from lab.calibrate.probes import EchoProcess, realtime, run_probe_client

    drain = _drain_s(link, "uplink") + _drain_s(link, "downlink") + 0.3
    with EchoProcess(topo, topo.server_ns, topo.server_v4) as echo:
        assert echo.port is not None
        sock = topo.socket(topo.client_ns, socket.AF_INET, socket.SOCK_DGRAM)
        try:
            with realtime():
                run: ProbeRun = run_probe_client(
                    sock,
                    (topo.server_v4, echo.port),
                    probes,
                    interval_s,
                    drain,
                    lambda n: prog("probes", n, probes),
                )
        finally:
            sock.close()
        record: EchoRecord = echo.stop()
    return analyse_probes(
        run.send_ns,
        record.seqs,
        record.rx_ns,
        record.tx_ns,
        [(r.seq, r.reply_index, r.client_rx_ns) for r in run.replies],
        run.ip_bytes,
    )


def _flow_phase(
    topo: Any, link: LinkSpec, d: Direction, tcp_s: float, udp_s: float, prog: ProgressFn
) -> list[FlowSummary]:
    """TCP bulk, then a UDP flood above the rate, in direction `d`."""
    from lab.calibrate.probes import measure_tcp, measure_udp

    spec: DirectionSpec = getattr(link, d)
    assert spec.rate_mbit is not None
    if d == "uplink":
        src, dst, dst_addr = topo.client_ns, topo.server_ns, topo.server_v4
    else:
        src, dst, dst_addr = topo.server_ns, topo.client_ns, topo.client_v4
    drain = _drain_s(link, d) + _drain_s(link, _other(d)) + 0.3
    prog(f"TCP {d}", 0, 1)
    tcp = measure_tcp(topo, src, dst, dst_addr, tcp_s, drain)
    prog(f"TCP {d}", 1, 1)
    offered = spec.rate_mbit * UDP_OVERLOAD / max(1 - mean_loss(spec), 0.3)
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
) -> Measurement:
    """Build a topology, apply `link` with `backend`, and measure: probes first (so a drop list
    meets the probes' indices), then TCP and UDP throughput for each rate-limited direction.
    Everything (processes, threads, namespaces) is gone when it returns or raises."""
    from lab.net.topology import Topology

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
            probe_stats = _probe_phase(topo, link, probes, interval_s, prog)
            for d in DIRECTIONS:
                if getattr(link, d).rate_mbit is not None:
                    flows += _flow_phase(topo, link, d, tcp_s, udp_s, prog)
    return Measurement(
        probes=probe_stats,
        flows=flows,
        backend=backend,
        seed=seed,
        emulator=emu_report.get("raw"),
        emulator_problems=emu_report.get("problems", []),
        elapsed_s=time.monotonic() - started,
        topology_prefix=prefix,
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
    """Measure one cell's link (seed: the cell's seed for repetition 0) and evaluate it."""
    link = cell.link
    backend = choose_backend(impair, link)
    seed = cell.seed(0)
    m = measure(link, seed, backend=backend, probes=probes, out_dir=out_dir, progress=progress)
    if progress:
        progress("evaluate", 0, 1)
    checks = evaluate(link, m, seed)
    if progress:
        progress("evaluate", 1, 1)
    return CalibrationResult(scenario_name, cell.id, link, m, checks)


@contextlib.contextmanager
def rich_progress(enabled: bool = True) -> Iterator[ProgressFn | None]:
    """A ProgressFn drawing one rich progress bar per phase on stderr (None when disabled)."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    bars: dict[str, Any] = {}
    with Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        TextColumn("{task.completed:g}/{task.total:g}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        refresh_per_second=4,
        transient=False,
    ) as bar:

        def update(phase: str, done: float, total: float) -> None:
            if phase not in bars:
                bars[phase] = bar.add_task(phase, total=total)
            bar.update(bars[phase], completed=done, total=total)

        yield update
