"""lab.workloads.metrics on hand-built samples with known answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lab.workloads import metrics

MS = 1_000_000  # ns per ms


def _events(rows: list[tuple[int, int, float, float]]) -> pd.DataFrame:
    """(stream, seq, sent_ms, received_ms) → a watch event frame in ns."""
    return pd.DataFrame(
        {
            "stream": [r[0] for r in rows],
            "seq": [r[1] for r in rows],
            "sent_ns": [int(r[2] * MS) for r in rows],
            "received_ns": [int(r[3] * MS) for r in rows],
        }
    )


def _grid(n_streams: int, n_events: int, latency_ms: float = 10.0) -> list:
    """Every stream sends an event every 20 ms, all with the same latency."""
    return [
        (s, k, 20.0 * k, 20.0 * k + latency_ms) for s in range(n_streams) for k in range(n_events)
    ]


# --- TTFB, goodput, utilisation, completion, cpu ------------------------------------------
def test_ttfb_in_ms_and_rtt_units() -> None:
    ms, rtt = metrics.ttfb(1_000 * MS, 1_150 * MS, base_rtt_ms=50.0)
    assert ms == pytest.approx(150.0)
    assert rtt == pytest.approx(3.0)


def test_ttfb_vectorised_and_zero_rtt_base() -> None:
    ms, rtt = metrics.ttfb(np.array([0, 0]), np.array([100 * MS, 50 * MS]), base_rtt_ms=50.0)
    np.testing.assert_allclose(ms, [100.0, 50.0])
    np.testing.assert_allclose(rtt, [2.0, 1.0])
    _, rtt0 = metrics.ttfb(0, 5 * MS, base_rtt_ms=0.0)
    assert np.isnan(rtt0)


def test_ttfb_rejects_first_byte_before_start() -> None:
    with pytest.raises(ValueError):
        metrics.ttfb(10, 5, base_rtt_ms=50.0)


def test_goodput_and_utilisation() -> None:
    # 10 MB in 4 s = 20 Mbit/s
    g = metrics.goodput_mbit(10_000_000, 1 * 10**9, 5 * 10**9)
    assert g == pytest.approx(20.0)
    assert metrics.utilisation(g, 25.0) == pytest.approx(0.8)
    assert np.isnan(metrics.utilisation(g, None))
    with pytest.raises(ValueError):
        metrics.goodput_mbit(1, 5, 5)


def test_completion_times_per_stream() -> None:
    frame = pd.DataFrame(
        {"stream": [0, 4], "start_ns": [0, 10 * MS], "done_ns": [250 * MS, 60 * MS]}
    )
    s = metrics.stream_completion_ms(frame)
    assert s.loc[0] == pytest.approx(250.0)
    assert s.loc[4] == pytest.approx(50.0)
    np.testing.assert_allclose(metrics.completion_ms([0, 0], [MS, 3 * MS]), [1.0, 3.0])


def test_cpu_bound_threshold() -> None:
    assert metrics.cpu_bound(9.5, 10.0) is True
    assert metrics.cpu_bound(9.0, 10.0) is False  # exactly 90 % is not above it
    assert metrics.cpu_bound([1.0, 2.0, 9.2], 10.0) is True
    assert metrics.cpu_bound([1.0, 2.0], 10.0, limit=0.05) is True
    with pytest.raises(ValueError):
        metrics.cpu_bound(1.0, 0.0)


# --- watch: stalls and excess; the schema-1 overlap spread (docs/metrics.md) ---------------
# The loss-anchored HOL metrics (hol_spread today) are tested in tests/test_hol.py.
def _legacy(rows: list, n: int) -> tuple[metrics.WatchMetrics, pd.DataFrame, float]:
    m, per_event = metrics.watch_metrics(_events(rows), n_streams=n, base_rtt_ms=50.0)
    return m, per_event, metrics.overlap_spread(per_event, n)


def test_one_loss_stalls_every_stream_overlap_spread_one() -> None:
    rows = _grid(4, 10)
    # event k=5 on every stream is held 100 ms (one TCP loss blocks the whole connection)
    rows = [(s, k, t, r + 100.0 if k == 5 else r) for s, k, t, r in rows]
    m, per_event, spread = _legacy(rows, 4)
    assert m.n_stalled == 4
    assert spread == pytest.approx(1.0)
    assert m.stalled_fraction == pytest.approx(4 / 40)
    assert per_event.loc[per_event.stalled, "excess_ms"].tolist() == pytest.approx([100.0] * 4)


def test_one_stream_stalls_alone_overlap_spread_quarter() -> None:
    rows = _grid(4, 10)
    rows = [(s, k, t, r + 100.0 if (s == 2 and k in (5, 6)) else r) for s, k, t, r in rows]
    m, _, spread = _legacy(rows, 4)
    assert m.n_stalled == 2
    assert spread == pytest.approx(0.25)


def test_independent_losses_on_different_streams_do_not_chain() -> None:
    rows = _grid(4, 40)
    # stream 0 stalls at k=5 (sent 100 ms, received 210), stream 3 at k=30 (sent 600 ms):
    # disjoint in time → each counts only its own stream
    rows = [(s, k, t, r + 100.0 if (s, k) in {(0, 5), (3, 30)} else r) for s, k, t, r in rows]
    m, _, spread = _legacy(rows, 4)
    assert m.n_stalled == 2
    assert spread == pytest.approx(0.25)


def test_overlap_chain_is_counted_per_event_not_per_episode() -> None:
    # A [0,100] on stream 0, B [90,200] on stream 1, C [190,300] on stream 2: A∩B, B∩C, not A∩C.
    # Merged episodes would say 3 streams for each; per event it is A:2, B:3, C:2.
    rows = [(0, 0, 0.0, 100.0), (1, 0, 90.0, 200.0), (2, 0, 190.0, 300.0)]
    count = metrics.overlapping_streams(
        [r[0] for r in rows], [r[2] * MS for r in rows], [r[3] * MS for r in rows]
    )
    assert count.tolist() == [2, 3, 2]
    _, _, spread = _legacy([*rows, (3, 0, 0.0, 1.0)], 4)
    assert spread == pytest.approx((7 / 3) / 4)


def test_distinct_streams_not_events() -> None:
    # stream 1 has two stalled events overlapping stream 0's: stream 1 counts once
    rows = [(0, 0, 0.0, 200.0), (1, 0, 10.0, 150.0), (1, 1, 30.0, 170.0)]
    count = metrics.overlapping_streams(
        [r[0] for r in rows], [r[2] * MS for r in rows], [r[3] * MS for r in rows]
    )
    assert count.tolist() == [2, 2, 2]


def test_touching_intervals_overlap() -> None:
    assert metrics.overlapping_streams([0, 1], [0, 100], [100, 200]).tolist() == [2, 2]
    assert metrics.overlapping_streams([0, 1], [0, 101], [100, 200]).tolist() == [1, 1]


def test_excess_percentiles_and_min_latency() -> None:
    # 1000 events on one stream with latency 5 + k/10 ms → excess 0.0 … 99.9 ms
    rows = [(0, k, 20.0 * k, 20.0 * k + 5.0 + k / 10) for k in range(1000)]
    m, per_event = metrics.watch_metrics(_events(rows), n_streams=1, base_rtt_ms=50.0)
    expected = np.percentile(np.arange(1000) / 10, [50, 95, 99, 99.9])
    assert m.min_latency_ms == pytest.approx(5.0)
    assert [m.excess_p50_ms, m.excess_p95_ms, m.excess_p99_ms, m.excess_p999_ms] == (
        pytest.approx(list(expected))
    )
    assert m.excess_p50_ms == pytest.approx(49.95)
    assert per_event["latency_ms"].iloc[10] == pytest.approx(6.0)
    # threshold ½·50 = 25 ms: excess > 25 → k ≥ 251
    assert m.n_stalled == 749
    assert m.threshold_ms == 25.0


def test_no_stall_gives_zero_overlap_spread() -> None:
    m, per_event = metrics.watch_metrics(_events(_grid(8, 20)), n_streams=8, base_rtt_ms=50.0)
    assert m.n_stalled == 0
    assert metrics.overlap_spread(per_event, 8) == 0.0
    assert m.stalled_fraction == 0.0
    assert not per_event["stalled"].any()
    assert m.excess_p999_ms == 0.0


def test_explicit_threshold() -> None:
    rows = _grid(2, 10)
    rows = [(s, k, t, r + 10.0 if (s, k) == (1, 3) else r) for s, k, t, r in rows]
    loose, _ = metrics.watch_metrics(_events(rows), n_streams=2, base_rtt_ms=50.0)
    tight, _ = metrics.watch_metrics(_events(rows), n_streams=2, base_rtt_ms=50.0, threshold_ms=5)
    assert loose.n_stalled == 0
    assert tight.n_stalled == 1
    assert tight.threshold_ms == 5.0


def test_watch_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="lack"):
        metrics.watch_metrics(pd.DataFrame({"stream": [0]}), n_streams=1, base_rtt_ms=50)
    with pytest.raises(ValueError, match="n_streams"):
        metrics.watch_metrics(_events(_grid(3, 2)), n_streams=2, base_rtt_ms=50)
    with pytest.raises(ValueError):
        metrics.watch_metrics(_events([(0, 0, 10.0, 5.0)]), n_streams=1, base_rtt_ms=50)


def test_per_event_frame_keeps_input_order_and_index() -> None:
    ev = _events([(1, 0, 50.0, 300.0), (0, 0, 0.0, 10.0), (0, 1, 20.0, 30.0)])
    ev.index = [7, 3, 5]
    _, per_event = metrics.watch_metrics(ev, n_streams=2, base_rtt_ms=50.0)
    assert per_event.index.tolist() == [7, 3, 5]
    assert per_event["stalled"].tolist() == [True, False, False]


def test_aggregate_rows_use_contract_names() -> None:
    m, _ = metrics.watch_metrics(_events(_grid(2, 3)), n_streams=2, base_rtt_ms=50.0)
    names = [name for name, _, _ in m.aggregate_rows()]
    assert names == [
        "stalled_fraction",
        "excess_p50_ms",
        "excess_p95_ms",
        "excess_p99_ms",
        "excess_p999_ms",
    ]


# --- rpc under load -----------------------------------------------------------------------
def test_rpc_delayed_fraction_and_p95() -> None:
    lat = [50.0] * 16 + [80.0, 120.0, 200.0, 74.0]  # excess 30, 70, 150 > 25; 24 is not
    r = metrics.rpc_metrics(lat, base_rtt_ms=50.0)
    assert r.delayed_fraction == pytest.approx(3 / 20)
    assert r.p95_ms == pytest.approx(np.percentile(lat, 95))
    assert r.threshold_ms == 25.0 and r.baseline_ms == 50.0


def test_rpc_explicit_baseline_and_threshold() -> None:
    r = metrics.rpc_metrics([60.0, 70.0, 90.0], base_rtt_ms=50.0, baseline_ms=60.0, threshold_ms=5)
    assert r.delayed_fraction == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        metrics.rpc_metrics([], base_rtt_ms=50.0)
    assert [n for n, _, _ in r.aggregate_rows()] == ["rpc_delayed_fraction", "rpc_p95_ms"]


def test_overlap_sweep_matches_brute_force() -> None:
    rng = np.random.default_rng(11)
    for _ in range(20):
        n = int(rng.integers(1, 60))
        stream = rng.integers(0, 6, n)
        start = rng.integers(0, 1000, n)
        end = start + rng.integers(0, 200, n)
        expected = [
            len({stream[j] for j in range(n) if start[j] <= end[i] and start[i] <= end[j]})
            for i in range(n)
        ]
        assert metrics.overlapping_streams(stream, start, end).tolist() == expected
