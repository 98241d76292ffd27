"""Reading a run directory: `load()` returns pandas; every file is checked before it is used.

A data file whose SHA-256 run.json records is verified against it; any damaged, truncated or
malformed file is a ResultsError whose one line names the file and what is wrong. Runs written
before run.json had `sha256` are read without verification (their files are still parsed and
checked for shape).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab.errors import ResultsError
from lab.results.atomic import sha256_hex
from lab.results.meta import completed_pairs, one_line, read_meta, recorded_sha256
from lab.results.schema import (
    ERROR_FIELDS,
    ERRORS_FILE,
    PARTS_DIR,
    SAMPLES_FILE,
    SUMMARY_FILE,
    SUMMARY_KEYS,
    Pair,
    axis_columns,
    samples_frame,
)
from lab.results.summary import FLAG_METRICS, summarise

Sums = Mapping[str, str]


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
    Raises ResultsError (one line naming the file) for a damaged or foreign directory.
    """
    path = Path(path)
    meta = read_meta(path)
    sums = recorded_sha256(meta)
    finished = meta["status"] != "running"  # then run.json records the final files' SHA-256
    has_samples = is_present(path, SAMPLES_FILE, sums)
    parts = path / PARTS_DIR
    use_parts = parts.is_dir() and (meta["status"] != "complete" or not has_samples)
    if use_parts:
        samples = read_parts(path, sums, None if include_partial else completed_pairs(meta))
        summary = summarise(samples)
    elif has_samples:
        data = read_verified(path, SAMPLES_FILE, sums, required=finished)
        samples = parse_samples(data, path / SAMPLES_FILE)
        if is_present(path, SUMMARY_FILE, sums):
            data = read_verified(path, SUMMARY_FILE, sums, required=finished)
            summary = parse_summary(data, path / SUMMARY_FILE)
        else:
            summary = summarise(samples)
    else:
        samples = samples_frame([])
        summary = summarise(samples)
    errors = read_errors(path, sums, required=finished)
    return RunResults(path, meta, samples, summary, errors_frame(errors))


# --- files of a run, verified -------------------------------------------------------------
def is_present(run_dir: Path, name: str, sums: Sums | None) -> bool:
    """Whether run_dir/name exists; ResultsError when it does not but run.json records it."""
    if (run_dir / name).exists():
        return True
    if sums is not None and name in sums:
        raise ResultsError(f"{run_dir / name}: missing (run.json records its SHA-256)")
    return False


def read_verified(run_dir: Path, name: str, sums: Sums | None, *, required: bool) -> bytes:
    """The bytes of run_dir/name, checked against the SHA-256 run.json records for it.

    `sums` None (a run from before checksums): not verified. `required`: run.json must record
    this file (a finished run records every file it points to).
    """
    file = run_dir / name
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ResultsError(f"{file}: cannot read it ({exc.strerror or exc})") from exc
    if sums is None:
        return data
    expected = sums.get(name)
    if expected is None:
        if required:
            raise ResultsError(f"{file}: run.json records no SHA-256 for it")
    elif sha256_hex(data) != expected:
        raise ResultsError(
            f"{file}: SHA-256 differs from the one run.json records (damaged or changed "
            "after it was written)"
        )
    return data


def part_name(part: Path) -> str:
    """A part file's key in run.json's `sha256`: "parts/<file name>"."""
    return f"{PARTS_DIR}/{part.name}"


def read_parts(
    run_dir: Path, sums: Sums | None, keep: set[Pair] | frozenset[Pair] | None
) -> pd.DataFrame:
    """The samples of parts/ (files sorted by name), only pairs in `keep` (None: all).

    With checksums, a part run.json does not name was written after its last update (its pair
    was not completed): it is skipped unless `keep` is None, and then read unverified.
    """
    parts = run_dir / PARTS_DIR
    files = sorted(parts.glob("*.parquet")) if parts.is_dir() else []
    if sums is not None:
        for name in sums:
            if name.startswith(f"{PARTS_DIR}/"):
                is_present(run_dir, name, sums)
        if keep is not None:
            files = [f for f in files if part_name(f) in sums]
    frames = []
    for f in files:
        raw = parse_parquet(read_verified(run_dir, part_name(f), sums, required=False), f)
        if len(raw):
            frames.append((f, raw))
    if not frames:
        return samples_frame([])
    try:
        df = samples_frame(pd.concat([raw for _, raw in frames], ignore_index=True))
    except ResultsError as exc:
        for f, raw in frames:  # name the part that is wrong
            parse_samples_frame(raw, f)
        raise ResultsError(f"{parts}: {exc}") from exc
    if keep is not None:
        wanted = set(keep)
        mask = [(c, int(r)) in wanted for c, r in zip(df["cell"], df["repetition"], strict=True)]
        df = df[np.asarray(mask, dtype=bool)]
    return df.sort_values(["cell", "repetition"], kind="stable").reset_index(drop=True)


