"""Where the time went (issue 11, item 4): per watch event the time queued at the sender and the
rest, joined with the server's departure log on sent_ns; the reader of that log, the rows that
reach samples.parquet, the report's CDFs and its line on which servers stamp."""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import trio
from fixtures.events import agent_event_rows
from fixtures.make_run import make_run_from_rows
from matplotlib.figure import Figure
from test_server import ServeProcess

from lab.errors import RunError
from lab.evidence import plots
from lab.evidence.report import write_report
from lab.http.departure_log import DEPARTURE_LOG_ENV, DEPARTURE_LOG_HEADER, DepartureLog
from lab.http.tls import ensure_certs
from lab.results.schema import AGGREGATE_METRICS, SAMPLE_METRICS, samples_frame
from lab.run.collect import cell_frame
from lab.run.departures import read_departure_log
from lab.scenario.load import parse_scenario
from lab.scenario.matrix import expand_cells
from lab.scenario.workloads import WatchParams
from lab.workloads import metrics, watch
from lab.workloads.aggregate import aggregate
from lab.workloads.base import WorkloadContext

MS = 1_000_000  # ns per ms
RTT_MS = 50.0
ONE_WAY_MS = 25.0
T0_NS = 10_000 * MS  # a CLOCK_MONOTONIC-like origin


# --- synthetic traces ---------------------------------------------------------------------
def _trace(
    streams: int = 4,
    per_stream: int = 25,
    queued: dict[tuple[int, int], float] | None = None,
    delayed: dict[tuple[int, int], float] | None = None,
) -> pd.DataFrame:
    """Events every 20 ms per stream (phases staggered by 5 ms) that leave the server as they
    are written and arrive one way (25 ms) later, except (stream, seq) in `queued`: held that
    many ms at the sender (behind the congestion window) before they leave, and in `delayed`:
    left on time, held that many ms more on the way (a loss and its repair).
    Columns stream, seq, sent_ns, left_ns, received_ns."""
    queued, delayed = queued or {}, delayed or {}
    rows = []
    for s in range(streams):
        for k in range(per_stream):
            sent = T0_NS + round((s * 5.0 + k * 20.0) * MS)
            left = sent + round(queued.get((s, k), 0.0) * MS)
            received = left + round((ONE_WAY_MS + delayed.get((s, k), 0.0)) * MS)
            rows.append((s, k, sent, left, received))
    return pd.DataFrame(rows, columns=["stream", "seq", "sent_ns", "left_ns", "received_ns"])


def _split(
    trace: pd.DataFrame, departures: pd.DataFrame | None = None
) -> tuple[metrics.TimeWent, pd.DataFrame]:
    events = trace[["stream", "seq", "sent_ns", "received_ns"]]
    _, per_event = metrics.watch_metrics(events, int(trace["stream"].nunique()), RTT_MS)
    deps = trace[["sent_ns", "left_ns"]] if departures is None else departures
    return metrics.where_time_went(per_event, deps)


def _known_answers_hold(join: Callable[[pd.DataFrame], pd.DataFrame]) -> bool:
    """The known answers, with the departures passed through `join` (identity: the real log):
    an event queued 30 ms behind a window → queue 30, rest = one way; an event delayed 62.5 ms
    by a loss → queue 0, rest 87.5; queue_share = 30 ÷ (30 + 62.5)."""
    trace = _trace(queued={(1, 10): 30.0}, delayed={(2, 15): 62.5})
    try:
        tw, per = _split(trace, join(trace[["sent_ns", "left_ns"]]))
        by_key = per.set_index(["stream", "seq"])
        ok = (
            by_key.loc[(1, 10), "queue_ms"] == pytest.approx(30.0)
            and by_key.loc[(1, 10), "rest_ms"] == pytest.approx(ONE_WAY_MS)
            and by_key.loc[(2, 15), "queue_ms"] == pytest.approx(0.0)
            and by_key.loc[(2, 15), "rest_ms"] == pytest.approx(ONE_WAY_MS + 62.5)
            and tw.n_matched == len(trace)
            and tw.queue_share == pytest.approx(30.0 / 92.5)
        )
    except (KeyError, ValueError):  # the event did not match, or the stamps were refused
        return False
    return bool(ok)


