"""lab.results: the on-disk format, round trips, interruption and resume, summary rules."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from lab.errors import ResultsError
from lab.results import store as results
from lab.results.store import RunWriter, load, open_for_resume, samples_frame, summarise

CELLS = [
    {"cell": "c000", "axes": {"link.loss.rate": 0.0}, "link": {}},
    {"cell": "c001", "axes": {"link.loss.rate": 0.01}, "link": {}},
]
ENV = {"kernel": "test", "iproute2": "6.1.0", "python": "3.11", "libraries": {}, "host_cpus": 2}


def _writer(path: Path) -> RunWriter:
    return RunWriter.create(
        path,
        scenario={"name": "t", "seed": 1},
        seed=1,
        cells=CELLS,
        environment=ENV,
        git="abc",
        impairment={"backend": "emulator", "applied": {}},
    )


def _rows(cell: str, rep: int, loss: float, scale: float = 1.0) -> list[dict]:
    base = {"cell": cell, "repetition": rep, "link.loss.rate": loss}
    rows = []
    for protocol in ("h2", "h3"):
        for s, v in enumerate((10.0, 20.0, 30.0)):
            rows.append(
                base
                | {"protocol": protocol, "workload": "watch", "stream": s}
                | {"metric": "event_excess_ms", "value": v * scale, "unit": "ms"}
            )
        rows.append(
            base
            | {"protocol": protocol, "workload": "watch", "metric": "hol_spread"}
            | {"value": 0.5 * scale, "unit": "fraction"}
        )
    return rows


def _complete(w: RunWriter, cell: str, rep: int, loss: float, scale: float = 1.0) -> None:
    w.append_samples(samples_frame(_rows(cell, rep, loss, scale)))
    w.mark_completed(cell, rep)


def test_round_trip(tmp_path: Path) -> None:
    w = _writer(tmp_path / "run1")
    for rep in range(2):
        _complete(w, "c000", rep, 0.0)
        _complete(w, "c001", rep, 0.01, scale=2.0)
    w.record_error("c001", 1, "h3", "bulk", "Timeout")
    w.finish()

    r = load(tmp_path / "run1")
    assert r.meta["schema_version"] == results.SCHEMA_VERSION == 1
    assert r.meta["status"] == "complete"
    assert r.meta["run_id"] == "run1"
    assert r.meta["environment"] == ENV
    assert r.completed == {("c000", 0), ("c000", 1), ("c001", 0), ("c001", 1)}
    assert len(r.samples) == 4 * 8
    assert (tmp_path / "run1" / "samples.parquet").exists()
    assert not (tmp_path / "run1" / "parts").exists()
    assert r.errors.to_dict("records") == [
        {"cell": "c001", "repetition": 1, "protocol": "h3", "workload": "bulk", "error": "Timeout"}
    ]
    assert list(r.samples.columns[:6]) == list(results.SAMPLE_KEYS)
    assert r.samples["link.loss.rate"].tolist().count(0.01) == 16
    row = r.summary.query("cell == 'c001' and protocol == 'h2'").iloc[0]
    assert row["hol_spread"] == pytest.approx(1.0)
    assert row["event_excess_ms"] == pytest.approx(40.0)  # median of (20, 40, 60) × 1
    assert row["n_repetitions"] == 2
    on_disk = json.loads((tmp_path / "run1" / "run.json").read_text())
    assert on_disk["completed"] == [["c000", 0], ["c000", 1], ["c001", 0], ["c001", 1]]


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    _writer(tmp_path / "run1")
    (tmp_path / "run1" / "marker").write_text("keep")
    with pytest.raises(ResultsError, match="never overwritten"):
        _writer(tmp_path / "run1")
    assert (tmp_path / "run1" / "marker").read_text() == "keep"


def test_interrupted_run_loads_from_parts(tmp_path: Path) -> None:
    w = _writer(tmp_path / "run")
    _complete(w, "c000", 0, 0.0)
    # c001/0 half written (h2 and h3 appended) but never marked complete: killed here
    w.append_samples(samples_frame(_rows("c001", 0, 0.01)))
    del w
    assert not (tmp_path / "run" / "samples.parquet").exists()

    r = load(tmp_path / "run")
    assert r.meta["status"] == "running"
    assert set(r.samples["cell"]) == {"c000"}
    assert len(r.samples) == 8
    assert set(r.summary["cell"]) == {"c000"}
    partial = load(tmp_path / "run", include_partial=True)
    assert set(partial.samples["cell"]) == {"c000", "c001"}


def test_resume_skips_completed_and_redoes_partial(tmp_path: Path) -> None:
    w = _writer(tmp_path / "run")
    _complete(w, "c000", 0, 0.0)
    w.append_samples(samples_frame(_rows("c001", 0, 0.01)))  # interrupted mid-pair
    w.record_error("c001", 0, "h2", "watch", "boom")
    w.finish("interrupted")
    assert load(tmp_path / "run").meta["status"] == "interrupted"

    w2 = open_for_resume(tmp_path / "run")
    assert w2.completed == {("c000", 0)}
    assert w2.is_completed("c000", 0) and not w2.is_completed("c001", 0)
    assert w2.errors == []  # the error of a pair that will be redone is dropped
    _complete(w2, "c001", 0, 0.01)
    w2.finish()

    r = load(tmp_path / "run")
    assert r.meta["status"] == "complete"
    assert len(r.samples) == 16  # no duplicate samples from the half-written attempt
    assert r.samples.groupby("cell").size().to_dict() == {"c000": 8, "c001": 8}


def test_resume_of_complete_run_keeps_its_samples(tmp_path: Path) -> None:
    w = _writer(tmp_path / "run")
    _complete(w, "c000", 0, 0.0)
    w.finish()
    w2 = open_for_resume(tmp_path / "run")
    _complete(w2, "c001", 0, 0.01)
    w2.finish()
    assert len(load(tmp_path / "run").samples) == 16


def test_load_rejects_other_schema_versions(tmp_path: Path) -> None:
    w = _writer(tmp_path / "run")
    w.finish()
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    meta["schema_version"] = 99
    (tmp_path / "run" / "run.json").write_text(json.dumps(meta))
    with pytest.raises(ResultsError, match="schema_version"):
        load(tmp_path / "run")
    with pytest.raises(ResultsError, match=r"no run\.json"):
        load(tmp_path)


def test_samples_frame_enforces_dtypes() -> None:
    df = samples_frame(
        [
            {"cell": "c0", "repetition": 0, "protocol": "h3", "workload": "handshake"}
            | {"metric": "ttfb_rtt", "value": 1, "unit": "rtt", "mode": "zero_rtt"}
            | {"early_data": True},
            {"cell": "c0", "repetition": 0, "protocol": "h3", "workload": "watch", "stream": 3}
            | {"metric": "event_latency_ms", "value": 25, "unit": "ms", "watch.streams": 4},
        ]
    )
    assert df["stream"].dtype == "Int64"
    assert df["early_data"].dtype == "boolean"
    assert df["value"].dtype == "float64"
    assert df["repetition"].dtype == "int64"
    assert df["mode"].dtype == "string"
    assert df["stream"].isna().tolist() == [True, False]
    assert df["mode"].isna().tolist() == [False, True]
    assert df["early_data"].isna().tolist() == [False, True]
    assert df["implementation"].tolist() == ["reference", "reference"]
    assert "watch.streams" in results.axis_columns(df)
    with pytest.raises(ResultsError, match="unit"):
        samples_frame([{**df.iloc[0].to_dict(), "unit": "furlongs"}])
    with pytest.raises(ResultsError, match="mode"):
        samples_frame([{**df.iloc[0].to_dict(), "mode": "warm"}])
    with pytest.raises(ResultsError, match="lack"):
        samples_frame([{"cell": "c0"}])
    with pytest.raises(ResultsError, match="missing 'protocol'"):
        samples_frame([{**df.iloc[0].to_dict(), "protocol": None}])


def test_dtypes_survive_parquet(tmp_path: Path) -> None:
    w = _writer(tmp_path / "run")
    w.append_samples(
        samples_frame(
            [
                {"cell": "c000", "repetition": 0, "protocol": "h3", "workload": "handshake"}
                | {"metric": "ttfb_rtt", "value": 1.1, "unit": "rtt", "mode": "zero_rtt"}
                | {"early_data": True},
                {"cell": "c000", "repetition": 0, "protocol": "h2", "workload": "bulk"}
                | {"metric": "goodput_mbit", "value": 18.0, "unit": "Mbit/s"},
            ]
        )
    )
    w.mark_completed("c000", 0)
    w.finish()
    df = load(tmp_path / "run").samples
    assert df["stream"].dtype == "Int64" and df["early_data"].dtype == "boolean"
    assert df["mode"].dtype == "string"
    assert df.loc[df.metric == "ttfb_rtt", "early_data"].tolist() == [True]


def test_summary_medians_on_hand_built_frame() -> None:
    rows = []
    # three repetitions; per-rep medians of ttfb are 2, 3, 10 → median 3;
    # hol_spread aggregates 0.2, 0.9, 0.4 → 0.4; cpu_bound in one rep → True
    for rep, (ttfbs, spread, bound) in enumerate(
        [([1.0, 2.0, 9.0], 0.2, 0.0), ([3.0, 3.0, 3.0], 0.9, 1.0), ([10.0, 10.0, 11.0], 0.4, 0.0)]
    ):
        key = {"cell": "c0", "repetition": rep, "protocol": "h3", "workload": "handshake"}
        for v in ttfbs:
            rows.append(key | {"metric": "ttfb_rtt", "value": v, "unit": "rtt", "mode": "cold"})
            zero = {"mode": "zero_rtt", "early_data": rep != 0}
            rows.append(key | {"metric": "ttfb_rtt", "value": v / 2, "unit": "rtt"} | zero)
        rows.append(key | {"metric": "hol_spread", "value": spread, "unit": "fraction"})
        rows.append(key | {"metric": "cpu_bound", "value": bound, "unit": "bool"})
    s = summarise(samples_frame(rows))
    assert len(s) == 1
    row = s.iloc[0]
    assert row["n_repetitions"] == 3
    assert row["ttfb_rtt_cold"] == pytest.approx(3.0)
    assert row["ttfb_rtt_zero_rtt"] == pytest.approx(1.5)
    assert row["hol_spread"] == pytest.approx(0.4)
    assert bool(row["cpu_bound"]) is True
    assert row["early_data_fraction_zero_rtt"] == pytest.approx(1.0)  # median of 0, 1, 1
    assert "ttfb_rtt" not in s.columns  # modes are never mixed in one median


def test_summary_one_row_per_cell_protocol_workload(tmp_path: Path) -> None:
    rows = _rows("c000", 0, 0.0) + _rows("c001", 0, 0.01) + _rows("c001", 1, 0.01)
    s = summarise(samples_frame(rows))
    assert len(s) == 4
    assert s.set_index(["cell", "protocol"])["n_repetitions"].to_dict() == {
        ("c000", "h2"): 1,
        ("c000", "h3"): 1,
        ("c001", "h2"): 2,
        ("c001", "h3"): 2,
    }
    assert s["link.loss.rate"].tolist() == [0.0, 0.0, 0.01, 0.01]


def test_environment_info_has_versions() -> None:
    env = results.environment_info()
    assert env["python"].count(".") == 2
    assert env["libraries"]["numpy"] is not None
    assert env["libraries"]["pandas"] == pd.__version__
    assert env["kernel"].startswith("Linux")
    assert env["host_cpus"] >= 1
    assert set(results.environment_info()) >= {"kernel", "iproute2", "python", "libraries"}


def test_fixture_run_is_loadable_and_shift_moves_h3(tmp_path: Path) -> None:
    from fixtures.make_run import make_fixture_run

    base = load(make_fixture_run(tmp_path, repetitions=2))
    shifted = load(make_fixture_run(tmp_path, shift=2.0, repetitions=2))
    assert base.meta["status"] == "complete"
    assert set(base.samples["metric"]) == results.SAMPLE_METRICS | results.AGGREGATE_METRICS
    assert len(base.summary) == 9 * 2 * 5  # cells × protocols × workloads
    key = ["cell", "protocol", "workload"]
    a = base.summary.set_index(key)
    b = shifted.summary.set_index(key)
    h3 = ("c004", "h3", "bulk")
    h2 = ("c004", "h2", "bulk")
    assert b.loc[h3, "goodput_mbit"] == pytest.approx(2 * a.loc[h3, "goodput_mbit"], rel=0.05)
    assert b.loc[h2, "goodput_mbit"] == pytest.approx(a.loc[h2, "goodput_mbit"], rel=0.05)
    hs = base.summary.query("protocol == 'h3' and workload == 'handshake'")
    assert hs["ttfb_rtt_zero_rtt"].between(0.9, 1.5).all()
    assert (hs["early_data_fraction_zero_rtt"] == 1.0).all()
    with pytest.raises(ResultsError):
        make_fixture_run(tmp_path, repetitions=2)
