"""Judge a measurement against its link (pure: no I/O, no clock): `evaluate(link, measurement,
seed)` returns one `Check` per quantity and direction — configured next to measured, the
tolerance, and pass/fail (`ok=None` for information only).

Tolerances (docs/calibrate.md): one-way delay median within 0.5 ms of the expected median; loss
count inside the 99 % acceptance interval of the configured loss model (binomial for Bernoulli);
receiver rate within ±5 % of `rate_mbit`. Expectations that depend on randomness come from the
link model run over the probes' actual schedule (`lab.calibrate.simulate`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lab.calibrate.measurement import DirectionStats, FlowSummary, Measurement
from lab.calibrate.simulate import (
    MONTE_CARLO_RUNS,
    Simulated,
    loss_interval,
    monte_carlo,
    needs_monte_carlo,
    sim_seeds,
    simulate,
)
from lab.calibrate.stats import (
    LEVEL,
    binomial_interval,
    clopper_pearson,
    in_interval,
    mc_interval,
    quantiles_ms,
)
from lab.link.mathis import mathis_mbit
from lab.link.spec import (
    DIRECTIONS,
    BernoulliLoss,
    Direction,
    DirectionSpec,
    DropListLoss,
    GilbertElliottLoss,
    IsolatedLoss,
    LinkSpec,
    ReorderSpec,
)
from lab.net.mtu import TCP_MSS_IPV4_BYTES

DELAY_TOLERANCE_MS = 0.5  # |measured − expected| one-way delay median
RATE_TOLERANCE = 0.05  # relative, receiver rate vs rate_mbit
SPREAD_TOLERANCE_MS = 0.5  # jitter: |p95−p5 measured − expected| ≤ max(this, 20 % of expected)
SPREAD_TOLERANCE_REL = 0.20
JITTER_REORDER_SLACK = 0.25  # jitter-made reordering: model interval widened by 25 % of median


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


def check_delay(measured_ms: float | None, expected_ms: float, tol_ms: float) -> bool:
    """|measured − expected| ≤ tol (a missing measurement fails)."""
    return measured_ms is not None and abs(measured_ms - expected_ms) <= tol_ms


def check_rate(measured_mbit: float | None, configured_mbit: float, tol: float) -> bool:
    """|measured / configured − 1| ≤ tol (a missing measurement fails)."""
    return measured_mbit is not None and abs(measured_mbit / configured_mbit - 1) <= tol


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
    ref = simulate(link, d, st.schedule_ns, ip_bytes, sim_seeds(seed, d, 1)[0])
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
    if isinstance(loss, IsolatedLoss):
        return f"isolated every {loss.every_ms:g} ms (data packets only, not probes)"
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
        r_int = mc_interval([s.reordered for s in sims])
        r_method = "model Monte Carlo"
    elif sims is not None and spec.reorder_allowed:
        # Jitter-made reordering depends on sub-0.1 ms packet spacing that the host adds noise
        # to; allow JITTER_REORDER_SLACK of the model's median on either side.
        lo, hi = mc_interval([s.reordered for s in sims])
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
        offered_after_loss = (f.offered_mbit or 0.0) * (1 - spec.mean_loss)
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
    loss = link.uplink.mean_loss + link.downlink.mean_loss  # data one way, ACKs the other
    cc = f.congestion_control or "default cc"
    frac = "" if f.receiver_mbit is None else f", {100 * f.receiver_mbit / rate:.0f} % of rate"
    if loss > 0 or isinstance(spec.loss, DropListLoss):
        # Under loss TCP may stay below the rate (cubic/reno); it must never exceed it.
        bound = mathis_mbit(f.mss or TCP_MSS_IPV4_BYTES, link.base_rtt_ms, loss)
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