def read_errors(run_dir: Path, sums: Sums | None, *, required: bool) -> list[dict[str, Any]]:
    """errors.json as a list of dicts ([] when there is none)."""
    if not is_present(run_dir, ERRORS_FILE, sums):
        return []
    return parse_errors(read_verified(run_dir, ERRORS_FILE, sums, required=required), run_dir)


def errors_frame(errors: list[dict[str, Any]]) -> pd.DataFrame:
    """errors.json's entries as a DataFrame with the ERROR_FIELDS columns."""
    return pd.DataFrame(errors, columns=list(ERROR_FIELDS))


# --- parsing, with the file named in every error ------------------------------------------
def parse_parquet(data: bytes, file: Path) -> pd.DataFrame:
    """A parquet file's table as it is stored (no dtype contract applied)."""
    try:
        return pd.read_parquet(io.BytesIO(data))
    except Exception as exc:  # pyarrow raises OSError, ArrowInvalid, ... on damaged input
        raise ResultsError(f"{file}: not a readable parquet file ({one_line(exc)})") from exc


def parse_samples_frame(raw: pd.DataFrame, file: Path) -> pd.DataFrame:
    """`samples_frame(raw)`, its ResultsError naming `file`."""
    try:
        return samples_frame(raw)
    except ResultsError as exc:
        raise ResultsError(f"{file}: {exc}") from exc


def parse_samples(data: bytes, file: Path) -> pd.DataFrame:
    """A samples parquet file as a frame with the contract's dtypes."""
    return parse_samples_frame(parse_parquet(data, file), file)


def parse_summary(data: bytes, file: Path) -> pd.DataFrame:
    """summary.csv as pandas reads it, after checking its key and metric columns."""
    try:
        summary = pd.read_csv(io.BytesIO(data))
    except Exception as exc:  # pandas raises ParserError, UnicodeDecodeError, ... on garbage
        raise ResultsError(f"{file}: not a readable CSV table ({one_line(exc)})") from exc
    missing = [c for c in (*SUMMARY_KEYS, "n_repetitions") if c not in summary.columns]
    if missing:
        raise ResultsError(f"{file}: lacks column(s) {missing}")
    if summary.empty:
        return summary
    axes = set(axis_columns(summary))
    for col in summary.columns:
        if col in SUMMARY_KEYS or col in axes:
            continue
        values = summary[col]
        if col in FLAG_METRICS:
            ok = set(values.dropna().astype(str)) <= {"True", "False"}
        else:
            ok = pd.api.types.is_numeric_dtype(values)
        if not ok:
            raise ResultsError(f"{file}: column {col!r} is not {_kind(col)}")
    return summary


def parse_errors(data: bytes, run_dir: Path) -> list[dict[str, Any]]:
    """errors.json's entries, each with the ERROR_FIELDS of the right types."""
    file = run_dir / ERRORS_FILE
    try:
        errors = json.loads(data)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, too deep
        raise ResultsError(f"{file}: not valid JSON ({one_line(exc)})") from exc
    if not isinstance(errors, list):
        raise ResultsError(f"{file}: not a JSON list")
    for i, entry in enumerate(errors):
        if not _is_error_entry(entry):
            fields = ", ".join(ERROR_FIELDS)
            raise ResultsError(f"{file}: entry {i} is not an object with {fields}")
    return errors


def _is_error_entry(entry: object) -> bool:
    if not isinstance(entry, dict) or not set(ERROR_FIELDS) <= entry.keys():
        return False
    rep = entry["repetition"]
    return (
        isinstance(entry["cell"], str)
        and isinstance(rep, int)
        and not isinstance(rep, bool)
        and all(isinstance(entry[k], str | None) for k in ("protocol", "workload"))
        and isinstance(entry["error"], str)
    )


def _kind(col: str) -> str:
    return "True/False" if col in FLAG_METRICS else "numeric"
