"""Progress display of `lab run`: cells done/total, ETA and the current cell.

On a terminal a rich progress bar; otherwise (CI, pipes) one plain line per cell.
Also the end-of-run summary: one compact table per workload.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pandas as pd
from rich.console import Console, Group
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from lab.results.schema import axis_columns
from lab.run.records import CellOutcome
from lab.run.runner import Hooks
from lab.scenario.models import Cell
from lab.scenario.workloads import WORKLOAD_KINDS


def fmt_duration(seconds: float) -> str:
    """e.g. 75 → '1 min 15 s', 42 → '42 s'."""
    s = round(seconds)
    if s < 60:
        return f"{s} s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


class RunProgress(Hooks):
    """Hooks for lab.run.runner that show progress on `console`."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console()
        self.live = self.console.is_terminal
        self._progress: Progress | None = None
        self._task = TaskID(0)  # the bar's task, once `start` made the bar
        self._total = 0
        self._done = 0
        self._label = ""
        self._t0 = time.monotonic()
        self._cells_run = 0

    def start(self, total: int, done: int, estimate_s: float) -> None:
        self._total, self._done = total, done
        self._t0 = time.monotonic()
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]cells"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.description}"),
                console=self.console,
            )
            self._progress.start()
            self._task = self._progress.add_task("", total=total, completed=done)
        elif done:
            self.console.print(f"resuming: {done}/{total} cell repetitions already done")

    def cell_started(self, cell: Cell, repetition: int) -> None:
        axes = ", ".join(f"{k}={v}" for k, v in cell.axes.items())
        self._label = f"{cell.id} rep {repetition}" + (f" ({axes})" if axes else "")
        self.phase("start")

    def phase(self, text: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=f"{self._label}: {text}")

    def cell_finished(self, outcome: CellOutcome) -> None:
        self._done += 1
        self._cells_run += 1
        status = (
            "ok" if outcome.ok and not outcome.errors else "FAILED" if not outcome.ok else "errors"
        )
        note = f" [{'; '.join(outcome.errors)[:200]}]" if outcome.errors else ""
        flags = f" flagged: {'; '.join(outcome.problems)}" if outcome.problems else ""
        line = f"{self._label}: {status} in {outcome.wall_s:.1f} s{note}{flags}"
        if self._progress is not None:
            self._progress.advance(self._task)
            if outcome.errors or outcome.problems:
                self._progress.console.print(line)
        else:
            elapsed = time.monotonic() - self._t0
            left = self._total - self._done
            eta = elapsed / self._cells_run * left if self._cells_run else math.nan
            eta_text = fmt_duration(eta) if not math.isnan(eta) else "?"
            self.console.print(f"[{self._done}/{self._total}] {line} (ETA {eta_text})")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


# Per workload kind: the summary.csv columns of its terminal table, each with its header (unit
# in parentheses). A column the summary does not have is left out; one protocol's column is left
# out when that protocol has no value in it (h2 has no 0-RTT).
# HTTP/2 has no 0-RTT (Python's ssl and Go's crypto/tls send no TLS early data): its agents'
# zero_rtt mode is a resumed handshake with no early data, shown as TTFB resumed.
H3_ONLY_COLUMNS = frozenset({"ttfb_rtt_zero_rtt", "early_data_fraction_zero_rtt"})
SUMMARY_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "handshake": (
        ("ttfb_rtt_cold", "TTFB cold (RTT)"),
        ("ttfb_rtt_resumed", "TTFB resumed (RTT)"),
        ("ttfb_rtt_zero_rtt", "TTFB 0-RTT (RTT)"),
        ("early_data_fraction_zero_rtt", "0-RTT early data (fraction)"),
    ),
    "bulk": (("goodput_mbit", "goodput (Mbit/s)"), ("utilisation", "utilisation (fraction)")),
    "multiplex": (("completion_ms", "completion (ms)"), ("goodput_mbit", "goodput (Mbit/s)")),
    "watch": (
        ("hol_spread", "HOL spread (fraction)"),
        ("hol_losses", "losses (count)"),
        ("hol_spread_reps", "reps with a loss (count)"),
        ("hol_exposed_mean", "exposed per loss (streams)"),
        ("stalled_fraction", "stalled (fraction)"),
        ("excess_p99_ms", "excess p99 (ms)"),
        ("sender_cwnd_limited_fraction", "cwnd-limited (fraction)"),
    ),
    "rpc_under_load": (
        ("rpc_p95_ms", "rpc p95 (ms)"),
        ("rpc_delayed_fraction", "rpc delayed (fraction)"),
    ),
    "k8s_mix": (
        ("completion_ms", "LIST page (ms)"),
        ("hol_spread", "HOL spread (fraction)"),
        ("hol_spread_reps", "reps with a loss (count)"),
        ("rpc_p95_ms", "rpc p95 (ms)"),
    ),
}
# Flags of a cell (True when any repetition set them): a column per protocol, only when set.
FLAG_COLUMNS: tuple[tuple[str, str], ...] = (
    ("cpu_bound", "cpu-bound"),
    ("congestion_limited", "cong-limited"),
    ("host_busy", "host-busy"),
)
_KEYS = ("cell", "protocol", "workload", "implementation", "n_repetitions")


