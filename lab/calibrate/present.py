"""How `lab calibrate` shows itself: the result as a rich table, progress as rich bars."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table

from lab.calibrate.result import CalibrationResult

ProgressFn = Callable[[str, float, float], None]  # (phase, done, total)


def result_table(result: CalibrationResult) -> Table:
    """A rich table: configured next to measured, tolerance, PASS/FAIL/info."""
    m = result.measurement
    verdict = "[green]PASS[/]" if result.ok else "[red]FAIL[/]"
    t = Table(
        title=f"calibrate {escape(result.scenario)} \\[{result.cell}] — {m.backend}, "
        f"{m.address_family}, seed {m.seed}: {verdict} ({m.elapsed_s:.1f} s)",
        title_justify="left",
    )
    for col in ("check", "direction", "configured", "measured", "tolerance", "result", "note"):
        t.add_column(col, overflow="fold")
    for c in result.checks:
        res = "[dim]info[/]" if c.ok is None else ("[green]pass[/]" if c.ok else "[red]FAIL[/]")
        t.add_row(c.name, c.direction, c.configured, c.measured, c.tolerance, res, c.note)
    return t


@contextlib.contextmanager
def rich_progress(enabled: bool = True) -> Iterator[ProgressFn | None]:
    """A ProgressFn drawing one rich progress bar per phase on stderr (None when disabled)."""
    if not enabled:
        yield None
        return
    bars: dict[str, TaskID] = {}
    with Progress(
        TextColumn("{task.description:<14}"),
        BarColumn(),
        TextColumn("{task.completed:g}/{task.total:g}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        refresh_per_second=4,
        transient=False,
    ) as bar:

        def update(phase: str, done: float, total: float) -> None:
            if phase not in bars:
                bars[phase] = bar.add_task(phase, total=total)
            bar.update(bars[phase], completed=done, total=total)

        yield update
