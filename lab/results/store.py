"""The versioned on-disk results format: `results/<run-id>/`; `load()` returns pandas.

Layout (schema version 1; see docs/results.md):

- `run.json`       metadata, status ("running" | "complete" | "interrupted") and the
                   (cell, repetition) pairs completed so far; rewritten atomically.
- `parts/`         one parquet file per `append_samples` call and (cell, repetition): the durable
                   record while a run is going on (nothing finished is lost on interruption).
- `samples.parquet` the consolidated long-format samples, written by `finish()`.
- `summary.csv`    one row per cell × protocol × workload × implementation (`summarise`).
- `errors.json`    failed cells, a list of {"cell", "repetition", "protocol", "workload", "error"}.

An existing run directory is never overwritten.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from lab.errors import ResultsError

SCHEMA_VERSION = 1

# The index columns of samples.parquet, declared once (pyam style).
SAMPLE_KEYS: tuple[str, ...] = ("cell", "repetition", "protocol", "workload", "stream", "metric")
VALUE_COLUMNS: tuple[str, ...] = ("value", "unit")
OPTIONAL_COLUMNS: tuple[str, ...] = ("mode", "early_data", "implementation")
# Every column that is not one of these is a matrix axis (named exactly as the axis key).
KNOWN_COLUMNS: frozenset[str] = frozenset(SAMPLE_KEYS + VALUE_COLUMNS + OPTIONAL_COLUMNS)

# Per-sample metrics (many rows per cell/repetition) and aggregates (one row per
# cell/repetition/protocol/workload, stream <NA>).
SAMPLE_METRICS: frozenset[str] = frozenset(
    {
        "ttfb_ms",
        "ttfb_rtt",
        "goodput_mbit",
        "completion_ms",
        "event_latency_ms",
        "event_excess_ms",
        "rpc_latency_ms",
    }
)
AGGREGATE_METRICS: frozenset[str] = frozenset(
    {
        "hol_spread",
        "stalled_fraction",
        "excess_p50_ms",
        "excess_p95_ms",
        "excess_p99_ms",
        "excess_p999_ms",
        "rpc_delayed_fraction",
        "rpc_p95_ms",
        "utilisation",
        "cpu_server_s",
        "cpu_client_s",
        "cpu_emulator_s",
        "cpu_bound",
    }
)
MODES: tuple[str, ...] = ("cold", "resumed", "zero_rtt")
UNITS: frozenset[str] = frozenset({"ms", "rtt", "Mbit/s", "fraction", "s", "bool"})

RunStatus = Literal["running", "complete", "interrupted"]
Pair = tuple[str, int]

_TEXT = "str"  # pandas' default text dtype (never missing in these columns)
_DTYPES: dict[str, Any] = {
    "cell": _TEXT,
    "repetition": "int64",
    "protocol": _TEXT,
    "workload": _TEXT,
    "stream": "Int64",
    "metric": _TEXT,
    "value": "float64",
    "unit": _TEXT,
    "mode": "string",  # NA-aware: <NA> when not a handshake sample
    "early_data": "boolean",
    "implementation": _TEXT,
}
_LIBRARIES = ("trio", "h2", "aioquic", "qh3", "numpy", "pandas", "pyarrow", "pyroute2")


# --- sample frames ------------------------------------------------------------------------
def samples_frame(rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Build a samples DataFrame from dicts (or a frame) with the contract's dtypes.

    Required columns: SAMPLE_KEYS (`stream` may be omitted → <NA>), `value`, `unit`.
    Optional `mode` (string/<NA>), `early_data` (boolean/<NA>), `implementation` (default
    "reference"); any other column is kept as a matrix axis. Raises ResultsError on a
    missing column or an unknown mode/unit.
    """
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if df.empty and not len(df.columns):
        df = pd.DataFrame({c: pd.Series([], dtype=object) for c in _DTYPES})
    if "stream" not in df.columns:
        df["stream"] = pd.NA
    if "implementation" not in df.columns:
        df["implementation"] = "reference"
    for col in ("mode", "early_data"):
        if col not in df.columns:
            df[col] = pd.NA
    missing = [c for c in (*SAMPLE_KEYS, *VALUE_COLUMNS) if c not in df.columns]
    if missing:
        raise ResultsError(f"samples lack column(s) {missing}")
    out = _enforce_dtypes(df)
    for col in ("cell", "repetition", "protocol", "workload", "metric", "unit"):
        if out[col].isna().any():
            raise ResultsError(f"samples have a missing {col!r}")
    bad_units = set(out["unit"].unique()) - UNITS
    if bad_units:
        raise ResultsError(f"unknown unit(s) {sorted(bad_units)}; allowed {sorted(UNITS)}")
    bad_modes = set(out["mode"].dropna().unique()) - set(MODES)
    if bad_modes:
        raise ResultsError(f"unknown mode(s) {sorted(bad_modes)}; allowed {list(MODES)}")
    return out


