"""`lab check`: thresholds that must pass and must fail on fixture runs, file:line errors,
no-data errors, and well-formed JUnit XML listing every threshold."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest
from fixtures.make_run import make_fixture_run
from pydantic import ValidationError

from lab.cli import main
from lab.evidence.check import (
    POOLED,
    LoadedThreshold,
    Threshold,
    check_run,
    evaluate,
    load_thresholds,
    with_scenario_fields,
)
from lab.scenario.workloads import WORKLOAD_KINDS

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "scenarios" / "thresholds.yaml"


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("runs")
    return {
        "good": make_fixture_run(d, repetitions=3),
        # h3 50% slower/larger everywhere: 0-RTT TTFB ≈ 1.65 RTT, cold TTFB ratio ≈ 1.0
        "shifted": make_fixture_run(d, shift=1.5, repetitions=3),
    }


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "t.yaml"
    p.write_text(text)
    return p


def test_shipped_thresholds_pass_on_a_good_run(runs: dict[str, Path], tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    rc = main(["check", str(runs["good"]), "--thresholds", str(SHIPPED), "--junit", str(junit)])
    assert rc == 0
    root = ET.parse(junit).getroot()
    cases = root.findall("./testsuite/testcase")
    names = {t.threshold.name for t in load_thresholds(SHIPPED)}
    assert {c.get("name") for c in cases} == names
    assert not root.findall(".//failure") and not root.findall(".//error")


def test_shipped_thresholds_fail_on_a_shifted_run(runs: dict[str, Path], tmp_path: Path) -> None:
    report, xml = check_run(runs["shifted"], SHIPPED)
    assert report.exit_code == 1
    failed = {r.name for r in report.results if r.status == "fail"}
    assert {"h3-zero-rtt-ttfb", "h3-cold-ttfb-ratio", "h3-rpc-under-load-p95-ratio"} <= failed
    root = ET.fromstring(xml)
    suite = root.find("testsuite")
    assert suite is not None and suite.get("failures") == str(len(failed))
    failures = root.findall(".//testcase/failure")
    assert len(failures) == len(failed)
    assert all(f.get("message") for f in failures)
    rc = main(["check", str(runs["shifted"]), "--thresholds", str(SHIPPED)])
    assert rc == 1


def test_absolute_ratio_statistics_and_where(runs: dict[str, Path], tmp_path: Path) -> None:
    f = _write(
        tmp_path,
        """thresholds:
  - {name: p95-samples, workload: handshake, metric: ttfb_rtt, protocol: h2, mode: cold,
     over: samples, statistic: p95, max: 6.5}
  - {name: too-strict, workload: handshake, metric: ttfb_rtt, protocol: h2, mode: cold,
     statistic: min, max: 2.5}
  - {name: ratio-at-16, workload: watch, metric: hol_spread, ratio: h3/h2,
     where: {watch.streams: 16, link.loss.rate: 0.02}, max: 0.2}
  - {name: loss-by-link, workload: bulk, metric: goodput_mbit, protocol: h2,
     where: {loss_rate: 0.02}, min: 14, max: 16}
""",
    )
    report, _ = check_run(runs["good"], f)
    status = {r.name: r.status for r in report.results}
    assert status == {
        "p95-samples": "pass",
        "too-strict": "fail",
        "ratio-at-16": "pass",
        "loss-by-link": "pass",
    }
    ratio = next(r for r in report.results if r.name == "ratio-at-16")
    assert [c.cell for c in ratio.cells] == ["c008"]  # the only cell at loss 2%, 16 streams
    assert ratio.cells[0].value == pytest.approx(0.07, abs=0.03)


def test_threshold_matching_no_data_is_an_error(runs: dict[str, Path], tmp_path: Path) -> None:
    f = _write(
        tmp_path,
        """thresholds:
  - {name: no-such-cell, workload: watch, metric: hol_spread, protocol: h3,
     where: {watch.streams: 64}, max: 0.25}
  - {name: no-such-axis, workload: watch, metric: hol_spread, protocol: h3,
     where: {k8s.pods: 3}, max: 0.25}
  - {name: no-k8s-mix, workload: k8s_mix, metric: rpc_p95_ms, protocol: h3, max: 100}
  - {name: h2-has-no-0rtt, workload: handshake, metric: ttfb_rtt, protocol: h2,
     mode: zero_rtt, max: 1.5}
