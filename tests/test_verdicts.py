"""Verdicts on hand-built samples with known answers: better, worse, no difference, too few
repetitions, the minimum effect, flag metrics (cpu_bound, congestion_limited), metric direction,
the 0-RTT baseline and unpaired repetitions."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from lab.evidence.effect import ABSOLUTE_FLOORS, MIN_RELATIVE_EFFECT, is_meaningful
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
    assert v.flags == ("cpu_bound (h3 in 1 of 3 pairs): measures Python, not the protocol",)


def test_any_flag_metric_is_a_flag_and_never_compared() -> None:
    """congestion_limited (or any metric in unit bool) flags its repetitions like cpu_bound."""
    rows = _rows(
        "hol_spread", [0.9, 0.95, 0.92], [0.2, 0.25, 0.22], workload="watch", unit="fraction"
    )
    rows += _rows("congestion_limited", [1, 0, 0], [1, 1, 0], workload="watch", unit="bool")
    rows += _rows("my_new_flag", [0, 0, 0], [0, 0, 1], workload="watch", unit="bool")
    v = _one(rows)  # the flags themselves get no verdict
    assert v.metric == "hol_spread" and v.outcome == "better"
    assert v.flags == (
        "congestion_limited (h2 and h3 in 2 of 3 pairs): measures congestion control, not "
        "head-of-line blocking",
        "my_new_flag (h3 in 1 of 3 pairs)",
    )


def test_unpaired_repetitions_are_compared_as_independent_samples() -> None:
    rows = [r for r in _rows("completion_ms", [100, 101, 102], [50, 51, 52])]
    for r in rows:
        if r["protocol"] == "h3":
            r["repetition"] += 3  # h3 ran in repetitions 3-5, h2 in 0-2: nothing pairs
    v = _one(rows)
    assert not v.paired and v.n_pairs == 3
    assert v.ratio.point == pytest.approx(51 / 101) and v.ratio.high < 1.0
    assert v.outcome == "better"
    assert "unpaired: no repetition has data from both protocols" in v.flags
    assert v.cells == ("c000",)


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


def test_h2_mode_compares_every_h3_mode_with_that_h2_mode() -> None:
    rows = []
    for rep in range(3):
        for proto, mode, rtts in (
            ("h2", "cold", 3.1),
            ("h2", "resumed", 2.9),
            ("h3", "zero_rtt", 1.1),
        ):
            rows.append(
                dict(cell="c0", repetition=rep, protocol=proto, workload="handshake",
                     metric="ttfb_rtt", value=rtts + rep / 100, unit="rtt", mode=mode,
                     early_data=mode == "zero_rtt")
            )  # fmt: skip
    frame = samples_frame(rows)
    (cold,) = verdicts(frame, metrics=["ttfb_rtt"], h2_mode="cold")
    (default,) = verdicts(frame, metrics=["ttfb_rtt"])
    assert (cold.mode, cold.h2_mode, default.h2_mode) == ("zero_rtt", "cold", "resumed")
    assert cold.h2_median == pytest.approx(3.11) and default.h2_median == pytest.approx(2.91)
    assert cold.unit == "rtt" and cold.outcome == "better"


def test_hol_spread_without_stalls_is_undefined_not_zero() -> None:
    rows = _rows("hol_spread", [0.0, 0.0, 0.0], [0.0, 0.0, 0.0], workload="watch", unit="fraction")
    rows += _rows("stalled_fraction", [0, 0, 0], [0, 0, 0], workload="watch", unit="fraction")
    vs = {v.metric: v for v in verdicts(samples_frame(rows))}
    assert "hol_spread" not in vs  # no stalled event anywhere: no spread to compare
    assert vs["stalled_fraction"].outcome == "undecided"  # 0 / 0
    assert any("h2 median is 0" in f for f in vs["stalled_fraction"].flags)


def test_loss_anchored_hol_spread_keeps_zero_and_skips_its_interval_bounds() -> None:
    """Results schema 2: hol_spread (with hol_losses beside it) exists only where a loss was
    counted, so a 0 (no exposed stream stalled) is a value, even without any stalled event."""
    rows = _rows(
        "hol_spread", [0.9, 0.95, 0.92], [0.0, 0.0, 0.1], workload="watch", unit="fraction"
    )
    rows += _rows("hol_spread_low", [0.8] * 3, [0.0] * 3, workload="watch", unit="fraction")
    rows += _rows("hol_spread_high", [1.0] * 3, [0.2] * 3, workload="watch", unit="fraction")
    rows += _rows(
        "stalled_fraction", [0.2] * 3, [0.0, 0.0, 0.01], workload="watch", unit="fraction"
    )
    old = {v.metric: v for v in verdicts(samples_frame(rows))}
    assert old["hol_spread"].n_pairs == 1  # schema 1: repetitions without stalls dropped
    rows += _rows("hol_losses", [5, 6, 5], [5, 6, 5], workload="watch", unit="count")
    new = {v.metric: v for v in verdicts(samples_frame(rows))}
    assert new["hol_spread"].n_pairs == 3 and new["hol_spread"].h3_median == 0.0
    assert new["hol_spread"].outcome == "better"
    assert "hol_spread_low" not in new and "hol_spread_high" not in new  # bounds, not metrics


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
    ("interval", "metric", "n", "h2", "h3", "unit", "expected"),
    [
        (Interval(0.5, 0.4, 0.6), "hol_spread", 5, 0.9, 0.45, "fraction", "better"),
        (Interval(0.5, 0.4, 0.6), "goodput_mbit", 5, 10.0, 5.0, "Mbit/s", "worse"),
        (Interval(1.0, 0.9, 1.1), "ttfb_ms", 5, 100.0, 100.0, "ms", "no significant difference"),
        (Interval(0.5, 0.4, 0.6), "ttfb_ms", 2, 100.0, 50.0, "ms", "undecided"),
        (Interval(float("nan"), float("nan"), float("nan")), "ttfb_ms", 5, 1.0, 1.0, "ms",
         "undecided"),
        # the interval excludes 1, but the effect is below 10% or below the unit's floor
        (Interval(0.95, 0.94, 0.96), "excess_p99_ms", 5, 1.0, 0.95, "ms",
         "no meaningful difference"),
        (Interval(0.95, 0.94, 0.96), "completion_ms", 5, 400.0, 380.0, "ms",
         "no meaningful difference"),
        (Interval(0.5, 0.4, 0.6), "stalled_fraction", 5, 0.08, 0.04, "fraction",
         "no meaningful difference"),
        (Interval(0.96, 0.95, 0.97), "ttfb_rtt", 5, 3.0, 2.88, "rtt", "no meaningful difference"),
        (Interval(1.5, 1.4, 1.6), "goodput_mbit", 5, 0.6, 0.9, "Mbit/s",
         "no meaningful difference"),
        # 20% and 5 ms: meaningful both ways
        (Interval(0.8, 0.75, 0.85), "excess_p99_ms", 5, 25.0, 20.0, "ms", "better"),
        (Interval(1.2, 1.15, 1.25), "excess_p99_ms", 5, 25.0, 30.0, "ms", "worse"),
    ],
)  # fmt: skip
def test_decide(
    interval: Interval, metric: str, n: int, h2: float, h3: float, unit: str, expected: str
) -> None:
    assert decide(interval, metric, n, h2_median=h2, h3_median=h3, unit=unit) == expected


def test_minimum_effect_needs_ten_percent_and_the_unit_floor() -> None:
    assert MIN_RELATIVE_EFFECT == 0.10
    assert dict(ABSOLUTE_FLOORS) == {"ms": 1.0, "fraction": 0.05, "rtt": 0.1, "Mbit/s": 0.5}
    assert is_meaningful(25.0, 20.0, "ms") and is_meaningful(25.0, 30.0, "ms")
    assert not is_meaningful(1.0, 0.95, "ms")  # 5%, 0.05 ms
    assert not is_meaningful(2.5, 2.0, "ms")  # 20% but 0.5 ms
    assert not is_meaningful(250.0, 245.0, "ms")  # 5 ms but 2%
    assert is_meaningful(1.0, 0.9, "fraction") and not is_meaningful(0.3, 0.26, "fraction")
    assert is_meaningful(10.0, 9.0, "s")  # no floor: the relative effect alone
    assert not is_meaningful(0.0, 5.0, "ms") and not is_meaningful(float("nan"), 1.0, "ms")


def test_a_twentieth_of_a_millisecond_is_no_meaningful_difference_but_5_ms_is() -> None:
    """The report used to say "h3 better" for 0.05 ms of excess p99 with one stream."""
    h2 = [1.00, 1.01, 1.02, 1.00, 1.01]
    h3 = [v - 0.05 for v in h2]
    v = _one(_rows("excess_p99_ms", h2, h3, workload="watch", extra={"watch.streams": 1}))
    assert v.ratio.excludes(1.0) and v.ratio.high < 1.0  # significant …
    assert v.outcome == "no meaningful difference"  # … but far below 1 ms
    assert not v.decided and v.unit == "ms"
    # 20% and 5 ms: better or worse
    h2 = [25.0, 25.2, 24.8, 25.1, 24.9]
    faster = _one(_rows("excess_p99_ms", h2, [v - 5 for v in h2], workload="watch"))
    slower = _one(_rows("excess_p99_ms", h2, [v + 5 for v in h2], workload="watch"))
    assert (faster.outcome, slower.outcome) == ("better", "worse")
    assert faster.h2_median - faster.h3_median == pytest.approx(5.0)


def test_metric_lists_come_from_the_results_schema() -> None:
    assert EXCESS_METRICS == ("excess_p50_ms", "excess_p95_ms", "excess_p99_ms", "excess_p999_ms")
    assert set(HEADLINE_METRICS) <= SAMPLE_METRICS | AGGREGATE_METRICS
    assert len(set(HEADLINE_METRICS)) == len(HEADLINE_METRICS)
    cpu = {"cpu_bound", "cpu_server_s", "cpu_client_s", "cpu_emulator_s", "cpu_host_s"}
    assert cpu | {"cpu_other_s", "workload_wall_s"} == NOT_COMPARED


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
