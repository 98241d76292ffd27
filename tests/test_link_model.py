"""Properties of the sans-I/O link model (virtual time, no I/O)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from scipy.stats import binom

from lab.link.model import Deliver, DirectionModel, Drop, build_models
from lab.link.spec import (
    PURE_ACK_MAX_BYTES,
    BernoulliLoss,
    DirectionSpec,
    DropListLoss,
    GilbertElliottLoss,
    IsolatedLoss,
    LinkSpec,
    QueueSpec,
    ReorderSpec,
)

MS = 1_000_000  # ns
DET = settings(derandomize=True, max_examples=25, deadline=None)


def model(spec: DirectionSpec, seed: int = 1, qp: int | None = 1000, qb: int | None = None):
    return DirectionModel(spec, queue_packets=qp, queue_bytes=qb, seed=seed)


def run(m: DirectionModel, n: int, gap_ns: int = 1 * MS, size: int = 1200):
    return [m.offer(size, i * gap_ns) for i in range(n)]


@DET
@given(rate=st.floats(0.001, 0.5), seed=st.integers(0, 2**32))
def test_bernoulli_loss_rate_in_binomial_interval(rate: float, seed: int) -> None:
    n = 20_000
    out = run(model(DirectionSpec(loss=BernoulliLoss(model="bernoulli", rate=rate)), seed), n)
    lost = sum(isinstance(d, Drop) for d in out)
    lo, hi = binom.interval(0.999, n, rate)
    assert lo <= lost <= hi
    assert all(d.reason == "random" for d in out if isinstance(d, Drop))


def test_gilbert_elliott_mean_loss_and_reasons() -> None:
    ge = GilbertElliottLoss(model="gilbert_elliott", p=0.01, r=0.25, h=0.3, k=0.998)
    out = run(model(DirectionSpec(loss=ge), seed=7), 300_000)
    drops = [d for d in out if isinstance(d, Drop)]
    assert abs(len(drops) / len(out) - ge.mean_loss) < 0.1 * ge.mean_loss
    reasons = {d.reason for d in drops}
    assert reasons == {"burst", "random"}
    # Bad state: expected burst share = (1-h)·p/(p+r) / mean_loss.
    burst_share = sum(d.reason == "burst" for d in drops) / len(drops)
    expected = (1 - ge.h) * ge.p / (ge.p + ge.r) / ge.mean_loss
    assert abs(burst_share - expected) < 0.05


def test_gilbert_elliott_losses_come_in_bursts() -> None:
    # Pure Gilbert (h=0: every bad-state packet lost): mean burst length 1/r.
    ge = GilbertElliottLoss(model="gilbert_elliott", p=0.005, r=0.2)
    out = run(model(DirectionSpec(loss=ge), seed=3), 200_000)
    lost = np.array([isinstance(d, Drop) for d in out])
    starts = np.flatnonzero(lost[1:] & ~lost[:-1])
    mean_burst = lost.sum() / max(len(starts), 1)
    assert 4.0 < mean_burst < 6.0


def test_drop_list_drops_exactly_those_indices() -> None:
    spec = DirectionSpec(loss=DropListLoss(model="drop_list", packets=[0, 7, 8, 50]))
    out = run(model(spec), 100)
    dropped = [i for i, d in enumerate(out) if isinstance(d, Drop)]
    assert dropped == [0, 7, 8, 50]
    assert all(out[i] == Drop("drop_list") for i in dropped)


@DET
@given(
    rate_mbit=st.floats(0.5, 500),
    sizes=st.lists(st.integers(40, 1500), min_size=2, max_size=300),
    seed=st.integers(0, 1000),
)
def test_rate_is_never_exceeded(rate_mbit: float, sizes: list[int], seed: int) -> None:
    spec = DirectionSpec(delay_ms=5, rate_mbit=rate_mbit, queue=QueueSpec(packets=10_000))
    m = model(spec, seed, qp=10_000)
    releases = []
    for s in sizes:  # back to back: all arrive at the same instant
        d = m.offer(s, 1_000)
        assert isinstance(d, Deliver)
        releases.append(d.release_ns[0])
    for (a, b), size in zip(itertools_pairs(releases), sizes[1:], strict=True):
        assert b - a >= size * 8 / (rate_mbit * 1e6) * 1e9 - 1e-6
    # and in total: the last byte cannot leave before all bytes were serialised
    assert releases[-1] - 1_000 - 5 * MS >= sum(sizes) * 8 / (rate_mbit * 1e6) * 1e9 - 1


def itertools_pairs(xs: list[int]) -> list[tuple[int, int]]:
    return list(itertools.pairwise(xs))


@DET
@given(
    jitter_ms=st.floats(0.1, 50),
    dist=st.sampled_from(["uniform", "normal", "pareto"]),
    seed=st.integers(0, 2**32),
    gap_us=st.integers(1, 5000),
)
def test_preserve_keeps_order(jitter_ms: float, dist: str, seed: int, gap_us: int) -> None:
    spec = DirectionSpec(delay_ms=10, jitter_ms=jitter_ms, jitter_distribution=dist)  # type: ignore[arg-type]
    out = run(model(spec, seed), 2000, gap_ns=gap_us * 1000)
    rel = [d.release_ns[0] for d in out if isinstance(d, Deliver)]
    assert rel == sorted(rel)
    assert all(r >= i * gap_us * 1000 for i, r in enumerate(rel))  # never before arrival


def test_allow_lets_jitter_reorder() -> None:
    spec = DirectionSpec(delay_ms=10, jitter_ms=5, reorder="allow")
    out = run(model(spec), 2000, gap_ns=100_000)
    rel = [d.release_ns[0] for d in out if isinstance(d, Deliver)]
    assert rel != sorted(rel)


def test_jitter_never_makes_delay_negative() -> None:
    spec = DirectionSpec(delay_ms=1, jitter_ms=20, jitter_distribution="normal", reorder="allow")
    out = run(model(spec), 5000)
    delays = [d.release_ns[0] - i * MS for i, d in enumerate(out) if isinstance(d, Deliver)]
    assert min(delays) == 0  # clamped, and many were
    assert sum(x == 0 for x in delays) > 1000


def test_jitter_distributions_have_the_configured_spread() -> None:
    for dist, lo, hi in (
        ("uniform", 2.0 / math.sqrt(3) * 0.95, 2.0 / math.sqrt(3) * 1.05),
        ("normal", 1.9, 2.1),
        ("pareto", 1.4, 2.0),  # netem caps its table at +4 jitter
    ):
        spec = DirectionSpec(delay_ms=50, jitter_ms=2, jitter_distribution=dist, reorder="allow")  # type: ignore[arg-type]
        out = run(model(spec), 50_000)
        d = np.array([x.release_ns[0] - i * MS for i, x in enumerate(out)]) / MS
        assert abs(d.mean() - 50) < 0.15, dist
        assert lo < d.std() < hi, (dist, d.std())
        if dist == "uniform":
            assert d.min() >= 48 and d.max() <= 52


def test_same_seed_same_decisions_other_seed_different() -> None:
    spec = DirectionSpec(
        delay_ms=10, jitter_ms=3, loss=BernoulliLoss(model="bernoulli", rate=0.1), duplicate=0.05
    )
    a = run(model(spec, seed=42), 3000)
    b = run(model(spec, seed=42), 3000)
    c = run(model(spec, seed=43), 3000)
    assert a == b
    assert a != c
    assert [isinstance(x, Drop) for x in a] != [isinstance(x, Drop) for x in c]


def test_loss_decisions_do_not_depend_on_jitter_or_duplication() -> None:
    loss = BernoulliLoss(model="bernoulli", rate=0.2)
    plain = run(model(DirectionSpec(loss=loss), seed=5), 2000)
    busy = run(
        model(DirectionSpec(loss=loss, jitter_ms=4, delay_ms=5, duplicate=0.3), seed=5), 2000
    )
    assert [isinstance(x, Drop) for x in plain] == [isinstance(x, Drop) for x in busy]


def test_queue_overflow_when_offered_load_exceeds_rate() -> None:
    spec = DirectionSpec(delay_ms=10, rate_mbit=10, queue=QueueSpec(packets=20))
    # 1500 B every 0.6 ms = 20 Mbit/s offered into 10 Mbit/s
    over = run(model(spec, qp=20), 5000, gap_ns=600_000, size=1500)
    queue_drops = sum(d == Drop("queue") for d in over)
    assert 0.4 < queue_drops / 5000 < 0.6
    # half the rate: nothing dropped
    under = run(model(spec, qp=20), 5000, gap_ns=2_400_000, size=1500)
    assert not any(isinstance(d, Drop) for d in under)


def test_queue_byte_limit() -> None:
    spec = DirectionSpec(rate_mbit=1)
    m = model(spec, qp=None, qb=4000)
    out = [m.offer(1500, 0) for _ in range(5)]
    assert [isinstance(d, Drop) for d in out] == [False, False, True, True, True]
    assert m.index == 5


def test_explicit_reorder_follows_netem_gap() -> None:
    spec = DirectionSpec(delay_ms=10, reorder=ReorderSpec(probability=1.0, gap=5))
    out = run(model(spec), 50)
    undelayed = [i for i, d in enumerate(out) if d.release_ns[0] == i * MS]  # type: ignore[union-attr]
    assert undelayed == list(range(4, 50, 5))


def test_duplicate_makes_a_second_copy() -> None:
    spec = DirectionSpec(delay_ms=2, rate_mbit=10, duplicate=1.0)
    d = model(spec).offer(1250, 0)
    assert isinstance(d, Deliver)
    first, second = d.release_ns
    assert first == 1_000_000 + 2 * MS  # 1250 B at 10 Mbit/s = 1 ms, + 2 ms
    assert second == first + 1_000_000  # the copy is serialised after the original


def test_build_models_gives_independent_directions() -> None:
    spec = DirectionSpec(loss=BernoulliLoss(model="bernoulli", rate=0.3))
    models = build_models(LinkSpec(uplink=spec, downlink=spec), seed=9)
    assert set(models) == {"uplink", "downlink"}
    up = run(models["uplink"], 500)
    down = run(models["downlink"], 500)
    assert [isinstance(x, Drop) for x in up] != [isinstance(x, Drop) for x in down]
    again = build_models(LinkSpec(uplink=spec, downlink=spec), seed=9)
    assert run(again["uplink"], 500) == up


def test_build_models_uses_the_link_queue_limit() -> None:
    spec = DirectionSpec(delay_ms=10, rate_mbit=8, queue=QueueSpec(bdp=1.0))
    models = build_models(LinkSpec(uplink=spec, downlink=spec), seed=1)
    # BDP = 1 MB/s × 20 ms = 20,000 bytes
    assert models["uplink"].queue_bytes == 20_000
    assert models["uplink"].queue_packets is None


# --- isolated losses ------------------------------------------------------------------------
def _mixed(n: int, gap_ns: int = 1 * MS) -> list[tuple[int, int]]:
    """(size, arrival ns): every third packet a 60-byte pure ACK, the rest 400-byte data."""
    return [(60 if i % 3 == 0 else 400, i * gap_ns) for i in range(n)]


def _isolated_reference(
    packets: list[tuple[int, int]], every_ms: float, jitter: float, seed: int
) -> list[int]:
    """The indices the isolated model must drop, from its definition (spec.IsolatedLoss):
    gaps of every_ms × (1 + jitter × (U − ½)) from the first data packet and from each drop,
    U from the model's loss stream (the first of the four the seed spawns)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(4)[0])
    us = iter(rng.random(4096).tolist())

    def gap() -> int:
        return round(every_ms * MS * (1 + jitter * (next(us) - 0.5)))

    due = None
    out = []
    for i, (size, t) in enumerate(packets):
        if size <= PURE_ACK_MAX_BYTES:
            continue
        if due is None:
            due = t + gap()
        elif t >= due:
            out.append(i)
            due = t + gap()
    return out


