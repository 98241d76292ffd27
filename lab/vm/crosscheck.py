"""Do the two impairment backends agree? Compares two `lab calibrate --json` results of the
same link (pure): one-way delay medians within 0.5 ms, each loss count inside the other's 99 %
binomial interval, UDP rates within ±5 % (docs/link.md, "Cross-validation"). Gilbert-Elliott
losses come in bursts, so their interval is that of the effective sample size (`design_effect`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DELAY_P50_AGREE_MS = 0.5
RATE_AGREE_FRACTION = 0.05
Z_99 = 2.5758  # two-sided 99 % normal quantile


@dataclass(frozen=True, slots=True)
class Agreement:
    """One comparison of the two backends in one direction."""

    what: str  # "delay p50", "loss", "rate (UDP)"
    direction: str
    a: str
    b: str
    ok: bool


def wilson_interval(k: float, n: float, z: float = Z_99) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion k/n (0..1)."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # at k = 0 (k = n) the bound is exactly 0 (1); the formula leaves rounding residue there
    low = 0.0 if k <= 0 else max(0.0, centre - half)
    high = 1.0 if k >= n else min(1.0, centre + half)
    return low, high


def design_effect(loss: dict[str, Any] | None) -> float:
    """How many probes count as one independent one for the loss interval: 1 for independent
    (Bernoulli) loss; (1 + λ) / (1 − λ) with λ = 1 − p − r for Gilbert-Elliott — the variance
    inflation of a two-state Markov chain's occupancy (exact with h = 0 and k = 1, an upper bound
    otherwise)."""
    if not loss or loss.get("model") != "gilbert_elliott":
        return 1.0
    lam = 1.0 - float(loss["p"]) - float(loss.get("r", 1.0))
    return (1 + lam) / (1 - lam) if lam > 0 else 1.0


def _loss_interval(probe: dict[str, Any], effect: float) -> tuple[float, float]:
    return wilson_interval(probe["lost"] / effect, probe["offered"] / effect)


def _udp_rate(result: dict[str, Any], direction: str) -> float | None:
    flows = result.get("flows") or []
    return next(
        (f["receiver_mbit"] for f in flows if f["kind"] == "udp" and f["direction"] == direction),
        None,
    )


def agreements(a: dict[str, Any], b: dict[str, Any]) -> list[Agreement]:
    """Every comparison of result `a` with result `b` (the same link, two backends)."""
    out: list[Agreement] = []
    for d in ("uplink", "downlink"):
        pa, pb = a["probes"][d], b["probes"][d]
        da, db = pa["owd_ms"]["p50"], pb["owd_ms"]["p50"]
        out.append(
            Agreement(
                "delay p50", d, f"{da:.2f} ms", f"{db:.2f} ms", abs(da - db) <= DELAY_P50_AGREE_MS
            )
        )
        loss = (a.get("link") or {}).get(d, {}).get("loss")
        effect = design_effect(loss)
        la, lb = _loss_interval(pa, effect), _loss_interval(pb, effect)
        fa, fb = pa["lost"] / max(pa["offered"], 1), pb["lost"] / max(pb["offered"], 1)
        out.append(
            Agreement(
                "loss",
                d,
                f"{pa['lost']}/{pa['offered']}",
                f"{pb['lost']}/{pb['offered']}",
                lb[0] <= fa <= lb[1] and la[0] <= fb <= la[1],
            )
        )
        ra, rb = _udp_rate(a, d), _udp_rate(b, d)
        if ra is not None and rb is not None:
            out.append(
                Agreement(
                    "rate (UDP)",
                    d,
                    f"{ra:.2f} Mbit/s",
                    f"{rb:.2f} Mbit/s",
                    abs(ra - rb) <= RATE_AGREE_FRACTION * max(ra, rb),
                )
            )
    return out


def summary(result: dict[str, Any], direction: str) -> str:
    """One table cell: delay p50 / p5–p95, loss and UDP rate of one direction."""
    p = result["probes"][direction]
    owd = p["owd_ms"]
    text = f"{owd['p50']:.2f} ms (p5–p95 {owd['p5']:.1f}–{owd['p95']:.1f}), "
    text += f"loss {100 * p['lost'] / max(p['offered'], 1):.2f} %"
    if p.get("reordered"):
        text += f", reord {p['reordered']}"
    rate = _udp_rate(result, direction)
    return text + (f", {rate:.2f} Mbit/s" if rate is not None else "")
