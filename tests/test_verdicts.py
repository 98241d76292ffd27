"""Verdicts on hand-built samples with known answers: better, worse, no difference, too few
repetitions, cpu_bound flags, metric direction and the 0-RTT baseline."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lab.evidence.stats import Interval
from lab.evidence.verdicts import (
    EXCESS_METRICS,
    HEADLINE_METRICS,
    NOT_COMPARED,
    decide,
    direction,
    metrics_for,
    verdict_frame,
    verdicts,
)
from lab.results.schema import AGGREGATE_METRICS, SAMPLE_METRICS, samples_frame


def _rows(
    metric: str,
    h2: list[float],
    h3: list[float],
    *,
    workload: str = "bulk",
    unit: str = "ms",
    extra: dict[str, Any] | None = None,
    cell: str = "c000",
) -> list[dict[str, Any]]:
    """One aggregate row per (protocol, repetition)."""
    out = []
    for proto, values in (("h2", h2), ("h3", h3)):
        for rep, v in enumerate(values):
            out.append(
                dict(
                    cell=cell,
                    repetition=rep,
                    protocol=proto,
                    workload=workload,
                    metric=metric,
                    value=v,
                    unit=unit,
                    **(extra or {}),
                )
            )
    return out


def _one(rows: list[dict[str, Any]], **kw: Any):
    vs = verdicts(samples_frame(rows), **kw)
    assert len(vs) == 1, vs
    return vs[0]


def test_lower_latency_is_better() -> None:
    v = _one(_rows("completion_ms", [100, 104, 98, 101, 99], [70, 72, 69, 71, 70]))
    assert v.outcome == "better"
    assert v.ratio.point == pytest.approx(70 / 100)
    assert v.ratio.high < 1.0
    assert v.n_pairs == 5 and v.flags == ()


def test_higher_goodput_is_better_and_lower_is_worse() -> None:
    more = _one(_rows("goodput_mbit", [10, 10.2, 9.9], [12, 12.1, 11.8], unit="Mbit/s"))
    less = _one(_rows("goodput_mbit", [10, 10.2, 9.9], [8, 8.1, 7.9], unit="Mbit/s"))
    assert (more.outcome, less.outcome) == ("better", "worse")
    assert direction("goodput_mbit") == "higher" and direction("hol_spread") == "lower"


def test_overlapping_noise_is_no_significant_difference() -> None:
    rng = np.random.default_rng(3)
    h2 = list(100 + rng.normal(0, 15, 6))
    h3 = list(100 + rng.normal(0, 15, 6))
    v = _one(_rows("completion_ms", h2, h3))
    assert v.outcome == "no significant difference"
    assert v.ratio.low < 1.0 < v.ratio.high


def test_too_few_repetitions_is_undecided_and_flagged() -> None:
    v = _one(_rows("completion_ms", [100, 101], [50, 51]))
    assert v.outcome == "undecided"
    assert any("too few repetitions (2 < 3)" in f for f in v.flags)
    assert not v.decided


def test_cpu_bound_cells_are_flagged_but_still_decided() -> None:
    rows = _rows("completion_ms", [100, 101, 102], [50, 51, 52])
    rows += _rows("cpu_bound", [0, 0, 0], [0, 1, 0], unit="bool")
    v = _one(rows)
    assert v.outcome == "better"
    assert any(f.startswith("cpu_bound") for f in v.flags)


def test_per_sample_metrics_use_the_repetition_median() -> None:
    rows = []
    for rep in range(4):
        for proto, base in (("h2", 100.0), ("h3", 50.0)):
            for i, jitter in enumerate((0.0, 1.0, 500.0)):  # an outlier per repetition
                rows.append(
                    dict(
                        cell="c0",
                        repetition=rep,
                        protocol=proto,
                        workload="rpc_under_load",
                        stream=i,
                        metric="rpc_latency_ms",
                        value=base + jitter,
                        unit="ms",
                    )
                )
    v = _one(rows)
    assert v.h2_median == pytest.approx(101.0) and v.h3_median == pytest.approx(51.0)
    assert v.outcome == "better"


def test_zero_rtt_is_compared_with_resumed_h2_and_needs_early_data() -> None:
    rows = []
    for rep in range(3):
        for proto, mode, ttfb, early in (
            ("h2", "resumed", 150.0, False),
            ("h3", "zero_rtt", 55.0, True),
            ("h3", "zero_rtt", 105.0, False),  # rejected early data: a 1-RTT handshake
        ):
            rows.append(
                dict(
                    cell="c0",
                    repetition=rep,
                    protocol=proto,
                    workload="handshake",
                    metric="ttfb_ms",
                    value=ttfb + rep,
                    unit="ms",
                    mode=mode,
                    early_data=early,
                )
            )
    vs = {v.mode: v for v in verdicts(samples_frame(rows))}
    assert set(vs) == {"zero_rtt", "zero_rtt→1-RTT"}
    assert vs["zero_rtt"].h2_mode == "resumed"
    assert vs["zero_rtt"].h3_median == pytest.approx(56.0)
    assert vs["zero_rtt→1-RTT"].h3_median == pytest.approx(106.0)


def test_hol_spread_without_stalls_is_undefined_not_zero() -> None:
    rows = _rows("hol_spread", [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], workload="watch", unit="fraction")
    rows += _rows("stalled_fraction", [0, 0, 0], [0, 0, 0], workload="watch", unit="fraction")
    vs = {v.metric: v for v in verdicts(samples_frame(rows))}
    assert "hol_spread" not in vs  # no stalled event anywhere: no spread to compare
    assert vs["stalled_fraction"].outcome == "undecided"  # 0 / 0
    assert any("h2 median is 0" in f for f in vs["stalled_fraction"].flags)


def test_conditions_split_by_relevant_axes_only() -> None:
    rows = []
    for i, (loss, streams) in enumerate([(0.0, 1), (0.0, 16), (0.01, 1), (0.01, 16)]):
        extra = {"link.loss.rate": loss, "watch.streams": streams}
        slow = 1.0 + 10 * loss
        rows += _rows("completion_ms", [100 * slow] * 3, [80 * slow] * 3, extra=extra, cell=f"c{i}")
    vs = verdicts(samples_frame(rows))
    # bulk does not depend on watch.streams: cells pooled per loss rate (2 cells x 3 reps)
    assert [v.condition for v in vs] == [{"link.loss.rate": 0.0}, {"link.loss.rate": 0.01}]
    assert all(v.n_pairs == 6 for v in vs)
    frame = verdict_frame(vs)
    assert list(frame["outcome"]) == ["better", "better"]
    assert list(frame["condition"]) == ["link.loss.rate=0.0", "link.loss.rate=0.01"]
    assert list(frame["ratio"]) == pytest.approx([0.8, 0.8])  # 80·slow / 100·slow
    assert list(frame["h2_median"]) == pytest.approx([100.0, 110.0])
    assert set(frame["better_when"]) == {"lower"}


@pytest.mark.parametrize(
    ("interval", "metric", "n", "expected"),
    [
        (Interval(0.5, 0.4, 0.6), "hol_spread", 5, "better"),
        (Interval(0.5, 0.4, 0.6), "goodput_mbit", 5, "worse"),
        (Interval(1.0, 0.9, 1.1), "ttfb_ms", 5, "no significant difference"),
        (Interval(0.5, 0.4, 0.6), "ttfb_ms", 2, "undecided"),
        (Interval(float("nan"), float("nan"), float("nan")), "ttfb_ms", 5, "undecided"),
    ],
)
def test_decide(interval: Interval, metric: str, n: int, expected: str) -> None:
    assert decide(interval, metric, n) == expected


def test_metric_lists_come_from_the_results_schema() -> None:
    assert EXCESS_METRICS == ("excess_p50_ms", "excess_p95_ms", "excess_p99_ms", "excess_p999_ms")
    assert set(HEADLINE_METRICS) <= SAMPLE_METRICS | AGGREGATE_METRICS
    assert len(set(HEADLINE_METRICS)) == len(HEADLINE_METRICS)
    assert {"cpu_bound", "cpu_server_s", "cpu_client_s", "cpu_emulator_s"} == NOT_COMPARED


def test_metrics_for_orders_headlines_first_and_skips_cpu_and_redundant_ones() -> None:
    rows = []
    for metric in ("rpc_latency_ms", "excess_p999_ms", "excess_p50_ms", "cpu_server_s",
                   "ttfb_rtt", "event_excess_ms", "ttfb_ms", "my_new_metric"):  # fmt: skip
        rows += _rows(metric, [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], workload="watch")
    frame = samples_frame(rows)
    assert metrics_for(frame, "watch") == [
        "ttfb_ms",
        "excess_p50_ms",
        "excess_p999_ms",
        "rpc_latency_ms",
        "my_new_metric",  # unknown to the schema: shown last
    ]  # event_excess_ms only when no excess percentile is there
    only_events = samples_frame(_rows("event_excess_ms", [1.0], [2.0], workload="watch"))
    assert metrics_for(only_events, "watch") == ["event_excess_ms"]
