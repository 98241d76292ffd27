"""`congestion_limited` (1.0 / 0.0 per watch repetition: the sender was congestion-window limited,
so the cell measures congestion control, not HOL blocking) is a flag wherever `cpu_bound` is one:
summary.csv (True when any repetition set it), the summary reader (True/False column), `lab
check` (the cell is marked), the terminal table (`cong-limited`) and `lab compare` (never
compared). Synthetic samples frames: pure code."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from rich.console import Console

from lab.errors import ResultsError
from lab.evidence.check import LoadedThreshold, Threshold, evaluate, junit_xml
from lab.evidence.check import check as check_thresholds
from lab.evidence.compare import compare
from lab.results.reader import parse_summary
from lab.results.schema import samples_frame
from lab.results.summary import summarise
from lab.run.progress import summary_table

NOTE = "measures congestion control, not HOL blocking"


def _samples(limited: dict[str, list[float] | None]) -> pd.DataFrame:
    """Watch cells × 3 repetitions × h2/h3: excess_p99_ms 10 (h2) and 5 (h3) ms; h3's
    congestion_limited per repetition from `limited` (None: the cell has no such row, e.g. no
    sender samples); h2's always 0.0. cpu_bound 0.0 everywhere but in cells without the flag."""
    rows = []
    for cell, flags in limited.items():
        for rep in range(3):
            for proto, p99 in (("h2", 10.0), ("h3", 5.0)):
                key = {"cell": cell, "repetition": rep, "protocol": proto, "workload": "watch"}
                rows.append(key | {"metric": "excess_p99_ms", "value": p99, "unit": "ms"})
                if flags is not None:
                    flag = flags[rep] if proto == "h3" else 0.0
                    rows.append(
                        key | {"metric": "congestion_limited", "value": flag, "unit": "bool"}
                    )
                    rows.append(key | {"metric": "cpu_bound", "value": 0.0, "unit": "bool"})
    return samples_frame(rows)


SAMPLES = _samples({"c000": [0.0, 1.0, 0.0], "c001": [0.0, 0.0, 0.0], "c002": None})


def _flag(summary: pd.DataFrame, cell: str, protocol: str, col: str) -> object:
    row = summary[(summary["cell"] == cell) & (summary["protocol"] == protocol)]
    assert len(row) == 1
    value = row[col].iloc[0]
    return value if value is pd.NA else bool(value)


def test_summary_is_true_when_any_repetition_was_congestion_limited() -> None:
    s = summarise(SAMPLES)
    assert s["congestion_limited"].dtype == "boolean"
    assert _flag(s, "c000", "h3", "congestion_limited") is True  # 1 of 3 repetitions
    assert _flag(s, "c000", "h2", "congestion_limited") is False
    assert _flag(s, "c001", "h3", "congestion_limited") is False  # none of 3


def test_a_cell_without_the_row_reads_as_cpu_bound_does() -> None:
    s = summarise(SAMPLES)
    for proto in ("h2", "h3"):
        assert _flag(s, "c002", proto, "congestion_limited") == _flag(s, "c002", proto, "cpu_bound")
        assert not _flag(s, "c002", proto, "congestion_limited")


def test_the_summary_reader_takes_true_false_and_names_anything_else(tmp_path: Path) -> None:
    file = tmp_path / "summary.csv"
    text = summarise(SAMPLES).to_csv(index=False)
    back = parse_summary(text.encode(), file)
    assert set(back["congestion_limited"].dropna().astype(str)) == {"True", "False"}
    broken = summarise(SAMPLES).astype({"congestion_limited": object})
    broken.loc[0, "congestion_limited"] = "maybe"
    with pytest.raises(ResultsError, match="column 'congestion_limited' is not True/False"):
        parse_summary(broken.to_csv(index=False).encode(), file)


def _threshold(**kw: object) -> LoadedThreshold:
    t = Threshold(name="p99", workload="watch", metric="excess_p99_ms", max=20.0, **kw)
    return LoadedThreshold(t, "t.yaml", 1)


def test_check_marks_a_congestion_limited_cell_and_says_what_it_measures() -> None:
    for loaded in (_threshold(protocol="h3"), _threshold(ratio="h3/h2")):
        result = evaluate(SAMPLES, loaded)
        assert result.status == "pass"
        marked = {c.cell: c.congestion_limited for c in result.cells}
        assert marked == {"c000": True, "c001": False, "c002": False}
        assert f"congestion_limited in c000: {NOTE}" in result.message
        assert not any(c.cpu_bound for c in result.cells)
    xml = junit_xml(check_thresholds(SAMPLES, [_threshold(protocol="h3")]), "run").decode()
    assert "c000: 5 (n=3) congestion_limited" in xml and "c001: 5 (n=3)\n" in xml


def test_check_does_not_mark_a_run_without_a_limited_repetition() -> None:
    calm = SAMPLES[SAMPLES["cell"] != "c000"]
    result = evaluate(calm, _threshold(protocol="h3"))
    assert not any(c.congestion_limited for c in result.cells)
    assert "congestion_limited" not in result.message


def test_the_terminal_table_has_a_cong_limited_column_only_where_set() -> None:
    def text(samples: pd.DataFrame) -> str:
        console = Console(record=True, width=200, force_terminal=False)
        console.print(summary_table(summarise(samples)))
        return console.export_text()

    shown = text(SAMPLES)
    assert "cong-limited" in shown
    c000 = next(ln for ln in shown.splitlines() if ln.startswith("│ c000"))
    c001 = next(ln for ln in shown.splitlines() if ln.startswith("│ c001"))
    assert c000.rstrip("│ ").endswith("yes") and "yes" not in c001
    assert "cong-limited" not in text(SAMPLES[SAMPLES["cell"] != "c000"])


def test_compare_never_compares_the_flag() -> None:
    other = _samples({"c000": [1.0, 1.0, 1.0], "c001": [1.0, 1.0, 1.0], "c002": None})
    metrics = {d.metric for d in compare(SAMPLES, other)}
    assert "excess_p99_ms" in metrics
    assert not metrics & {"congestion_limited", "cpu_bound"}
