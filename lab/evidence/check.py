"""`lab check`: gate a run on thresholds (for CI). Pure evaluation plus a JUnit XML writer.

A thresholds file (YAML) is a list of claims, each a bound on one statistic of one metric:

    thresholds:
      - name: h3-hol-spread-16-streams
        claim: HTTP/3 confines a loss to the stream that lost data
        workload: watch
        metric: hol_spread
        protocol: h3
        where: {watch.streams: 16}     # matrix-axis values (exact; numbers compared with isclose)
        statistic: median              # median | mean | min | max | p<N>, e.g. p95, p99.9
        over: repetitions              # repetitions (per-repetition medians) | samples (pooled)
        pool_cells: false              # true: one value over all matching cells together
        max: 0.25                      # and/or min

`ratio: h3/h2` instead of `protocol` bounds statistic(h3) / statistic(h2). A threshold is
evaluated in every cell it matches and holds only when it holds in all of them; one that matches
no data is an error, never a pass. HOL-spread values that mean nothing are left out
(lab.evidence.verdicts.defined_hol_spread: schema-1 repetitions without a stalled event; the
loss-anchored spread of schema 2 is written only where a loss was counted, and 0 there is real).
A cell whose h2 and h3 senders used different congestion controllers (measured, run.json;
lab.evidence.claims.controller_mismatches) is flagged in every result that reads it, as a
cpu_bound one is: the comparison there measures the controllers too. So is a congestion_limited
cell (a sender congestion-window limited for much of the probe: it measures congestion control,
not HOL blocking), and a host_busy one (other processes took CPU beside the measured ones).
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from lab.errors import ThresholdFileError
from lab.evidence.claims import controller_mismatches
from lab.evidence.significance import cpu_bound_rows, per_repetition, with_link_columns
from lab.evidence.verdicts import FLAG_MEANINGS, defined_hol_spread, effective_mode
from lab.results.reader import load
from lab.results.schema import AGGREGATE_METRICS, SAMPLE_METRICS
from lab.scenario.workloads import WORKLOAD_KINDS
from lab.scenario.yamlpos import YamlError, load_yaml

Status = Literal["pass", "fail", "error"]
POOLED = "all matching cells"  # the cell label of a `pool_cells: true` threshold
_STATISTIC = re.compile(r"^(median|mean|min|max|p(\d{1,2}(\.\d+)?|100))$")
AxisValue = float | int | str | bool
KNOWN_METRICS: frozenset[str] = SAMPLE_METRICS | AGGREGATE_METRICS
CONGESTION_LIMITED_NOTE = "measures congestion control, not HOL blocking"


def _one_of(what: str, value: str, known: Collection[str]) -> str:
    """`value` when it is in `known`, else a ValueError listing them."""
    if value not in known:
        raise ValueError(f"unknown {what} {value!r}; known: {', '.join(known)}")
    return value


class Threshold(BaseModel):
    """One claim: `statistic` of `metric` within [min, max] in every matching cell."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1)
    claim: str | None = None
    workload: str
    metric: str
    protocol: Literal["h2", "h3"] | None = None
    ratio: Literal["h3/h2"] | None = None
    mode: Literal["cold", "resumed", "zero_rtt"] | None = None
    implementation: str | None = None
    where: dict[str, AxisValue] = Field(default_factory=dict)
    statistic: str = "median"
    over: Literal["repetitions", "samples"] = "repetitions"
    # True: one verdict over every matching cell's values together (for a workload that the
    # matrix does not vary, e.g. bulk across watch.streams cells: its cells are repetitions)
    pool_cells: bool = False
    min: float | None = None
    max: float | None = None

    @field_validator("workload")
    @classmethod
    def _known_workload(cls, v: str) -> str:
        return _one_of("workload", v, WORKLOAD_KINDS)

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, v: str) -> str:
        return _one_of("metric", v, sorted(KNOWN_METRICS))

    @field_validator("statistic")
    @classmethod
    def _statistic(cls, v: str) -> str:
        if not _STATISTIC.match(v):
            raise ValueError("statistic must be median, mean, min, max or p<N> (e.g. p95)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> Threshold:
        if self.min is None and self.max is None:
            raise ValueError("give max, min or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is larger than max")
        if (self.protocol is None) == (self.ratio is None):
            raise ValueError("give exactly one of protocol (absolute) or ratio: h3/h2")
        if self.over == "samples" and self.metric in AGGREGATE_METRICS:
            raise ValueError(f"{self.metric} is one value per repetition; use over: repetitions")
        return self

    def bound_text(self) -> str:
        """e.g. "≤ 0.25", "≥ 0.8", "in [1, 2]"."""
        if self.min is not None and self.max is not None:
            return f"in [{self.min:g}, {self.max:g}]"
        return f"≤ {self.max:g}" if self.max is not None else f"≥ {self.min:g}"

    def subject(self) -> str:
        """e.g. "median of h3 hol_spread (watch) where watch.streams=16"."""
        who = self.ratio or self.protocol
        s = f"{self.statistic} over {self.over} of {who} {self.metric} ({self.workload}"
        s += f", {self.mode})" if self.mode else ")"
        if self.where:
            s += " where " + ", ".join(f"{k}={v}" for k, v in self.where.items())
        return s


class ThresholdFile(BaseModel):
    """The top level of a thresholds file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    thresholds: list[Threshold] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> ThresholdFile:
        seen: set[str] = set()
        for t in self.thresholds:
            if t.name in seen:
                raise ValueError(f"duplicate threshold name {t.name!r}")
            seen.add(t.name)
        return self


@dataclass(frozen=True)
class LoadedThreshold:
    """A threshold with the line it was declared on."""

    threshold: Threshold
    file: str
    line: int


def load_thresholds(path: str | Path) -> list[LoadedThreshold]:
    """Read and validate a thresholds file; raises ThresholdFileError ("file:line: reason")."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ThresholdFileError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data, lines = load_yaml(text, str(path))
    except YamlError as exc:
        raise ThresholdFileError(str(exc)) from None
    try:
        parsed = ThresholdFile.model_validate(data if data is not None else {})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function")))
        where = ".".join(str(p) for p in loc) or "file"
        msg = err["msg"].removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ThresholdFileError(f"{path}:{lines.line(loc)}: {where}: {msg}{more}") from None
    return [
        LoadedThreshold(t, str(path), lines.line(("thresholds", i)))
        for i, t in enumerate(parsed.thresholds)
    ]


# --- evaluation ---------------------------------------------------------------------------
def statistic(values: np.ndarray, name: str) -> float:
    """median | mean | min | max | p<N> of `values` (NaN when empty)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    if name == "median":
        return float(np.median(v))
    if name == "mean":
        return float(np.mean(v))
    if name == "min":
        return float(np.min(v))
    if name == "max":
        return float(np.max(v))
    return float(np.percentile(v, float(name[1:])))


@dataclass(frozen=True)
class CellValue:
    """The observed statistic in one cell; `ok` False when it breaks the bound."""

    cell: str
    value: float
    ok: bool
    n: int  # repetitions (or samples) behind the value, smallest side for a ratio
    cpu_bound: bool = False
    different_controllers: bool = False  # h2's and h3's senders used different ones
    congestion_limited: bool = False  # a sender was congestion-window limited in a repetition
    host_busy: bool = False  # other processes took over HOST_BUSY_LIMIT cores in a repetition


@dataclass(frozen=True)
class ThresholdResult:
    """The outcome of one threshold on one run."""

    loaded: LoadedThreshold
    status: Status
    cells: tuple[CellValue, ...] = field(default=())
    message: str = ""

    @property
    def name(self) -> str:
        return self.loaded.threshold.name

    def observed_text(self) -> str:
        """The worst observed value and its cell, e.g. "0.31 (c007)"."""
        bad = [c for c in self.cells if not c.ok] or list(self.cells)
        if not bad:
            return "—"
        t = self.loaded.threshold
        worst = max(bad, key=lambda c: c.value) if t.max is not None else min(bad, key=_val)
        return f"{worst.value:.4g} ({worst.cell})"


def _val(c: CellValue) -> float:
    return c.value


def _matches(series: pd.Series, want: AxisValue) -> pd.Series:
    if isinstance(want, bool | str):
        return series.astype(object) == want
    num = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float)
    return pd.Series(np.isclose(num, float(want), rtol=1e-9, atol=1e-12), index=series.index)


def _select(samples: pd.DataFrame, t: Threshold) -> tuple[pd.DataFrame, str]:
    """Rows the threshold reads, or an empty frame and the reason."""
    rows = samples[(samples["workload"] == t.workload) & (samples["metric"] == t.metric)]
    if rows.empty:
        return rows, f"no {t.metric} samples for workload {t.workload}"
    for axis, want in t.where.items():
        if axis not in rows.columns:
            return rows.iloc[0:0], f"the run has no matrix axis {axis!r}"
        rows = rows[_matches(rows[axis], want)]
        if rows.empty:
            return rows, f"no cell has {axis}={want}"
    if t.implementation is not None:
        rows = rows[rows["implementation"] == t.implementation]
        if rows.empty:
            return rows, f"no data from implementation {t.implementation!r}"
    if t.mode is not None:
        rows = rows[effective_mode(rows) == t.mode]
        if rows.empty:
            extra = " with early data (0-RTT proven by the server)" if t.mode == "zero_rtt" else ""
            return rows, f"no samples in mode {t.mode}{extra}"
    if t.protocol is not None:
        rows = rows[rows["protocol"] == t.protocol]
        if rows.empty:
            return rows, f"no {t.protocol} samples"
    if t.metric == "hol_spread":
        rows = defined_hol_spread(samples, rows)
        if rows.empty:
            return rows, "no repetition had a stalled event (HOL spread undefined)"
    rows = rows[rows["value"].notna()]
    return rows, "" if len(rows) else "all matching values are missing"


def _values(rows: pd.DataFrame, t: Threshold, protocol: str) -> np.ndarray:
    rows = rows[rows["protocol"] == protocol]
    if t.over == "samples":
        return rows["value"].to_numpy(dtype=float)
    return per_repetition(rows, t.metric, by=["cell"])["value"].to_numpy(dtype=float)


def _cpu_bound_cells(samples: pd.DataFrame, workload: str) -> set[str]:
    return set(cpu_bound_rows(samples, workload)["cell"].astype(str))


def _flagged_cells(samples: pd.DataFrame, workload: str, flag: str) -> set[str]:
    """Cells of `workload` with a repetition whose `flag` row (e.g. congestion_limited) is set."""
    rows = samples[
        (samples["metric"] == flag) & (samples["workload"] == workload) & (samples["value"] > 0.5)
    ]
    return set(rows["cell"].astype(str))


Unobserved = Literal["one-sided", "0/0"]


def _observed(g: pd.DataFrame, t: Threshold) -> tuple[float, int] | Unobserved:
    """The threshold's statistic in one group of rows (a cell, or all cells pooled) and the
    number of values behind it (the smaller side for a ratio). For a ratio: "one-sided" when a
    protocol has no values, "0/0" when both statistics are 0 (e.g. no stalls at all)."""
    if t.ratio is None:
        a = _values(g, t, str(t.protocol))
        return statistic(a, t.statistic), int(a.size)
    a, b = _values(g, t, "h3"), _values(g, t, "h2")
    if a.size == 0 or b.size == 0:
        return "one-sided"
    num, den = statistic(a, t.statistic), statistic(b, t.statistic)
    if den == 0 and num == 0:
        return "0/0"
    return (num / den if den != 0 else float("inf")), int(min(a.size, b.size))


def _within(value: float, t: Threshold) -> bool:
    """True when `value` is a number inside the threshold's bounds."""
    return (
        not math.isnan(value)
        and (t.max is None or value <= t.max)
        and (t.min is None or value >= t.min)
    )


def evaluate(
    samples: pd.DataFrame,
    loaded: LoadedThreshold,
    *,
    controllers: Mapping[str, str] | None = None,
) -> ThresholdResult:
    """Evaluate one threshold on a run's samples (results format). `controllers`: cell → why
    its two senders used different congestion controllers (those cells are flagged)."""
    t = loaded.threshold
    controllers = controllers or {}
    rows, why = _select(samples, t)
    if rows.empty:
        return ThresholdResult(loaded, "error", message=f"matches no data: {why}")
    bound = _cpu_bound_cells(samples, t.workload)
    limited = _flagged_cells(samples, t.workload, "congestion_limited")
    busy = _flagged_cells(samples, t.workload, "host_busy")
    cells: list[CellValue] = []
    mixed: dict[str, str] = {}  # flagged cells among those read: cell → the confound
    left_out: dict[Unobserved, list[str]] = {"one-sided": [], "0/0": []}
    groups = [(POOLED, rows)] if t.pool_cells else rows.groupby("cell", sort=True)
    for cell, g in groups:
        got = _observed(g, t)
        if isinstance(got, str):
            left_out[got].append(str(cell))
            continue
        value, n = got
        read = set(g["cell"].astype(str))
        cpu_bound = bool(bound & read)
        mine = {c: controllers[c] for c in sorted(read) if c in controllers}
        mixed.update(mine)
        cells.append(
            CellValue(
                str(cell),
                value,
                _within(value, t),
                n,
                cpu_bound,
                bool(mine),
                congestion_limited=bool(limited & read),
                host_busy=bool(busy & read),
            )
        )
    result = _result(loaded, cells, skipped=left_out["one-sided"], undefined=left_out["0/0"])
    return _with_controller_note(result, mixed)


def _with_controller_note(result: ThresholdResult, mixed: Mapping[str, str]) -> ThresholdResult:
    """`result` with a note naming the cells whose senders used different controllers."""
    if not mixed or result.status == "error":
        return result
    note = "different congestion controllers in " + ", ".join(
        f"{c} ({text.removeprefix('different congestion controllers: ')})"
        for c, text in mixed.items()
    )
    return ThresholdResult(result.loaded, result.status, result.cells, f"{result.message}; {note}")


def _result(
    loaded: LoadedThreshold, cells: list[CellValue], *, skipped: list[str], undefined: list[str]
) -> ThresholdResult:
    """Status and message from the per-cell values and the cells left out of a ratio
    (`skipped`: a protocol without values; `undefined`: h3 and h2 both 0)."""
    if not cells:
        why = "no cell has both h2 and h3 values"
        if undefined:
            why = f"h3 and h2 are both 0 in every matching cell ({', '.join(undefined)})"
        return ThresholdResult(loaded, "error", message=f"matches no data: {why}")
    notes = []
    if skipped:
        notes.append(f"cells without both protocols skipped: {', '.join(skipped)}")
    if undefined:
        notes.append(f"cells where h3 and h2 are both 0 skipped: {', '.join(undefined)}")
    if any(c.cpu_bound for c in cells):
        notes.append("some cells were cpu_bound")
    limited = [c.cell for c in cells if c.congestion_limited]
    if limited:
        notes.append(f"congestion_limited in {', '.join(limited)}: {CONGESTION_LIMITED_NOTE}")
    busy = [c.cell for c in cells if c.host_busy]
    if busy:
        notes.append(f"host_busy in {', '.join(busy)}: {FLAG_MEANINGS['host_busy']}")
    failed = [c for c in cells if not c.ok]
    if failed:
        where = ", ".join(f"{c.cell}={c.value:.4g}" for c in failed[:3])
        more = f" (+{len(failed) - 3} more)" if len(failed) > 3 else ""
        bound = loaded.threshold.bound_text()
        msg = f"{len(failed)} of {len(cells)} cells break {bound}: {where}{more}"
        return ThresholdResult(loaded, "fail", tuple(cells), "; ".join([msg, *notes]))
    msg = f"holds in {len(cells)} cell{'s' if len(cells) != 1 else ''}"
    return ThresholdResult(loaded, "pass", tuple(cells), "; ".join([msg, *notes]))


@dataclass(frozen=True)
class CheckReport:
    """Every threshold's result; `exit_code` 0 when all pass, 1 otherwise."""

    results: tuple[ThresholdResult, ...]
    # cell → why its h2 and h3 senders used different congestion controllers (the whole run)
    controller_flags: Mapping[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 0 if all(r.status == "pass" for r in self.results) else 1

    def count(self, status: Status) -> int:
        return sum(r.status == status for r in self.results)


def check(
    samples: pd.DataFrame,
    thresholds: list[LoadedThreshold],
    *,
    controllers: Mapping[str, str] | None = None,
) -> CheckReport:
    """Evaluate every threshold on a run's samples; `controllers` as for `evaluate`."""
    results = tuple(evaluate(samples, t, controllers=controllers) for t in thresholds)
    return CheckReport(results, dict(controllers or {}))


# --- JUnit XML ----------------------------------------------------------------------------
def junit_xml(report: CheckReport, run_id: str) -> bytes:
    """JUnit XML (one testcase per threshold; failure / error elements) as UTF-8 bytes."""
    suites = ET.Element("testsuites", name="lab check")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"lab check {run_id}",
        tests=str(len(report.results)),
        failures=str(report.count("fail")),
        errors=str(report.count("error")),
        skipped="0",
        time="0",
    )
    for r in report.results:
        t = r.loaded.threshold
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"lab.check.{t.workload}",
            name=t.name,
            file=r.loaded.file,
            line=str(r.loaded.line),
            time="0",
        )
        detail = f"{t.subject()} {t.bound_text()}\n{r.message}"
        if t.claim:
            detail = f"claim: {t.claim}\n{detail}"
        if r.status == "fail":
            el = ET.SubElement(case, "failure", message=r.message, type="ThresholdFailed")
            el.text = detail
        elif r.status == "error":
            el = ET.SubElement(case, "error", message=r.message, type="NoData")
            el.text = detail
        out = ET.SubElement(case, "system-out")
        out.text = detail + "".join(
            f"\n  {c.cell}: {c.value:.6g} (n={c.n}){' cpu_bound' if c.cpu_bound else ''}"
            f"{' different_controllers' if c.different_controllers else ''}"
            f"{' congestion_limited' if c.congestion_limited else ''}"
            f"{' host_busy' if c.host_busy else ''}"
            for c in r.cells
        )
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def with_scenario_fields(
    samples: pd.DataFrame, meta: dict[str, Any], keys: set[str]
) -> pd.DataFrame:
    """Add a constant column for each `<kind>.<field>` key that is not a matrix axis but a fixed
    field of the scenario's workload of that kind (e.g. `watch.streams: 16` without a sweep),
    so a `where` on it matches every cell."""
    workloads = (meta.get("scenario") or {}).get("workloads") or []
    extra: dict[str, Any] = {}
    for key in keys:
        if key in samples.columns or "." not in key:
            continue
        kind, fld = key.split(".", 1)
        for w in workloads:
            if isinstance(w, dict) and w.get("kind") == kind and fld in w:
                extra[key] = w[fld]
                break
    return samples.assign(**extra) if extra else samples