# --- the metric: known answers ------------------------------------------------------------
def test_an_event_queued_behind_the_window_is_queue_time() -> None:
    tw, per = _split(_trace(queued={(1, 10): 30.0}))
    event = per.set_index(["stream", "seq"]).loc[(1, 10)]
    assert event["queue_ms"] == pytest.approx(30.0)
    assert event["rest_ms"] == pytest.approx(ONE_WAY_MS)  # the rest is the one-way delay
    assert event["stalled"]  # 30 ms excess > ½ base RTT
    assert tw.n_stalled == 1 and tw.queue_share == pytest.approx(1.0)  # all of it queued
    others = per.drop(per.index[(per["stream"] == 1) & (per["seq"] == 10)])
    assert (others["queue_ms"] == 0).all() and (others["rest_ms"] == ONE_WAY_MS).all()
    assert tw.queue_p50_ms == 0.0 and tw.rest_p50_ms == pytest.approx(ONE_WAY_MS)


def test_a_loss_delayed_event_is_rest_not_queue() -> None:
    tw, per = _split(_trace(delayed={(2, 15): 62.5}))
    event = per.set_index(["stream", "seq"]).loc[(2, 15)]
    assert event["queue_ms"] == pytest.approx(0.0)
    assert event["rest_ms"] == pytest.approx(ONE_WAY_MS + 62.5)
    assert tw.n_stalled == 1 and tw.queue_share == pytest.approx(0.0)


def test_queue_share_of_a_mixed_trace_and_the_minimum_queue() -> None:
    assert _known_answers_hold(lambda d: d)
    # every event queued 2 ms: the run's minimum queue is not blamed on the stalls
    trace = _trace(queued={(s, k): 2.0 for s in range(4) for k in range(25)})
    trace.loc[(trace["stream"] == 0) & (trace["seq"] == 5), "left_ns"] += 40 * MS
    trace.loc[(trace["stream"] == 0) & (trace["seq"] == 5), "received_ns"] += 40 * MS
    tw, _ = _split(trace)
    assert tw.min_queue_ms == pytest.approx(2.0)
    assert tw.queue_share == pytest.approx(1.0)  # (42 − 2) ÷ 40 excess
    assert tw.queue_p99_ms > tw.queue_p50_ms == pytest.approx(2.0)


def test_a_wrong_join_fails_the_known_answers() -> None:
    """The join is on sent_ns, not on position: shuffled departures give the same answers, a
    shift of sent_ns by 1 ns, or a join by row order against shuffled rows, does not."""
    rng = np.random.default_rng(1)
    assert _known_answers_hold(lambda d: d.sample(frac=1.0, random_state=rng))
    assert not _known_answers_hold(lambda d: d.assign(sent_ns=d["sent_ns"] + 1))
    shuffled_left = rng.permutation(len(_trace()))
    assert not _known_answers_hold(
        lambda d: d.assign(left_ns=d["left_ns"].to_numpy()[shuffled_left].clip(d["sent_ns"]))
    )


def test_events_without_a_departure_are_left_out_and_counted() -> None:
    trace = _trace(queued={(1, 10): 30.0})
    keep = ~trace["seq"].isin([3, 4])  # 8 events (2 per stream) have no departure
    tw, per = _split(trace, trace.loc[keep, ["sent_ns", "left_ns"]])
    assert tw.n_matched == len(trace) - 8 and tw.n_unmatched == 8
    assert len(per) == tw.n_matched and not per["seq"].isin([3, 4]).any()
    rows = dict((m, v) for m, v, _ in tw.aggregate_rows())
    assert rows["departures_matched"] == len(trace) - 8 and rows["departures_unmatched"] == 8


def test_departures_of_other_events_and_repeated_keys() -> None:
    trace = _trace()
    foreign = pd.DataFrame({"sent_ns": [1, 2, 3], "left_ns": [5, 6, 7]})  # another workload
    first = trace.iloc[[0]]
    late = first.assign(left_ns=first["left_ns"] + 3 * MS)  # the same key again, later
    deps = pd.concat([late, trace, foreign])[["sent_ns", "left_ns"]]
    tw, per = _split(trace, deps)
    assert tw.n_matched == len(trace) and tw.n_unmatched == 0
    assert per["queue_ms"].iloc[0] == 0.0  # the earliest departure of a repeated key


