"""The terminal summary after `lab run`: one compact table per workload, units in the headers,
a column per metric × protocol (none for h2's 0-RTT, which does not exist)."""

from __future__ import annotations

import pandas as pd
import pytest
from fixtures.make_run import make_fixture_run
from rich.console import Console
from rich.table import Table

from lab.results.reader import load
from lab.run.progress import summary_table


@pytest.fixture(scope="module")
def summary(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    run = make_fixture_run(tmp_path_factory.mktemp("runs"), repetitions=3, cpu_bound_cells=["c004"])
    return load(run).summary


def _tables(summary: pd.DataFrame) -> dict[str, Table]:
    group = summary_table(summary)
    tables = [r for r in group.renderables if isinstance(r, Table)]
    return {str(t.title).split(" (", 1)[0]: t for t in tables}


def _columns(table: Table) -> list[tuple[str, str]]:
    """(metric header, protocol) of every value column; a blank metric header repeats the one
    to its left (the h3 column beside the h2 one)."""
    out: list[tuple[str, str]] = []
    for col in table.columns:
        head, _, protocol = str(col.header).partition("\n")
        if protocol:
            out.append((head or out[-1][0], protocol))
    return out


def test_one_table_per_workload_with_units_in_the_headers(summary: pd.DataFrame) -> None:
    tables = _tables(summary)
    assert list(tables) == ["handshake", "bulk", "multiplex", "watch", "rpc_under_load"]
    assert str(tables["watch"].title) == "watch (medians over 3 repetitions)"
    heads = {w: [h for h, _ in _columns(t)] for w, t in tables.items()}
    # each watch measure twice (h2, h3), in SUMMARY_COLUMNS' order, units in the headers
    watch = [h for h in heads["watch"] if "(" in h]
    assert watch[:2] == ["HOL spread (fraction)"] * 2
    shown = list(dict.fromkeys(watch))
    assert shown[:2] == ["HOL spread (fraction)", "losses (count)"]
    assert {"stalled (fraction)", "excess p99 (ms)"} <= set(shown)
    assert all(watch.count(h) == 2 for h in shown)
    assert "goodput (Mbit/s)" in heads["bulk"] and "rpc p95 (ms)" in heads["rpc_under_load"]
    # rows: one per cell, with the axes that matter to the workload (not another's)
    keys = [str(c.header) for c in tables["watch"].columns[:3]]
    assert keys == ["cell", "loss.rate", "streams"]
    assert [str(c.header) for c in tables["bulk"].columns[:2]] == ["cell", "loss.rate"]
    assert tables["watch"].row_count == 9


def test_no_zero_rtt_column_for_h2(summary: pd.DataFrame) -> None:
    columns = _columns(_tables(summary)["handshake"])
    assert ("TTFB cold (RTT)", "h2") in columns and ("TTFB cold (RTT)", "h3") in columns
    assert ("TTFB 0-RTT (RTT)", "h3") in columns
    assert ("TTFB 0-RTT (RTT)", "h2") not in columns
    assert ("0-RTT early data (fraction)", "h2") not in columns


def test_no_zero_rtt_column_for_h2_even_when_its_agent_reported_one(summary: pd.DataFrame) -> None:
    """Real h2 agents run the zero_rtt mode as a resumed handshake (no TLS early data), so
    summary.csv has h2 values there; the table still shows 0-RTT for h3 only."""
    with_h2 = summary.copy()
    h2 = (with_h2["protocol"] == "h2") & (with_h2["workload"] == "handshake")
    with_h2.loc[h2, "ttfb_rtt_zero_rtt"] = 3.1
    with_h2.loc[h2, "early_data_fraction_zero_rtt"] = 0.0
    columns = _columns(_tables(with_h2)["handshake"])
    assert ("TTFB 0-RTT (RTT)", "h3") in columns
    assert ("TTFB 0-RTT (RTT)", "h2") not in columns
    assert ("0-RTT early data (fraction)", "h2") not in columns
    assert ("TTFB resumed (RTT)", "h2") in columns


def test_flags_get_a_column_only_where_set(summary: pd.DataFrame) -> None:
    watch = _tables(summary)["watch"]
    assert ("cpu-bound", "h3") in _columns(watch) and ("cpu-bound", "h2") not in _columns(watch)
    console = Console(record=True, width=250, force_terminal=False)
    console.print(summary_table(summary[summary["cell"] != "c004"]))
    text = console.export_text()
    assert "cpu-bound" not in text and "HOL spread (fraction)" in text
    rows = [ln for ln in text.splitlines() if ln.startswith("│ c005")]
    assert len(rows) == 5  # one row per workload table
