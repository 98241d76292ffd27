"""The contract of a run directory: file names, columns, metric sets, dtypes, `samples_frame`.

Schema version 2; docs/results.md is the reference. Version 2 (issue 11): `hol_spread` is the
mean blast radius per loss, anchored on the emulator's drop log (absent without one), with its
interval, the loss counts and means beside it and one `loss_blast_radius` per counted loss; the
`count` unit; run.json's `link_model_reseeded_per_protocol`. Version-1 runs still load (their
`hol_spread` keeps its old per-stalled-event meaning; `lab.workloads.metrics.overlap_spread`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import pandas as pd

from lab.errors import ResultsError

SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS: tuple[int, ...] = (1, 2)  # what `load()` reads; runs resume only at 2

# The files of results/<run-id>/, relative to it (also the keys of run.json's `sha256`).
RUN_JSON = "run.json"
SAMPLES_FILE = "samples.parquet"
SUMMARY_FILE = "summary.csv"
ERRORS_FILE = "errors.json"
PARTS_DIR = "parts"
# Files rewritten in place by `finish()`; their SHA-256 is in run.json only once a run is
# finished ("complete" or "interrupted"), never while it is "running".
FINAL_FILES: tuple[str, ...] = (SAMPLES_FILE, SUMMARY_FILE, ERRORS_FILE)

RunStatus = Literal["running", "complete", "interrupted"]
RUN_STATUSES: tuple[RunStatus, ...] = ("running", "complete", "interrupted")
Pair = tuple[str, int]

# The index columns of samples.parquet, declared once (pyam style).
SAMPLE_KEYS: tuple[str, ...] = ("cell", "repetition", "protocol", "workload", "stream", "metric")
VALUE_COLUMNS: tuple[str, ...] = ("value", "unit")
OPTIONAL_COLUMNS: tuple[str, ...] = ("mode", "early_data", "implementation")
# Every column that is not one of these is a matrix axis (named exactly as the axis key).
KNOWN_COLUMNS: frozenset[str] = frozenset(SAMPLE_KEYS + VALUE_COLUMNS + OPTIONAL_COLUMNS)
# The key columns of summary.csv (then the axes, `n_repetitions` and the metric columns).
SUMMARY_KEYS: tuple[str, ...] = ("cell", "protocol", "workload", "implementation")
# The fields of every errors.json entry.
ERROR_FIELDS: tuple[str, ...] = ("cell", "repetition", "protocol", "workload", "error")

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
        "loss_blast_radius",
        "event_queue_ms",
        "event_rest_ms",
    }
)
AGGREGATE_METRICS: frozenset[str] = frozenset(
    {
        "hol_spread",
        "hol_spread_low",
        "hol_spread_high",
        "hol_losses",
        "hol_losses_unexposed",
        "hol_losses_overlapping",
        "hol_exposed_mean",
        "hol_stalled_mean",
        "hol_collateral_ms",
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
        "workload_wall_s",
        "cpu_host_s",
        "cpu_other_s",
        "host_busy",
        "sender_cwnd_limited_fraction",
        "congestion_limited",
        "departures_matched",
        "departures_unmatched",
        "departures_inconsistent",
        "queue_p50_ms",
        "queue_p99_ms",
        "rest_p50_ms",
        "rest_p99_ms",
        "queue_share",
    }
)
MODES: tuple[str, ...] = ("cold", "resumed", "zero_rtt")
UNITS: frozenset[str] = frozenset({"ms", "rtt", "Mbit/s", "fraction", "s", "bool", "count"})

_TEXT = "str"  # pandas' default text dtype (never missing in these columns)
DTYPES: dict[str, Any] = {
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


def samples_frame(rows: Iterable[Mapping[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """Build a samples DataFrame from dicts (or a frame) with the contract's dtypes.

    Required columns: SAMPLE_KEYS (`stream` may be omitted → <NA>), `value`, `unit`.
    Optional `mode` (string/<NA>), `early_data` (boolean/<NA>), `implementation` (default
    "reference"); any other column is kept as a matrix axis. Raises ResultsError on a
    missing column or an unknown mode/unit.
    """
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if df.empty and not len(df.columns):
        df = pd.DataFrame({c: pd.Series([], dtype=object) for c in DTYPES})
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
    for col, dtype in DTYPES.items():
        if col not in out.columns:
            continue
        series = out[col]
        if dtype in ("Int64", "boolean", "string"):  # nullable: any missing marker → <NA>
            series = series.astype("object").where(series.notna(), None)
        try:
            out[col] = series.astype(dtype)
        except (TypeError, ValueError) as exc:
            raise ResultsError(f"column {col!r} is not {dtype}: {exc}") from exc
    order = [c for c in DTYPES if c in out.columns]
    axes = [c for c in out.columns if c not in KNOWN_COLUMNS]
    return out[order + axes].reset_index(drop=True)


def axis_columns(df: pd.DataFrame) -> list[str]:
    """The matrix-axis columns of a samples or summary frame (every non-contract column)."""
    summary_cols = {"n_repetitions", "hol_spread_reps"}  # counts of repetitions, not axes
    return [
        c
        for c in df.columns
        if c not in KNOWN_COLUMNS
        and c not in summary_cols
        and c not in SAMPLE_METRICS
        and c not in AGGREGATE_METRICS
        and not is_mode_column(c)
    ]


def is_mode_column(col: str) -> bool:
    """A summary column of one handshake mode (`ttfb_rtt_zero_rtt`, `early_data_fraction_cold`)."""
    return any(col.endswith(f"_{m}") for m in MODES) or col == "early_data_fraction"