def _offer_all(m: DirectionModel, packets: list[tuple[int, int]]) -> list[int]:
    return [i for i, (size, t) in enumerate(packets) if isinstance(m.offer(size, t), Drop)]


def test_isolated_drops_exactly_the_packets_of_its_definition() -> None:
    loss = IsolatedLoss(model="isolated", every_ms=50, position_jitter=0.5)
    packets = _mixed(3000)
    for seed in (1, 2, 3):
        m = model(DirectionSpec(loss=loss), seed=seed)
        dropped = _offer_all(m, packets)
        assert dropped == _isolated_reference(packets, 50, 0.5, seed)
        assert 3000 / 62.5 - 2 <= len(dropped) <= 3000 / 37.5  # one per 50 ± 12.5 ms
        assert all(packets[i][0] > PURE_ACK_MAX_BYTES for i in dropped)  # data only
        times = [packets[i][1] for i in dropped]
        gaps = np.diff(times) / MS
        assert gaps.min() >= 50 * (1 - 0.5 / 2)  # never closer: recoveries do not overlap
        assert gaps.max() <= 50 * (1 + 0.5 / 2) + 1 + 1  # + the wait for a data packet
        assert times[0] >= 37.5 * MS  # the first drop comes a gap after the first data packet
    other = _offer_all(model(DirectionSpec(loss=loss), seed=9), packets)
    assert other != _offer_all(model(DirectionSpec(loss=loss), seed=1), packets)