def _enforce_dtypes(df: pd.DataFrame) -> pd.DataFrame:
    """Cast the known columns to their dtypes; key/value columns first, axes after."""
    out = df.copy()
    for col, dtype in _DTYPES.items():
        if col not in out.columns:
            continue
        series = out[col]
        if dtype in ("Int64", "boolean", "string"):  # nullable: any missing marker → <NA>
            series = series.astype("object").where(series.notna(), None)
        try:
            out[col] = series.astype(dtype)
        except (TypeError, ValueError) as exc:
            raise ResultsError(f"column {col!r} is not {dtype}: {exc}") from exc
    order = [c for c in _DTYPES if c in out.columns]
    axes = [c for c in out.columns if c not in KNOWN_COLUMNS]
    return out[order + axes].reset_index(drop=True)


def axis_columns(df: pd.DataFrame) -> list[str]:
    """The matrix-axis columns of a samples or summary frame (every non-contract column)."""
    summary_cols = {"n_repetitions"}
    return [
        c
        for c in df.columns
        if c not in KNOWN_COLUMNS
        and c not in summary_cols
        and c not in SAMPLE_METRICS
        and c not in AGGREGATE_METRICS
        and not _is_mode_column(c)
    ]


def _is_mode_column(col: str) -> bool:
    return any(col.endswith(f"_{m}") for m in MODES) or col == "early_data_fraction"


# --- summary ------------------------------------------------------------------------------
def summarise(samples: pd.DataFrame) -> pd.DataFrame:
    """summary.csv: one row per cell × protocol × workload × implementation.

    Columns: cell, protocol, workload, implementation, the axis columns, `n_repetitions`, then
    per metric the median over repetitions of (aggregates) the value or (per-sample metrics)
    the repetition's median. Per-sample metrics that carry a handshake `mode` become one
    column per mode, `<metric>_<mode>` (e.g. `ttfb_rtt_zero_rtt`), since mixing modes in one
    median means nothing; `early_data_fraction_<mode>` is the median over repetitions of the
    fraction of that mode's samples the server saw as early data. `cpu_bound` is True when
    any repetition was CPU-bound.
    """
    df = samples_frame(samples) if len(samples) else samples
    group = ["cell", "protocol", "workload", "implementation"]
    if df.empty:
        return pd.DataFrame(columns=[*group, "n_repetitions"])
    axes = axis_columns(df)
    col = df["metric"].astype(object).copy()
    has_mode = df["mode"].notna().to_numpy()
    col[has_mode] = col[has_mode] + "_" + df.loc[has_mode, "mode"].astype(object)
    df = df.assign(_col=col.to_numpy())

    per_rep = df.groupby([*group, "repetition", "_col"], sort=True)["value"].median()
    table = per_rep.groupby(level=[*group, "_col"]).median().unstack("_col")
    if "cpu_bound" in table.columns:
        any_bound = (
            df[df["metric"] == "cpu_bound"].groupby(group)["value"].max().reindex(table.index)
        )
        table["cpu_bound"] = (any_bound > 0.5).astype("boolean")
    if has_mode.any():
        hs = df[has_mode & df["early_data"].notna().to_numpy()]
        if not hs.empty:
            frac = (
                hs.assign(_ed=hs["early_data"].astype(float), _m=hs["mode"].astype(object))
                .groupby([*group, "_m", "repetition"])["_ed"]
                .mean()
                .groupby(level=[*group, "_m"])
                .median()
                .unstack("_m")
            )
            frac.columns = [f"early_data_fraction_{m}" for m in frac.columns]
            table = table.join(frac)
    n_rep = df.groupby(group)["repetition"].nunique().rename("n_repetitions")
    first_axes = df.groupby(group)[axes].first() if axes else None
    out = n_rep.to_frame()
    if first_axes is not None:
        out = first_axes.join(out)
    out = out.join(table).reset_index()
    out.columns.name = None
    metric_cols = sorted(c for c in out.columns if c not in {*group, *axes, "n_repetitions"})
    return out[[*group, *axes, "n_repetitions", *metric_cols]]