def test_nan_rules() -> None:
    """No stalled event → no queue_share; no departure at all → counts only."""
    tw, _ = _split(_trace())
    assert tw.n_stalled == 0 and math.isnan(tw.queue_share)
    names = [m for m, _, _ in tw.aggregate_rows()]
    assert "queue_share" not in names and "queue_p50_ms" in names
    none, per = _split(_trace(), pd.DataFrame({"sent_ns": [], "left_ns": []}, dtype="int64"))
    assert none.n_matched == 0 and none.n_unmatched == 100 and per.empty
    assert all(math.isnan(x) for x in (none.queue_p50_ms, none.rest_p99_ms, none.queue_share))
    assert [m for m, _, _ in none.aggregate_rows()] == [
        "departures_matched",
        "departures_unmatched",
        "departures_inconsistent",
    ]


def test_stamps_that_do_not_belong_together_are_left_out_and_counted() -> None:
    """A departure before its event was sent or after it arrived is not that event's: left out,
    counted as inconsistent; the other events keep their split."""
    trace = _trace()
    good, _ = _split(trace, trace[["sent_ns", "left_ns"]])
    assert good.n_inconsistent == 0
    for bad in (trace["sent_ns"] - 1, trace["received_ns"] + 1):
        broken = trace.assign(left_ns=trace["left_ns"])
        broken.loc[broken.index[:3], "left_ns"] = bad.iloc[:3]
        tw, per = _split(trace, broken[["sent_ns", "left_ns"]])
        assert tw.n_inconsistent == 3 and tw.n_matched == len(trace) - 3
        assert tw.n_unmatched == 0 and len(per) == len(trace) - 3
    with pytest.raises(ValueError, match="left_ns"):
        _split(trace, trace[["sent_ns"]])


# --- rows for samples.parquet ---------------------------------------------------------------
def test_aggregate_adds_per_event_rows_and_aggregates_the_contract_takes() -> None:
    trace = _trace(queued={(1, 10): 30.0}, delayed={(2, 15): 62.5})
    params = WatchParams(kind="watch", streams=4, interval_ms=20)
    plain = aggregate("watch", params, agent_event_rows(trace), base_rtt_ms=RTT_MS, rate_mbit=None)
    assert not {"event_queue_ms", "departures_matched"} & {r["metric"] for r in plain}
    deps = trace.loc[trace["seq"] != 0, ["sent_ns", "left_ns"]]  # 4 events unstamped
    out = aggregate(
        "watch",
        params,
        agent_event_rows(trace),
        base_rtt_ms=RTT_MS,
        rate_mbit=None,
        departures=deps,
    )
    queue = [r for r in out if r["metric"] == "event_queue_ms"]
    rest = [r for r in out if r["metric"] == "event_rest_ms"]
    assert len(queue) == len(rest) == len(trace) - 4
    stamped = trace[trace["seq"] != 0]
    assert [r["stream"] for r in queue] == stamped["stream"].tolist()  # event order, stream set
    assert [r["value"] for r in queue] == pytest.approx(
        ((stamped["left_ns"] - stamped["sent_ns"]) / MS).tolist()
    )
    assert [r["value"] for r in rest] == pytest.approx(
        ((stamped["received_ns"] - stamped["left_ns"]) / MS).tolist()
    )
    agg = {r["metric"]: r["value"] for r in out if r["stream"] is None}
    assert agg["departures_matched"] == 96 and agg["departures_unmatched"] == 4
    assert agg["queue_share"] == pytest.approx(30.0 / 92.5)
    assert agg["queue_p50_ms"] == 0.0 and agg["rest_p50_ms"] == pytest.approx(ONE_WAY_MS)
    assert agg["rest_p99_ms"] > ONE_WAY_MS
    frame = samples_frame(
        [r | {"cell": "c000", "repetition": 0, "protocol": "h2", "workload": "watch"} for r in out]
    )
    new = {"event_queue_ms", "event_rest_ms"} | {m for m in agg if m.startswith("departures")}
    new |= {"queue_p50_ms", "queue_p99_ms", "rest_p50_ms", "rest_p99_ms", "queue_share"}
    assert new <= set(frame["metric"]) and new <= SAMPLE_METRICS | AGGREGATE_METRICS