def test_isolated_reasons_and_validation() -> None:
    m = model(DirectionSpec(loss=IsolatedLoss(model="isolated", every_ms=20)), seed=4)
    out = [m.offer(400, i * MS) for i in range(200)]
    assert {d.reason for d in out if isinstance(d, Drop)} == {"isolated"}
    for bad in ({"every_ms": 1}, {"every_ms": 50, "position_jitter": 1.5}, {}):
        with pytest.raises(ValidationError):
            IsolatedLoss.model_validate({"model": "isolated", **bad})


def test_isolated_without_jitter_is_periodic() -> None:
    m = model(DirectionSpec(loss=IsolatedLoss(model="isolated", every_ms=10, position_jitter=0)))
    dropped = _offer_all(m, [(400, i * MS) for i in range(100)])
    assert dropped == list(range(10, 100, 10))  # anchored on packet 0, then every 10 ms


# --- restart: the same decisions again (common random numbers across protocols) ------------
@pytest.mark.parametrize(
    "loss",
    [
        BernoulliLoss(model="bernoulli", rate=0.1),
        GilbertElliottLoss(model="gilbert_elliott", p=0.05, r=0.3, h=0.2),
        DropListLoss(model="drop_list", packets=[0, 3, 17]),
        IsolatedLoss(model="isolated", every_ms=15),
    ],
    ids=lambda loss: loss.model,
)
def test_restart_repeats_the_loss_decisions_by_packet_index(loss: object) -> None:
    spec = DirectionSpec(loss=loss, delay_ms=5, jitter_ms=2, duplicate=0.05)  # type: ignore[arg-type]
    m = model(spec, seed=21)
    first = [type(d).__name__ for d in (m.offer(s, t) for s, t in _mixed(400))]
    m.restart()
    assert m.index == 0
    later = 10_000 * MS  # another phase, later on the same clock
    again = [type(d).__name__ for d in (m.offer(s, t + later) for s, t in _mixed(400))]
    assert again == first
    assert "Drop" in first


def test_restart_keeps_queued_packets_in_place() -> None:
    spec = DirectionSpec(rate_mbit=1.0)  # 1500 B take 12 ms
    m = model(spec)
    a = m.offer(1500, 0)
    m.restart()
    b = m.offer(1500, 0)  # still behind the first packet: the serialiser carries on
    assert isinstance(a, Deliver) and isinstance(b, Deliver)
    assert b.release_ns[0] - a.release_ns[0] == 12 * MS


def test_build_models_with_the_same_seed_equal_restarted_ones() -> None:
    link = LinkSpec(downlink=DirectionSpec(loss=BernoulliLoss(model="bernoulli", rate=0.2)))
    used = build_models(link, 5)
    for s, t in _mixed(100):
        used["downlink"].offer(s, t)
    used["downlink"].restart()
    fresh = build_models(link, 5)
    a = [isinstance(used["downlink"].offer(s, t), Drop) for s, t in _mixed(300)]
    b = [isinstance(fresh["downlink"].offer(s, t), Drop) for s, t in _mixed(300)]
    assert a == b
