"""The link model in virtual time: what a direction's spec predicts for the probes' own send
schedule (`simulate`), repeated with independent seeds (`monte_carlo`) where the expectation is
random, and the loss count interval each loss model allows (`loss_interval`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lab.calibrate.stats import LEVEL, binomial_interval, count_reordered, mc_interval
from lab.link.model import Deliver, DirectionModel
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

MONTE_CARLO_RUNS = 200  # model runs for intervals that are not binomial
SIM_SALT = 0xCA1B  # expectations use SeedSequence([seed, SIM_SALT]), not the emulator's seed


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


def sim_seeds(seed: int, direction: Direction, runs: int) -> list[int]:
    """`runs` model seeds for `direction`, derived from `seed` but independent of the emulator's."""
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
        simulate(link, direction, arrivals_ns, size, s) for s in sim_seeds(seed, direction, runs)
    ]


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
    gilbert_elliott: the model's Monte Carlo quantiles (`sims` over the same schedule);
    isolated: exactly 0 (it drops only data packets, and probes are smaller than those)."""
    loss = spec.loss
    if isinstance(loss, BernoulliLoss):
        return (*binomial_interval(n, loss.rate, level), "binomial")
    if isinstance(loss, DropListLoss):
        k = sum(1 for i in set(loss.packets) if i < n)
        return k, k, "drop list"
    if isinstance(loss, GilbertElliottLoss):
        if not sims:
            raise ValueError("gilbert_elliott loss needs Monte Carlo runs of the model")
        return (*mc_interval([s.lost for s in sims], level), "model Monte Carlo")
    if isinstance(loss, IsolatedLoss):
        return 0, 0, "isolated: probes are not data packets"
    return 0, 0, "none"