# --- environment --------------------------------------------------------------------------
def environment_info() -> dict[str, Any]:
    """Kernel, iproute2, Python and library versions, CPU count (for run.json)."""
    uname = os.uname()
    libs: dict[str, str | None] = {}
    for name in _LIBRARIES:
        try:
            libs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            libs[name] = None
    return {
        "kernel": f"{uname.sysname} {uname.release} {uname.version} {uname.machine}",
        "iproute2": _iproute2_version(),
        "python": platform.python_version(),
        "libraries": libs,
        "host_cpus": os.cpu_count(),
    }


def _iproute2_version() -> str | None:
    try:
        out = subprocess.run(["ip", "-V"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"iproute2[-\s]?([\w.]+)", out.stdout + out.stderr)
    return m.group(1) if m else (out.stdout.strip() or None)


def git_commit(repo: Path | None = None) -> str | None:
    """The HEAD commit of the checkout holding `repo` (default: this package), "+dirty" when
    there are uncommitted changes; None outside a git checkout."""
    where = repo or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = head.stdout.strip()
    return commit + ("+dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def make_run_id(name: str, when: datetime, suffix: str) -> str:
    """`YYYYmmdd-HHMMSS-<name>-<suffix>`, e.g. 20261126-213000-lossy-3f2a (when in UTC)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"
    return f"{when.strftime('%Y%m%d-%H%M%S')}-{slug}-{suffix}"


# --- atomic writes ------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _atomic_write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    _atomic_write_bytes(path, text.encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, datetime):
        return obj.isoformat()
    if hasattr(obj, "model_dump"):  # pydantic models
        return obj.model_dump(mode="json")
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _atomic_write_parquet(path: Path, df: pd.DataFrame) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        df.to_parquet(tmp, index=False)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


# --- writer -------------------------------------------------------------------------------
class RunWriter:
    """Writes one run directory. Create with `RunWriter.create(...)` or `open_for_resume()`.

    Not thread-safe; the runner calls it from its one event loop. Every method leaves the
    directory loadable: parts are written before run.json names their pair completed.
    """

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = Path(path)
        self.meta = meta
        self._completed: set[Pair] = {(c, int(r)) for c, r in meta.get("completed", [])}
        self._errors: list[dict[str, Any]] = []
        self._seq = 0

    # construction ---------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        scenario: Mapping[str, Any],
        seed: int,
        cells: list[Mapping[str, Any]],
        scenario_file: str | os.PathLike[str] | None = None,
        impairment: Mapping[str, Any] | None = None,
        stacks: Mapping[str, Any] | None = None,
        environment: Mapping[str, Any] | None = None,
        git: str | None = None,
        extra: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> RunWriter:
        """Create `path` (its name is the run id) and write run.json with status "running".

        Raises ResultsError when `path` already exists (a run is never overwritten).
        `cells` are {"cell": "c000", "axes": {...}, "link": {...}} dicts; `extra` keys are
        added to run.json verbatim. `now` (UTC) defaults to the wall clock.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir()
        except FileExistsError:
            raise ResultsError(f"{path} already exists; a run is never overwritten") from None
        meta: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "run_id": path.name,
            "created_utc": (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "scenario": _plain(scenario),
            "scenario_file": str(scenario_file) if scenario_file is not None else None,
            "seed": seed,
            "git_commit": git if git is not None else git_commit(),
            "environment": dict(environment) if environment is not None else environment_info(),
            "impairment": dict(impairment) if impairment is not None else {},
            "stacks": dict(stacks) if stacks is not None else {},
            "cells": [dict(c) for c in cells],
            **(dict(extra) if extra else {}),
            "status": "running",
            "completed": [],
        }
        (path / "parts").mkdir()
        writer = cls(path, meta)
        writer._write_meta()
        writer._write_errors()
        return writer

    # state ----------------------------------------------------------------------------
    @property
    def run_id(self) -> str:
        return str(self.meta["run_id"])

    @property
    def completed(self) -> frozenset[Pair]:
        """The (cell, repetition) pairs already done (skip them when resuming)."""
        return frozenset(self._completed)

    def is_completed(self, cell: str, repetition: int) -> bool:
        return (cell, int(repetition)) in self._completed

    @property
    def errors(self) -> list[dict[str, Any]]:
        return list(self._errors)

    # writing --------------------------------------------------------------------------
    def append_samples(self, df: pd.DataFrame) -> list[Path]:
        """Durably write samples (one parquet part per (cell, repetition) present in `df`).

        `df` is coerced with `samples_frame`. Returns the part files written.
        """
        frame = samples_frame(df)
        if frame.empty:
            return []
        written = []
        for (cell, rep), part in frame.groupby(["cell", "repetition"], sort=True):
            while True:  # never replace an existing part (e.g. after a resume)
                self._seq += 1
                name = f"{_safe(str(cell))}-r{int(rep)}-{os.getpid()}-{self._seq:06d}.parquet"
                target = self.path / "parts" / name
                if not target.exists():
                    break
            _atomic_write_parquet(target, part.reset_index(drop=True))
            written.append(target)
        return written

    def mark_completed(self, cell: str, repetition: int) -> None:
        """Record that every sample of (cell, repetition) is written; persisted at once."""
        self._completed.add((cell, int(repetition)))
        self._write_meta()

    def record_error(
        self, cell: str, repetition: int, protocol: str | None, workload: str | None, error: str
    ) -> None:
        """Record a failed cell in errors.json (persisted at once); the run goes on."""
        self._errors.append(
            {
                "cell": cell,
                "repetition": int(repetition),
                "protocol": protocol,
                "workload": workload,
                "error": str(error),
            }
        )
        self._write_errors()

    def update_meta(self, **fields: Any) -> None:
        """Set top-level run.json fields (e.g. impairment applied, stacks) and persist."""
        reserved = {"schema_version", "run_id", "status", "completed"}
        if reserved & fields.keys():
            raise ResultsError(f"cannot set {sorted(reserved & fields.keys())} directly")
        self.meta.update(fields)
        self._write_meta()

    def finish(self, status: RunStatus = "complete") -> RunResults:
        """Consolidate the parts into samples.parquet, write summary.csv, set the status.

        Only samples of completed pairs go into samples.parquet. With "complete" the parts
        directory is removed afterwards; with "interrupted" it is kept for `open_for_resume`.
        """
        samples = _read_parts(self.path / "parts", self._completed)
        _atomic_write_parquet(self.path / "samples.parquet", samples)
        summary = summarise(samples)
        _atomic_write_bytes(self.path / "summary.csv", summary.to_csv(index=False).encode())
        self._write_errors()
        self.meta["status"] = status
        self.meta["finished_utc"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._write_meta()
        if status == "complete":
            shutil.rmtree(self.path / "parts", ignore_errors=True)
        return RunResults(
            path=self.path,
            meta=dict(self.meta),
            samples=samples,
            summary=summary,
            errors=_errors_frame(self._errors),
        )

    # internals ------------------------------------------------------------------------
    def _write_meta(self) -> None:
        self.meta["completed"] = [[c, r] for c, r in sorted(self._completed)]
        _atomic_write_json(self.path / "run.json", self.meta)

    def _write_errors(self) -> None:
        _atomic_write_json(self.path / "errors.json", self._errors)


def _plain(obj: Any) -> Any:
    """A pydantic model as its JSON-mode dict; a mapping as a dict."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return dict(obj)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name)


def open_for_resume(path: str | os.PathLike[str]) -> RunWriter:
    """Reopen an interrupted (or complete) run to continue it.

    Parts of pairs not completed are deleted (those pairs are redone), as are their errors.
    When a finished run has no parts any more, samples.parquet is split back into parts so
    that a later `finish()` keeps them. The status becomes "running".
    """
    path = Path(path)
    meta = _read_meta(path)
    writer = RunWriter(path, meta)
    parts = path / "parts"
    if not parts.is_dir():
        parts.mkdir()
        consolidated = path / "samples.parquet"
        if consolidated.exists():
            writer.append_samples(pd.read_parquet(consolidated))
    for part in parts.glob("*.parquet"):
        pairs = _pairs_in(part)
        if not pairs <= writer.completed:
            part.unlink()
    writer._errors = [
        e for e in _read_errors(path) if (e["cell"], int(e["repetition"])) in writer.completed
    ]
    writer.meta["status"] = "running"
    writer._write_meta()
    writer._write_errors()
    return writer


def _pairs_in(part: Path) -> set[Pair]:
    df = pd.read_parquet(part, columns=["cell", "repetition"])
    return {(str(c), int(r)) for c, r in df.drop_duplicates().itertuples(index=False)}


# --- reading ------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunResults:
    """A loaded run: run.json as a dict, samples/summary/errors as DataFrames."""

    path: Path
    meta: dict[str, Any]
    samples: pd.DataFrame
    summary: pd.DataFrame
    errors: pd.DataFrame

    @property
    def status(self) -> str:
        return str(self.meta.get("status"))

    @property
    def completed(self) -> frozenset[Pair]:
        return frozenset((c, int(r)) for c, r in self.meta.get("completed", []))


def load(path: str | os.PathLike[str], *, include_partial: bool = False) -> RunResults:
    """Load a run directory.

    A complete run is read from samples.parquet and summary.csv. A run that is still running
    or was interrupted is read from its parts (samples.parquet may be stale or absent), only
    the completed (cell, repetition) pairs unless `include_partial`, and summarised afresh.
    """
    path = Path(path)
    meta = _read_meta(path)
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(f"{path}: schema_version {version!r}, this lab reads {SCHEMA_VERSION}")
    completed = {(c, int(r)) for c, r in meta.get("completed", [])}
    parts = path / "parts"
    consolidated = path / "samples.parquet"
    use_parts = parts.is_dir() and (meta.get("status") != "complete" or not consolidated.exists())
    if use_parts:
        samples = _read_parts(parts, None if include_partial else completed)
        summary = summarise(samples)
    elif consolidated.exists():
        samples = samples_frame(pd.read_parquet(consolidated))
        summary_file = path / "summary.csv"
        summary = pd.read_csv(summary_file) if summary_file.exists() else summarise(samples)
    else:
        samples = samples_frame([])
        summary = summarise(samples)
    return RunResults(
        path=path,
        meta=meta,
        samples=samples,
        summary=summary,
        errors=_errors_frame(_read_errors(path)),
    )


def _read_meta(path: Path) -> dict[str, Any]:
    run_json = path / "run.json"
    if not run_json.exists():
        raise ResultsError(f"{path} is not a run directory (no run.json)")
    try:
        meta = json.loads(run_json.read_text())
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{run_json}: {exc}") from exc
    if not isinstance(meta, dict):
        raise ResultsError(f"{run_json}: not a JSON object")
    return meta


def _read_errors(path: Path) -> list[dict[str, Any]]:
    f = path / "errors.json"
    if not f.exists():
        return []
    return list(json.loads(f.read_text()))


def _errors_frame(errors: list[dict[str, Any]]) -> pd.DataFrame:
    cols = ["cell", "repetition", "protocol", "workload", "error"]
    return pd.DataFrame(errors, columns=cols)


def _read_parts(parts: Path, keep: set[Pair] | frozenset[Pair] | None) -> pd.DataFrame:
    """Concatenate the part files (sorted by name), keeping only pairs in `keep` (None: all)."""
    files = sorted(parts.glob("*.parquet")) if parts.is_dir() else []
    frames = [pd.read_parquet(f) for f in files]
    frames = [f for f in frames if len(f)]
    if not frames:
        return samples_frame([])
    df = samples_frame(pd.concat(frames, ignore_index=True))
    if keep is not None:
        wanted = set(keep)
        mask = [(c, int(r)) in wanted for c, r in zip(df["cell"], df["repetition"], strict=True)]
        df = df[np.asarray(mask, dtype=bool)]
    return df.sort_values(["cell", "repetition"], kind="stable").reset_index(drop=True)
