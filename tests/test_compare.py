"""`lab compare`: no change between two runs of the same fixture, a change for a shifted one."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.make_run import make_fixture_run

from lab.cli import main
from lab.evidence.compare import compare, compare_runs, difference_frame, match_cells
from lab.results.reader import load


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("runs")
    return {
        "a": make_fixture_run(d / "a"),
        "a_again": make_fixture_run(d / "b"),  # same seed: the same numbers
        "shifted": make_fixture_run(d, shift=1.5),
    }


def test_same_fixture_twice_shows_no_change(runs: dict[str, Path]) -> None:
    diffs = compare_runs(runs["a"], runs["a_again"])
    assert len(diffs) > 100
    assert {d.change for d in diffs} <= {"no change", "undecided"}
    assert all(d.relative == pytest.approx(0.0) for d in diffs if d.change == "no change")


def test_shifted_h3_is_reported_and_h2_is_not(runs: dict[str, Path]) -> None:
    frame = difference_frame(compare_runs(runs["a"], runs["shifted"]))
    changed = frame[frame["change"].isin(["improved", "regressed"])]
    assert set(changed["protocol"]) == {"h3"}  # h2 was not shifted
    # the clear-cut ones: TTFB (small noise) regressed by +50%, goodput "improved" by +50%
    ttfb = changed[(changed["metric"] == "ttfb_ms") & (changed["mode"] == "cold")]
    assert len(ttfb) == 9  # every cell
    assert set(ttfb["change"]) == {"regressed"}
    assert ttfb["relative"].to_numpy() == pytest.approx(0.5, abs=0.05)
    goodput = changed[changed["metric"] == "goodput_mbit"]
    assert len(goodput) == 9 and set(goodput["change"]) == {"improved"}
    assert (changed["q"] < 0.05).all()


def test_minimum_effect_size_suppresses_small_changes(runs: dict[str, Path]) -> None:
    diffs = compare_runs(runs["a"], runs["shifted"], min_effect=0.6)
    assert not [d for d in diffs if d.change in ("improved", "regressed")]


def test_few_repetitions_skip_the_rank_test(tmp_path: Path) -> None:
    a = load(make_fixture_run(tmp_path, repetitions=3))
    b = load(make_fixture_run(tmp_path, repetitions=3, shift=1.5))
    diffs = compare(a.samples, b.samples, a.meta, b.meta)
    assert all(any("rank test skipped" in f for f in d.flags) for d in diffs)
    ttfb = [d for d in diffs if d.metric == "ttfb_ms" and d.protocol == "h3"]
    assert ttfb and all(d.change == "regressed" for d in ttfb)  # the bootstrap still decides


def test_cells_are_matched_by_axis_values() -> None:
    a = {"cells": [{"cell": "c000", "axes": {"x": 1}}, {"cell": "c001", "axes": {"x": 2}}]}
    b = {"cells": [{"cell": "c000", "axes": {"x": 2.0}}, {"cell": "c001", "axes": {"x": 1}}]}
    assert match_cells(a, b) == {"c000": "c001", "c001": "c000"}


def test_cli_prints_a_table_and_exits_0(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", str(runs["a"]), str(runs["shifted"])]) == 0
    out = capsys.readouterr().out
    assert "lab compare" in out and "regressed" in out and "ttfb_ms" in out
    assert main(["compare", str(runs["a"]), str(runs["a_again"])]) == 0
    assert "nothing changed beyond noise" in capsys.readouterr().out
    assert main(["compare", str(runs["a"]), "/nonexistent"]) == 2
