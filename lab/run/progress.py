"""Progress display of `lab run`: cells done/total, ETA and the current cell.

On a terminal a rich progress bar; otherwise (CI, pipes) one plain line per cell.
Also the end-of-run summary table.
"""

from __future__ import annotations

import math
import time

import pandas as pd
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from lab.run.records import CellOutcome
from lab.run.runner import Hooks
from lab.scenario.models import Cell


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


SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("ttfb_rtt_cold", "TTFB cold (RTT)"),
    ("ttfb_rtt_zero_rtt", "TTFB 0-RTT (RTT)"),
    ("early_data_fraction_zero_rtt", "early data"),
    ("hol_spread", "HOL spread"),
    ("stalled_fraction", "stalled"),
    ("excess_p99_ms", "excess p99 (ms)"),
    ("goodput_mbit", "goodput (Mbit/s)"),
    ("rpc_p95_ms", "rpc p95 (ms)"),
    ("cpu_bound", "cpu-bound"),
)


def summary_table(
    summary: pd.DataFrame, title: str = "summary (medians over repetitions)"
) -> Table:
    """A short rich table of the key metrics per cell × protocol × workload."""
    table = Table(title=title)
    present = [(c, h) for c, h in SUMMARY_COLUMNS if c in summary.columns]
    for head in ("cell", "protocol", "workload"):
        table.add_column(head)
    for _, head in present:
        table.add_column(head, justify="right")
    for _, r in summary.iterrows():
        cells = [str(r["cell"]), str(r["protocol"]), str(r["workload"])]
        for col, _ in present:
            v = r[col]
            if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
                cells.append("")
            elif isinstance(v, bool | float) and col == "cpu_bound":
                cells.append("yes" if bool(v) else "")
            else:
                cells.append(f"{float(v):.3g}")
        table.add_row(*cells)
    return table