def test_cell_frame_threads_departures_to_the_watch() -> None:
    scenario = parse_scenario(
        "name: t\nrepeat: 1\nlink: {delay_ms: 25}\n"
        "workloads:\n  - {kind: watch, streams: 4, interval_ms: 20, duration_s: 1}\n"
    )
    (cell,) = expand_cells(scenario)
    trace = _trace(queued={(1, 10): 30.0})
    cpu = {"server_s": 0.1, "client_s": 0.1, "emulator_s": 0.1}
    result = {
        "protocol": "h2",
        "workloads": [
            {"index": 0, "kind": "watch", "rows": agent_event_rows(trace), "error": None}
            | {"wall_s": 1.0, "cpu": cpu}
        ],
    }
    deps = trace[["sent_ns", "left_ns"]]
    frame, errors = cell_frame(cell, 0, "h2", "reference", result, emulator=True, departures=deps)
    assert errors == []
    df = samples_frame(frame)
    agg = df[df["stream"].isna()].set_index("metric")["value"]
    assert agg["departures_matched"] == len(trace) and agg["queue_share"] == pytest.approx(1.0)
    without, _ = cell_frame(cell, 0, "h2", "go", result, emulator=True)
    assert "event_queue_ms" not in set(without["metric"])


# --- the departure log on disk --------------------------------------------------------------
def test_reader_reads_what_the_server_log_writes(tmp_path: Path) -> None:
    path = tmp_path / "departures.csv"
    with open(path, "w", encoding="ascii") as out:
        log = DepartureLog(out)
        log.record("h2", 100, 150)
        log.record("h3", 200, 260)
        log.record("h2", 300, 310)
    got = read_departure_log(path)
    assert set(got) == {"h2", "h3"}
    assert got["h2"].to_dict("list") == {"sent_ns": [100, 300], "left_ns": [150, 310]}
    assert got["h3"].to_dict("list") == {"sent_ns": [200], "left_ns": [260]}
    assert all(str(t) == "int64" for f in got.values() for t in f.dtypes)


