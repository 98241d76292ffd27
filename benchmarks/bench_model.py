"""Link-model decision cost (target ≤ 5 µs per packet).

Run: pytest benchmarks/bench_model.py --benchmark-enable
Each round offers 10,000 packets (1500 B, one every 0.5 ms); the figure per decision is the
reported mean ÷ 10,000 (also printed as `us_per_decision` in extra_info).
"""

from __future__ import annotations

import pytest

from lab.link.model import DirectionModel
from lab.link.spec import BernoulliLoss, DirectionSpec, GilbertElliottLoss, QueueSpec

N = 10_000

SPECS = {
    "plain_delay": DirectionSpec(delay_ms=25),
    "lossy": DirectionSpec(
        delay_ms=25,
        jitter_ms=2,
        jitter_distribution="normal",
        loss=BernoulliLoss(model="bernoulli", rate=0.01),
        rate_mbit=20,
        queue=QueueSpec(packets=100),
    ),
    "bursty_dup": DirectionSpec(
        delay_ms=25,
        jitter_ms=2,
        loss=GilbertElliottLoss(model="gilbert_elliott", p=0.01, r=0.3, h=0.2, k=0.999),
        rate_mbit=20,
        duplicate=0.01,
    ),
}


@pytest.mark.parametrize("name", list(SPECS))
def test_decision_cost(benchmark, name: str) -> None:
    spec = SPECS[name]
    state = {"m": DirectionModel(spec, queue_packets=100, queue_bytes=None, seed=1), "t": 0}

    def offer_batch() -> None:
        m = state["m"]
        t = state["t"]
        offer = m.offer
        for _ in range(N):
            t += 500_000
            offer(1500, t)
        state["t"] = t

    benchmark(offer_batch)
    if benchmark.stats is not None:
        us = benchmark.stats.stats.mean / N * 1e6
        benchmark.extra_info["us_per_decision"] = round(us, 3)
        print(f"\n{name}: {us:.3f} µs per decision")
        assert us <= 5.0
