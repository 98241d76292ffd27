"""lab.results: the on-disk format, round trips, interruption and resume, summary rules,
checksums, atomic writes, and damaged run directories (one error line, never a traceback)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fixtures.make_run import make_fixture_run

from lab.errors import ResultsError
from lab.results import atomic, schema
from lab.results.provenance import environment_info
from lab.results.reader import load
from lab.results.schema import samples_frame
from lab.results.summary import summarise
from lab.results.writer import RunWriter, open_for_resume

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
    assert r.meta["schema_version"] == schema.SCHEMA_VERSION == 2
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
    assert list(r.samples.columns[:6]) == list(schema.SAMPLE_KEYS)
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
    assert "watch.streams" in schema.axis_columns(df)
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
    env = environment_info()
    assert env["python"].count(".") == 2
    assert env["libraries"]["numpy"] is not None
    assert env["libraries"]["pandas"] == pd.__version__
    assert env["kernel"].startswith("Linux")
    assert env["host_cpus"] >= 1
    assert set(environment_info()) >= {"kernel", "iproute2", "python", "libraries"}


def test_fixture_run_is_loadable_and_shift_moves_h3(tmp_path: Path) -> None:
    base = load(make_fixture_run(tmp_path, repetitions=2))
    shifted = load(make_fixture_run(tmp_path, shift=2.0, repetitions=2))
    assert base.meta["status"] == "complete"
    assert set(base.samples["metric"]) == schema.SAMPLE_METRICS | schema.AGGREGATE_METRICS
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


# --- checksums ------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _meta(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def _edit_meta(run: Path, edit: Callable[[dict], object]) -> None:
    meta = _meta(run)
    edit(meta)
    (run / "run.json").write_text(json.dumps(meta))


def test_run_json_records_the_sha256_of_every_data_file(tmp_path: Path) -> None:
    w = _writer(tmp_path / "run")
    _complete(w, "c000", 0, 0.0)
    running = _meta(tmp_path / "run")["sha256"]
    (part,) = (tmp_path / "run" / "parts").iterdir()
    assert running == {f"parts/{part.name}": _sha256(part)}  # final files: not while running
    w.record_error("c000", 0, "h3", "watch", "boom")  # rewrites errors.json mid-run
    assert load(tmp_path / "run").errors["error"].tolist() == ["boom"]  # still verifies

    w.finish("interrupted")
    sums = _meta(tmp_path / "run")["sha256"]
    files = ["samples.parquet", "summary.csv", "errors.json", f"parts/{part.name}"]
    assert sums == {name: _sha256(tmp_path / "run" / name) for name in files}

    w2 = open_for_resume(tmp_path / "run")
    assert set(_meta(tmp_path / "run")["sha256"]) == {f"parts/{part.name}"}
    w2.finish()
    sums = _meta(tmp_path / "run")["sha256"]
    assert set(sums) == {"samples.parquet", "summary.csv", "errors.json"}  # parts are gone
    assert all(sums[name] == _sha256(tmp_path / "run" / name) for name in sums)


def test_part_written_after_the_last_run_json_update_is_skipped_then_deleted(
    tmp_path: Path,
) -> None:
    w = _writer(tmp_path / "run")
    _complete(w, "c000", 0, 0.0)
    (late,) = w.append_samples(samples_frame(_rows("c001", 0, 0.01)))  # killed before run.json
    del w
    assert f"parts/{late.name}" not in _meta(tmp_path / "run")["sha256"]
    assert set(load(tmp_path / "run").samples["cell"]) == {"c000"}
    open_for_resume(tmp_path / "run")
    assert not late.exists()


def test_a_recorded_part_that_is_missing_is_refused(tmp_path: Path) -> None:
    w = _writer(tmp_path / "run")
    _complete(w, "c000", 0, 0.0)
    (part,) = (tmp_path / "run" / "parts").iterdir()
    part.unlink()
    with pytest.raises(ResultsError, match=rf"{part.name}: missing"):
        load(tmp_path / "run")


def test_run_without_checksums_still_loads_and_gets_them_when_resumed(tmp_path: Path) -> None:
    w = _writer(tmp_path / "run")
    _complete(w, "c000", 0, 0.0)
    w.finish("interrupted")
    _edit_meta(tmp_path / "run", lambda m: m.pop("sha256"))  # as written before checksums
    assert len(load(tmp_path / "run").samples) == 8

    w2 = open_for_resume(tmp_path / "run")
    (part,) = (tmp_path / "run" / "parts").iterdir()
    assert _meta(tmp_path / "run")["sha256"] == {f"parts/{part.name}": _sha256(part)}
    _complete(w2, "c001", 0, 0.01)
    w2.finish()
    assert len(load(tmp_path / "run").samples) == 16


def test_resume_refuses_an_unknown_schema_version(tmp_path: Path) -> None:
    w = _writer(tmp_path / "run")
    w.finish("interrupted")
    _edit_meta(tmp_path / "run", lambda m: m.update(schema_version=99))
    with pytest.raises(ResultsError, match=r"run\.json: schema_version 99"):
        open_for_resume(tmp_path / "run")
    assert _meta(tmp_path / "run")["status"] == "interrupted"  # untouched


# --- atomic writes ----------------------------------------------------------------------------
def test_atomic_write_replaces_whole_with_exact_mode_and_no_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    target.write_bytes(b"old")
    digest = atomic.write_bytes(target, b"secret", mode=0o600)
    assert target.read_bytes() == b"secret"
    assert digest == hashlib.sha256(b"secret").hexdigest()
    assert target.stat().st_mode & 0o777 == 0o600
    atomic.write_bytes(tmp_path / "cert.pem", b"public", mode=0o644)
    assert (tmp_path / "cert.pem").stat().st_mode & 0o777 == 0o644
    atomic.write_json(tmp_path / "x.json", {"p": Path("/a"), "n": np.int64(3)})
    assert json.loads((tmp_path / "x.json").read_text()) == {"p": "/a", "n": 3}
    with pytest.raises(TypeError):
        atomic.write_json(tmp_path / "y.json", {"x": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cert.pem", "key.pem", "x.json"]


def test_atomic_module_does_not_import_pandas() -> None:
    code = "import sys, lab.results.atomic; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- damaged run directories ------------------------------------------------------------------
REPO = Path(__file__).resolve().parents[1]
THRESHOLDS = REPO / "scenarios" / "thresholds.yaml"


def _truncate_parquet(run: Path) -> str:
    f = run / "samples.parquet"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    return "samples.parquet"


def _empty_parquet(run: Path) -> str:
    (run / "samples.parquet").write_bytes(b"")
    return "samples.parquet"


def _garbage_parquet(run: Path) -> str:
    f = run / "samples.parquet"
    f.write_bytes(np.random.default_rng(0).bytes(f.stat().st_size))
    return "samples.parquet"


def _flip_64_bytes(run: Path) -> str:
    """Invert 64 bytes inside the `value` column's dictionary page: parquet still decodes,
    8–9 values change (pyarrow writes no page CRCs)."""
    f = run / "samples.parquet"
    chunk = pq.ParquetFile(f).metadata.row_group(0)
    col = next(
        chunk.column(i)
        for i in range(chunk.num_columns)
        if chunk.column(i).path_in_schema == "value"
    )
    start = col.dictionary_page_offset or col.data_page_offset
    end = col.data_page_offset if col.dictionary_page_offset else start + col.total_compressed_size
    middle = (start + end) // 2
    data = bytearray(f.read_bytes())
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    f.write_bytes(bytes(data))
    return "samples.parquet"


def _garbage_run_json(run: Path) -> str:
    (run / "run.json").write_text('{"schema_version": 1, "status": "comp')
    return "run.json"


def _run_json_not_an_object(run: Path) -> str:
    (run / "run.json").write_text('["schema_version", 1]')
    return "run.json"


def _bad_completed_entries(run: Path) -> str:
    _edit_meta(run, lambda m: m.update(completed=[["c000", 0], ["c001"], [3, "c002"]]))
    return "run.json"


def _corrupt_errors_json(run: Path) -> str:
    (run / "errors.json").write_text('[{"cell": "c000", "repetition": ')
    return "errors.json"


def _wrong_errors_json(run: Path) -> str:
    (run / "errors.json").write_text('[{"cell": "c000", "error": 42}]')
    return "errors.json"


def _corrupt_summary_csv(run: Path) -> str:
    f = run / "summary.csv"
    lines = f.read_text().splitlines()
    lines[3] = ",".join("garbage" for _ in lines[3].split(","))
    f.write_text("\n".join(lines) + "\n")
    return "summary.csv"


def _schema_version_99(run: Path) -> str:
    _edit_meta(run, lambda m: m.update(schema_version=99))
    return "run.json"


DAMAGES: dict[str, Callable[[Path], str]] = {
    "truncated parquet": _truncate_parquet,
    "empty parquet": _empty_parquet,
    "garbage parquet": _garbage_parquet,
    "64 flipped bytes": _flip_64_bytes,
    "garbage run.json": _garbage_run_json,
    "run.json not an object": _run_json_not_an_object,
    "bad completed entries": _bad_completed_entries,
    "corrupt errors.json": _corrupt_errors_json,
    "corrupt summary.csv": _corrupt_summary_csv,
    "schema_version 99": _schema_version_99,
}
COMMANDS = ("report", "check", "compare")


@pytest.fixture(scope="module")
def good_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_fixture_run(tmp_path_factory.mktemp("good"), repetitions=2)


def _damaged_copy(good: Path, where: Path, damage: Callable[[Path], str]) -> tuple[Path, str]:
    run = where / good.name
    shutil.copytree(good, run)
    return run, damage(run)


def _lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture(scope="module")
def cli_outcomes(
    good_run: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[tuple[str, str], tuple[str, subprocess.CompletedProcess[str]]]:
    """(damage, command) → (file the error must name, finished `python3 -m lab` process);
    every process runs at once (bounded by the CPUs), since each one spends seconds importing."""
    jobs: dict[tuple[str, str], tuple[str, list[str]]] = {}
    for name, damage in DAMAGES.items():
        where = tmp_path_factory.mktemp("damaged")
        run, file = _damaged_copy(good_run, where, damage)
        jobs[name, "report"] = file, ["report", str(run), "--out", str(where / "report")]
        jobs[name, "check"] = file, ["check", str(run), "--thresholds", str(THRESHOLDS)]
        jobs[name, "compare"] = file, ["compare", str(run), str(good_run)]
        if name == "schema_version 99":
            jobs[name, "run --resume"] = file, ["run", "--resume", str(run)]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        done = {key: pool.submit(_lab, *argv) for key, (_, argv) in jobs.items()}
        return {key: (jobs[key][0], future.result()) for key, future in done.items()}


@pytest.mark.parametrize(
    ("damage", "command"),
    [(d, c) for d in DAMAGES for c in COMMANDS] + [("schema_version 99", "run --resume")],
)
def test_damaged_run_is_one_error_line_and_exit_2(
    cli_outcomes: dict[tuple[str, str], tuple[str, subprocess.CompletedProcess[str]]],
    damage: str,
    command: str,
) -> None:
    file, proc = cli_outcomes[damage, command]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"lab {command.split()[0]}: ") and file in lines[0], lines[0]


def test_good_run_passes_the_same_commands(good_run: Path, tmp_path: Path) -> None:
    """The damage tests fail for the damage, not for the fixture or the commands."""
    assert _lab("compare", str(good_run), str(good_run)).returncode == 0
    assert _lab("check", str(good_run), "--thresholds", str(THRESHOLDS)).returncode == 0


@pytest.mark.parametrize(
    "damage",
    [
        "truncated parquet",
        "empty parquet",
        "garbage parquet",
        "corrupt errors.json",
        "wrong errors.json",
        "corrupt summary.csv",
    ],
)
def test_damage_in_a_run_without_checksums_is_still_one_line(
    good_run: Path, tmp_path: Path, damage: str
) -> None:
    """Runs written before checksums are parsed and checked for shape instead."""
    run, file = _damaged_copy(
        good_run, tmp_path, {**DAMAGES, "wrong errors.json": _wrong_errors_json}[damage]
    )
    _edit_meta(run, lambda m: m.pop("sha256"))
    with pytest.raises(ResultsError) as info:
        load(run)
    assert str(info.value).startswith(str(run / file) + ": ")
    assert "\n" not in str(info.value)


def test_flipped_bytes_are_silent_without_the_checksum(good_run: Path, tmp_path: Path) -> None:
    """Why run.json records SHA-256s: the same 64 flipped bytes load without complaint from a
    run without checksums, with changed values."""
    run, _ = _damaged_copy(good_run, tmp_path, _flip_64_bytes)
    _edit_meta(run, lambda m: m.pop("sha256"))
    damaged = load(run).samples["value"].to_numpy()
    original = load(good_run).samples["value"].to_numpy()
    assert len(damaged) == len(original)
    assert 0 < (damaged != original).sum() <= 9


@pytest.mark.parametrize(
    "damage",
    [
        "truncated parquet",
        "64 flipped bytes",
        "garbage run.json",
        "bad completed entries",
        "corrupt errors.json",
        "schema_version 99",
    ],
)
def test_resume_refuses_a_damaged_run_and_changes_nothing(
    good_run: Path, tmp_path: Path, damage: str
) -> None:
    run, file = _damaged_copy(good_run, tmp_path, DAMAGES[damage])
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    with pytest.raises(ResultsError, match=file.replace(".", r"\.")):
        open_for_resume(run)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