def _is_missing(v: object) -> bool:
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def _is_set(v: object) -> bool:
    return not _is_missing(v) and bool(v)


def _row_axes(rows: pd.DataFrame, workload: str) -> list[str]:
    """The matrix axes that vary between `workload`'s cells and can matter to it."""
    out = []
    for col in axis_columns(rows):
        head = str(col).split(".", 1)[0]
        if col in _KEYS or (head in WORKLOAD_KINDS and head != workload):
            continue
        if rows[col].nunique(dropna=True) > 1:
            out.append(col)
    return out


def _axis_header(axis: str, workload: str) -> str:
    """An axis without its `link.` or own-workload prefix: `loss.rate`, `streams`."""
    head, _, rest = axis.partition(".")
    return rest if rest and head in ("link", workload) else axis


def _protocols(rows: pd.DataFrame) -> list[str]:
    known = ["h2", "h3"]
    present = [str(p) for p in rows["protocol"].dropna().unique()]
    return sorted(present, key=lambda p: (known.index(p) if p in known else len(known), p))


def _title(workload: str, rows: pd.DataFrame) -> str:
    counts = rows["n_repetitions"].dropna() if "n_repetitions" in rows.columns else ()
    reps = sorted({int(n) for n in counts})
    if not reps:
        over = "repetitions"
    elif len(reps) == 1:
        over = f"{reps[0]} repetition{'s' if reps[0] != 1 else ''}"
    else:
        over = f"{reps[0]}–{reps[-1]} repetitions"
    return f"{workload} (medians over {over})"


def _workload_table(workload: str, rows: pd.DataFrame) -> Table:
    """One row per cell (× implementation), a column per metric × protocol with values."""
    protocols = _protocols(rows)
    specs = SUMMARY_COLUMNS.get(workload) or tuple(
        dict.fromkeys(c for spec in SUMMARY_COLUMNS.values() for c in spec)
    )
    by_protocol = {p: rows[rows["protocol"] == p] for p in protocols}
    columns: list[tuple[str, str, str]] = []  # (summary column, protocol, header)
    for col, head in specs:
        if col not in rows.columns:
            continue
        shown = [p for p in protocols if by_protocol[p][col].notna().any()]
        if col in H3_ONLY_COLUMNS:  # an h2 agent's "zero_rtt" is a resumed TLS handshake
            shown = [p for p in shown if p != "h2"]
        columns += [(col, p, f"{head if i == 0 else ''}\n{p}") for i, p in enumerate(shown)]
    for col, head in FLAG_COLUMNS:
        if col not in rows.columns:
            continue
        shown = [p for p in protocols if any(_is_set(v) for v in by_protocol[p][col])]
        columns += [(col, p, f"{head if i == 0 else ''}\n{p}") for i, p in enumerate(shown)]
    axes = _row_axes(rows, workload)
    keys = ["cell", *axes]
    if "implementation" in rows.columns and rows["implementation"].nunique(dropna=True) > 1:
        keys.append("implementation")
    table = Table(title=_title(workload, rows))
    for key in keys:
        table.add_column(_axis_header(key, workload) if key in axes else key)
    for *_, head in columns:
        table.add_column(head, justify="right")
    for key_values, g in rows.groupby(keys, sort=True, dropna=False):
        values = key_values if isinstance(key_values, tuple) else (key_values,)
        cells = [str(v) for v in values]
        for col, p, _ in columns:
            mine = g.loc[g["protocol"] == p, col]
            v: Any = mine.iloc[0] if len(mine) else None
            if any(col == flag for flag, _ in FLAG_COLUMNS):
                cells.append("yes" if _is_set(v) else "")
            else:
                cells.append("" if _is_missing(v) else f"{float(v):.3g}")
        table.add_row(*cells)
    return table


def summary_table(summary: pd.DataFrame, title: str = "summary") -> Group:
    """The end-of-run summary: one compact rich table per workload (medians over repetitions of
    summary.csv), a row per cell and a column per metric × protocol, units in the headers."""
    workloads = [str(w) for w in summary["workload"].dropna().unique()]
    order = list(SUMMARY_COLUMNS)
    workloads.sort(key=lambda w: (order.index(w) if w in order else len(order), w))
    tables = [_workload_table(w, summary[summary["workload"] == w]) for w in workloads]
    return Group(Text(title, style="bold"), *tables)