def test_reader_missing_header_only_and_a_line_being_written(tmp_path: Path) -> None:
    assert read_departure_log(tmp_path / "absent.csv") == {}
    header_only = tmp_path / "header.csv"
    header_only.write_text(DEPARTURE_LOG_HEADER)
    assert read_departure_log(header_only) == {}
    partial = tmp_path / "partial.csv"
    partial.write_text(DEPARTURE_LOG_HEADER + "h2,1,2\nh3,5,")  # the server is mid-line
    got = read_departure_log(partial)
    assert list(got) == ["h2"] and got["h2"]["left_ns"].tolist() == [2]


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("time_ns,direction\n1,downlink\n", "not a departure log"),
        (DEPARTURE_LOG_HEADER + "h2,1,2\nh2,x,3\n", "damaged"),
        (DEPARTURE_LOG_HEADER + "h2,1,2,4\n", "damaged"),
        (DEPARTURE_LOG_HEADER + "h2,1\n", "damaged"),
        (DEPARTURE_LOG_HEADER + "h1,1,2\n", "unknown protocol"),
        ("", "not a departure log"),
    ],
)
def test_a_damaged_log_is_one_line_naming_the_file(tmp_path: Path, text: str, why: str) -> None:
    path = tmp_path / "departures.csv"
    path.write_text(text)
    with pytest.raises(RunError, match=why) as info:
        read_departure_log(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message


def test_undecodable_bytes_are_damage_too(tmp_path: Path) -> None:
    path = tmp_path / "departures.csv"
    path.write_bytes(DEPARTURE_LOG_HEADER.encode() + b"h2,1,\xff\n")
    with pytest.raises(RunError, match="unreadable") as info:
        read_departure_log(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# --- the report ---------------------------------------------------------------------------
def _sample_rows(
    proto: str, metric: str, values: list[float], rep: int = 0, impl: str = "reference"
) -> list[dict[str, Any]]:
    base = dict(cell="c000", repetition=rep, protocol=proto, workload="watch")
    return [
        {**base, "metric": metric, "value": v, "unit": "ms", "stream": i % 4}
        | {"implementation": impl}
        for i, v in enumerate(values)
    ]


def _stamped_samples() -> tuple[pd.DataFrame, dict[tuple[str, str], np.ndarray]]:
    rng = np.random.default_rng(7)
    data = {
        ("h2", "event_queue_ms"): rng.exponential(4.0, 60),
        ("h3", "event_queue_ms"): rng.exponential(1.0, 60),
        ("h2", "event_rest_ms"): 25.0 + rng.exponential(10.0, 60),
        ("h3", "event_rest_ms"): 25.0 + rng.exponential(2.0, 60),
    }
    rows = []
    for (proto, metric), values in data.items():
        for rep in (0, 1):  # two repetitions, pooled
            half = values[rep * 30 : (rep + 1) * 30]
            rows += _sample_rows(proto, metric, half.tolist(), rep)
    for proto in ("h2", "h3"):
        rows += _sample_rows(proto, "event_excess_ms", [0.0, 1.0, 2.0])
    return samples_frame(rows), data


def _ax():
    return Figure(figsize=(6, 4)).add_subplot()


@pytest.mark.parametrize(
    ("draw", "metric"),
    [(plots.plot_queue_cdf, "event_queue_ms"), (plots.plot_rest_cdf, "event_rest_ms")],
)
def test_the_cdfs_are_the_ecdf_of_the_input(draw: Callable[..., Any], metric: str) -> None:
    df, data = _stamped_samples()
    ax = draw(df, _ax())
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert set(lines) == {"h2", "h3"}
    for proto in ("h2", "h3"):
        x, y = (np.asarray(a, float) for a in lines[proto].get_data())
        values = np.sort(data[(proto, metric)])
        assert x == pytest.approx(values)
        assert y == pytest.approx(np.arange(1, values.size + 1) / values.size)
        assert lines[proto].get_color() == plots.PROTOCOL_COLORS[proto]
        assert lines[proto].get_drawstyle() == "steps-post"
    assert "not stamped" not in ax.get_title()


def test_unstamped_servers_are_named_and_empty_axes_say_why() -> None:
    df, _ = _stamped_samples()
    caddy = samples_frame(
        [
            r | {"cell": "c001"}
            for p in ("h2", "h3")
            for r in _sample_rows(p, "event_excess_ms", [0.0], impl="caddy")
        ]
    )
    both = pd.concat([df, caddy], ignore_index=True)
    assert plots.departure_stamps(both) == (
        ["reference h2", "reference h3"],
        ["caddy h2", "caddy h3"],
    )
    ax = plots.plot_queue_cdf(both, _ax())
    assert "not stamped: caddy h2, caddy h3" in ax.get_title()
    empty = plots.plot_rest_cdf(caddy, _ax())
    (text,) = [t.get_text() for t in empty.texts]
    assert "no departure stamps" in text and "caddy h2, caddy h3" in text
    assert not empty.get_lines()
    names = [p.name for p in plots.plots_for(both, "watch")]
    assert names[-2:] == ["queue_cdf", "rest_cdf"]
    assert "queue_cdf" not in [p.name for p in plots.plots_for(caddy, "watch")]


def test_the_report_shows_both_cdfs_and_says_which_servers_stamp(tmp_path: Path) -> None:
    df, _ = _stamped_samples()
    caddy = [
        r | {"cell": "c001"}
        for p in ("h2", "h3")
        for r in _sample_rows(p, "event_excess_ms", [0.0, 2.0], impl="caddy")
    ]
    link = {"delay_ms": 25.0, "loss": {"model": "none"}}
    cells = [
        {"cell": c, "axes": {}, "link": {"uplink": link, "downlink": link}}
        for c in ("c000", "c001")
    ]
    rows = df.to_dict("records") + caddy
    run = make_run_from_rows(tmp_path / "runs", rows, cells=cells, repetitions=2)
    files = write_report(run, tmp_path / "out")
    md = files.markdown.read_text()
    watch = md.split("## Watch streams (head-of-line blocking)", 1)[1]
    refs = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", watch)
    assert {"report-queue_cdf.png", "report-rest_cdf.png"} <= set(refs)
    line = next(ln for ln in watch.splitlines() if ln.startswith("Where the time went"))
    assert "stamped for reference h2, reference h3" in line
    assert "none for caddy h2, caddy h3" in line
    assert "Where the time went" in files.html.read_text()


def test_the_worked_example_of_the_docs() -> None:
    """docs/metrics.md, "Where the time went": every event 0.5 ms at the sender, one held 30 ms
    more behind the window, one delayed 62.5 ms by a loss."""
    base = {(s, k): 0.5 for s in range(4) for k in range(25)}
    trace = _trace(queued=base | {(1, 10): 30.5}, delayed={(2, 15): 62.5})
    tw, per = _split(trace)
    event = per.set_index(["stream", "seq"])
    assert (event.loc[(1, 10), "sent_ns"] - T0_NS) / MS == 205.0
    assert (event.loc[(1, 10), "received_ns"] - T0_NS) / MS == 260.5
    assert (event.loc[(2, 15), "received_ns"] - T0_NS) / MS == 398.0
    assert event.loc[(1, 10), "excess_ms"] == pytest.approx(30.0)
    assert event.loc[(2, 15), "excess_ms"] == pytest.approx(62.5)
    assert tw.queue_share == pytest.approx(30 / 92.5) and round(tw.queue_share, 2) == 0.32
    assert (tw.queue_p50_ms, tw.queue_p99_ms) == pytest.approx((0.5, 0.8))
    assert (tw.rest_p50_ms, tw.rest_p99_ms) == pytest.approx((25.0, 25.625))
    assert tw.n_matched == 100
    deps = trace.loc[trace["seq"] != 24, ["sent_ns", "left_ns"]]  # 4 on-time events unstamped
    fewer, _ = _split(trace, deps)
    assert fewer.n_unmatched == 4 and fewer.queue_share == pytest.approx(tw.queue_share)


# --- the real reference server ----------------------------------------------------------------
def test_the_reference_servers_departures_split_every_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`lab serve` with a departure log, a real watch over h2 and then h3 on loopback: every h3
    event joins its departure, and queue + rest is its latency to the nanosecond; h2 writes no
    departures there (its come from the emulator's TCP log, tests/test_departures_h2.py)."""
    ensure_certs(certs := tmp_path / "certs")
    monkeypatch.setenv(DEPARTURE_LOG_ENV, str(log := tmp_path / "departures.csv"))
    params = WatchParams(kind="watch", streams=4, interval_ms=20, duration_s=1)
    server = ServeProcess(certs)
    rows: dict[str, list[dict[str, Any]]] = {}
    try:
        for proto in ("h2", "h3"):
            ctx = WorkloadContext(
                protocol=proto, host="127.0.0.1", port=server.port, base_rtt_ms=1.0,
                ca_file=certs / "ca.pem",
            )  # fmt: skip
            rows[proto] = trio.run(watch.run, params, ctx)
        n = sum(r["metric"] == "event_latency_ms" for r in rows["h3"])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            got = read_departure_log(log)
            if "h3" in got and len(got["h3"]) >= n:
                break
            time.sleep(0.1)
    finally:
        server.stop()
    deps = read_departure_log(log)
    assert "h2" not in deps
    for proto in ("h3",):
        events = pd.DataFrame(
            [{k: r[k] for k in ("stream", "seq", "sent_ns", "received_ns")} for r in rows[proto]]
        )
        assert len(events) == 4 * 50
        _, per_event = metrics.watch_metrics(events, 4, 1.0)
        tw, split = metrics.where_time_went(per_event, deps[proto])
        assert tw.n_matched == len(events) and tw.n_unmatched == 0, proto
        total_ns = round((split["queue_ms"] + split["rest_ms"]) * 1e6)
        assert (total_ns - (split["received_ns"] - split["sent_ns"])).abs().max() <= 1, proto
        assert (split["queue_ms"] >= 0).all() and (split["rest_ms"] > 0).all()
        print(
            f"{proto} loopback: queue p50 {tw.queue_p50_ms:.3f} p99 {tw.queue_p99_ms:.3f} ms, "
            f"rest p50 {tw.rest_p50_ms:.3f} p99 {tw.rest_p99_ms:.3f} ms"
        )