# --- entry points for the CLI -------------------------------------------------------------
def check_run(run_dir: str | Path, thresholds_file: str | Path) -> tuple[CheckReport, bytes]:
    """Load a run and a thresholds file, evaluate; returns (report, JUnit XML bytes).
    Raises ThresholdFileError (bad file) or lab.errors.ResultsError (not a run)."""
    loaded = load_thresholds(thresholds_file)
    run = load(run_dir)
    samples = with_link_columns(run.samples, run.meta)
    keys = {k for t in loaded for k in t.threshold.where}
    report = check(
        with_scenario_fields(samples, run.meta, keys),
        loaded,
        controllers=controller_mismatches(run.meta),
    )
    return report, junit_xml(report, str(run.meta.get("run_id", Path(run_dir).name)))


def result_table(report: CheckReport) -> Any:
    """A rich Table: every threshold that did not pass (or one line saying all passed)."""
    from rich.table import Table  # deferred: rich is only needed for the CLI's table

    bad = [r for r in report.results if r.status != "pass"]
    title = (
        f"lab check: {report.count('pass')} passed, {report.count('fail')} failed, "
        f"{report.count('error')} errors"
    )
    if report.controller_flags:
        title += f"; {len(report.controller_flags)} cell(s) with different congestion controllers"
    table = Table(title=title, show_lines=True)
    for col in ("status", "threshold", "checks", "observed (worst cell)", "detail"):
        table.add_column(col, overflow="fold")
    for r in bad or report.results:
        t = r.loaded.threshold
        style = {"pass": "green", "fail": "red", "error": "yellow"}[r.status]
        table.add_row(
            f"[{style}]{r.status.upper()}[/{style}]",
            f"{t.name}\n{Path(r.loaded.file).name}:{r.loaded.line}",
            f"{t.subject()} {t.bound_text()}",
            r.observed_text(),
            r.message,
        )
    return table