""",
    )
    report, xml = check_run(runs["good"], f)
    assert [r.status for r in report.results] == ["error"] * 4
    assert all("matches no data" in r.message for r in report.results)
    assert report.exit_code == 1
    root = ET.fromstring(xml)
    assert len(root.findall(".//testcase/error")) == 4
    assert main(["check", str(runs["good"]), "--thresholds", str(f)]) == 1


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ("thresholds:\n  - name: a\n    workload: watch\n    metric: hol_spread\n"
         "    protocol: h3\n    maxx: 0.25\n", 6, "maxx"),
        ("thresholds:\n  - name: a\n    workload: watch\n    metric: hol_sprad\n"
         "    protocol: h3\n    max: 0.25\n", 4, "unknown metric"),
        ("thresholds:\n  - name: a\n    workload: watch\n    metric: hol_spread\n"
         "    protocol: h3\n    statistic: p95x\n    max: 1\n", 6, "statistic"),
        ("thresholds:\n  - name: a\n    workload: watch\n    metric: hol_spread\n"
         "    max: 1\n", 2, "protocol"),
        ("thresholds:\n  - name: a\n    workload: watch\n    metric: hol_spread\n"
         "    protocol: h3\n    max: [1\n", 7, "YAML"),
    ],
)  # fmt: skip
def test_bad_field_gives_file_line_and_exit_2(
    runs: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    body: str,
    line: int,
    words: str,
) -> None:
    f = _write(tmp_path, body)
    junit = tmp_path / "j.xml"
    rc = main(["check", str(runs["good"]), "--thresholds", str(f), "--junit", str(junit)])
    err = capsys.readouterr().err
    assert rc == 2
    assert f"{f}:{line}:" in err
    assert words in err
    assert not junit.exists()


def test_not_a_run_is_exit_2(tmp_path: Path) -> None:
    assert main(["check", str(tmp_path), "--thresholds", str(SHIPPED)]) == 2


def test_where_on_a_fixed_workload_field_uses_the_scenario() -> None:
    meta = {"scenario": {"workloads": [{"kind": "watch", "streams": 16}, {"kind": "bulk"}]}}
    df = pd.DataFrame({"cell": ["c0", "c0"], "value": [1.0, 2.0]})
    out = with_scenario_fields(df, meta, {"watch.streams", "bulk.bytes", "loss_rate"})
    assert list(out["watch.streams"]) == [16, 16]
    assert "bulk.bytes" not in out.columns and "loss_rate" not in out.columns


def test_pool_cells_judges_all_cells_repetitions_together() -> None:
    """Two cells of 3 repetitions: per cell, one breaks min 0.7; pooled, the six per-repetition
    values of each protocol give one median ratio (and repetitions of different cells are not
    merged into one)."""
    h2 = {"c000": [4.0, 4.0, 4.0], "c001": [4.0, 4.0, 4.0]}
    h3 = {"c000": [4.0, 4.0, 4.0], "c001": [2.0, 2.0, 2.0]}
    rows = [
        {"cell": cell, "repetition": rep, "protocol": proto, "workload": "bulk",
         "stream": pd.NA, "metric": "goodput_mbit", "value": v, "unit": "Mbit/s"}
        for proto, per_cell in (("h2", h2), ("h3", h3))
        for cell, values in per_cell.items()
        for rep, v in enumerate(values)
    ]  # fmt: skip
    samples = pd.DataFrame(rows)

    def judge(pool: bool) -> tuple[str, list[tuple[str, float]]]:
        t = Threshold(name="g", workload="bulk", metric="goodput_mbit", ratio="h3/h2",
                      pool_cells=pool, min=0.7)  # fmt: skip
        result = evaluate(samples, LoadedThreshold(t, "t.yaml", 1))
        return result.status, [(c.cell, c.value) for c in result.cells]

    status, cells = judge(False)
    assert status == "fail" and cells == [("c000", 1.0), ("c001", 0.5)]
    status, cells = judge(True)  # medians of (4,4,4,2,2,2)/(4,…): 3/4
    assert status == "pass" and cells == [(POOLED, 0.75)]


def test_every_scenario_workload_kind_is_a_threshold_workload() -> None:
    for kind in WORKLOAD_KINDS:
        t = Threshold(name="t", workload=kind, metric="ttfb_ms", protocol="h3", max=1)
        assert t.workload == kind
    with pytest.raises(ValidationError, match="unknown workload 'wach'; known: watch, handshake"):
        Threshold(name="t", workload="wach", metric="ttfb_ms", protocol="h3", max=1)


def test_ratio_cells_without_both_protocols_or_with_0_over_0_are_left_out() -> None:
    """c000: h3/h2 = 0.5; c001: h2 only (skipped); c002: both 0 (undefined, not a pass)."""
    values = {("c000", "h2"): 4.0, ("c000", "h3"): 2.0, ("c001", "h2"): 4.0,
              ("c002", "h2"): 0.0, ("c002", "h3"): 0.0}  # fmt: skip
    samples = pd.DataFrame(
        [
            {"cell": cell, "repetition": rep, "protocol": proto, "workload": "watch",
             "stream": pd.NA, "metric": "stalled_fraction", "value": v, "unit": "fraction"}
            for (cell, proto), v in values.items()
            for rep in range(3)
        ]
    )  # fmt: skip

    def judge(**bound: float):
        t = Threshold(name="s", workload="watch", metric="stalled_fraction", ratio="h3/h2", **bound)
        return evaluate(samples, LoadedThreshold(t, "t.yaml", 1))

    ok = judge(max=0.6)
    assert ok.status == "pass" and [(c.cell, c.value, c.n) for c in ok.cells] == [("c000", 0.5, 3)]
    assert "without both protocols skipped: c001" in ok.message
    assert "h3 and h2 are both 0 skipped: c002" in ok.message
    bad = judge(max=0.4)
    assert bad.status == "fail" and bad.message.startswith("1 of 1 cells break ≤ 0.4: c000=0.5")
    assert bad.observed_text() == "0.5 (c000)"
    only_zero = samples[samples["cell"] == "c002"]
    t = Threshold(name="z", workload="watch", metric="stalled_fraction", ratio="h3/h2", max=1)
    none = evaluate(only_zero, LoadedThreshold(t, "t.yaml", 1))
    assert none.status == "error" and "both 0 in every matching cell (c002)" in none.message
