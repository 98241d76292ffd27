"""Writing a run directory: `RunWriter.create` for a new run, `open_for_resume` to continue one.

Every file is written atomically and run.json records its SHA-256 (`sha256`, keyed by the path
relative to the run directory): each part when run.json is next rewritten (at the latest when
its pair is marked completed), samples.parquet, summary.csv and errors.json when the run is
finished. While a run is "running" those three are not recorded, so a run killed at any
moment still verifies. An existing run directory is never overwritten.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from lab.errors import ResultsError
from lab.results.atomic import sha256_hex, write_bytes, write_json, write_parquet
from lab.results.meta import completed_pairs, read_meta, recorded_sha256
from lab.results.provenance import environment_info, git_commit
from lab.results.reader import (
    RunResults,
    errors_frame,
    is_present,
    parse_samples,
    part_name,
    read_errors,
    read_parts,
    read_verified,
)
from lab.results.schema import (
    ERRORS_FILE,
    FINAL_FILES,
    PARTS_DIR,
    RUN_JSON,
    SAMPLES_FILE,
    SCHEMA_VERSION,
    SUMMARY_FILE,
    Pair,
    RunStatus,
    samples_frame,
)
from lab.results.summary import summarise


class RunWriter:
    """Writes one run directory. Create with `RunWriter.create(...)` or `open_for_resume()`.

    Not thread-safe; the runner calls it from its one event loop. Every method leaves the
    directory loadable: parts are written before run.json names their pair completed.
    """

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path = Path(path)
        self.meta = meta
        self._completed: set[Pair] = completed_pairs(meta)
        self._sha256: dict[str, str] = dict(meta.get("sha256") or {})
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
            "sha256": {},
        }
        (path / PARTS_DIR).mkdir()
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

        `df` is coerced with `samples_frame`. Returns the part files written; their SHA-256
        goes into run.json with its next update (`mark_completed` at the latest).
        """
        frame = samples_frame(df)
        if frame.empty:
            return []
        written = []
        for (cell, rep), part in frame.groupby(["cell", "repetition"], sort=True):
            while True:  # never replace an existing part (e.g. after a resume)
                self._seq += 1
                name = f"{_safe(str(cell))}-r{_int(rep)}-{os.getpid()}-{self._seq:06d}.parquet"
                target = self.path / PARTS_DIR / name
                if not target.exists():
                    break
            self._sha256[part_name(target)] = write_parquet(target, part.reset_index(drop=True))
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
        reserved = {"schema_version", "run_id", "status", "completed", "sha256"}
        if reserved & fields.keys():
            raise ResultsError(f"cannot set {sorted(reserved & fields.keys())} directly")
        self.meta.update(fields)
        self._write_meta()

    def finish(self, status: RunStatus = "complete") -> RunResults:
        """Consolidate the parts into samples.parquet, write summary.csv, set the status.

        Only samples of completed pairs go into samples.parquet. With "complete" the parts
        directory is removed afterwards; with "interrupted" it is kept for `open_for_resume`.
        """
        samples = read_parts(self.path, self._sha256, self._completed)
        self._sha256[SAMPLES_FILE] = write_parquet(self.path / SAMPLES_FILE, samples)
        summary = summarise(samples)
        csv = summary.to_csv(index=False).encode()
        self._sha256[SUMMARY_FILE] = write_bytes(self.path / SUMMARY_FILE, csv)
        self._sha256[ERRORS_FILE] = self._write_errors()
        self.meta["status"] = status
        self.meta["finished_utc"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if status == "complete":
            self._forget_parts()
        self._write_meta()
        if status == "complete":
            shutil.rmtree(self.path / PARTS_DIR, ignore_errors=True)
        return RunResults(
            path=self.path,
            meta=dict(self.meta),
            samples=samples,
            summary=summary,
            errors=errors_frame(self._errors),
        )

    # internals ------------------------------------------------------------------------
    def _write_meta(self) -> None:
        self.meta["completed"] = [[c, r] for c, r in sorted(self._completed)]
        self.meta["sha256"] = dict(sorted(self._sha256.items()))
        write_json(self.path / RUN_JSON, self.meta)

    def _write_errors(self) -> str:
        return write_json(self.path / ERRORS_FILE, self._errors)

    def _forget_parts(self) -> None:
        for name in [n for n in self._sha256 if n.startswith(f"{PARTS_DIR}/")]:
            del self._sha256[name]


def open_for_resume(path: str | os.PathLike[str]) -> RunWriter:
    """Reopen an interrupted (or complete) run to continue it.

    Parts of pairs not completed are deleted (those pairs are redone), as are their errors.
    When a finished run has no parts any more, samples.parquet is split back into parts so
    that a later `finish()` keeps them. The status becomes "running". Every file is verified
    before anything is changed (ResultsError naming the file); a run from before checksums
    gets them now, for the files it keeps.
    """
    path = Path(path)
    meta = read_meta(path)
    sums = recorded_sha256(meta)
    finished = meta["status"] != "running"
    errors = read_errors(path, sums, required=finished)
    parts = path / PARTS_DIR
    consolidated = None  # a complete run's parts are redundant (a kill may have left them)
    if (meta["status"] == "complete" or not parts.is_dir()) and is_present(
        path, SAMPLES_FILE, sums
    ):
        data = read_verified(path, SAMPLES_FILE, sums, required=finished)
        consolidated = parse_samples(data, path / SAMPLES_FILE)

    writer = RunWriter(path, meta)
    if consolidated is not None or not parts.is_dir():
        shutil.rmtree(parts, ignore_errors=True)
        writer._forget_parts()
        parts.mkdir()
        if consolidated is not None:
            writer.append_samples(consolidated)
    stale = []
    for part in sorted(parts.glob("*.parquet")):
        name = part_name(part)
        if sums is not None and name not in writer._sha256:
            stale.append(part)  # written after run.json's last update: its pair is not done
            continue
        known = writer._sha256 if sums is not None else None
        data = read_verified(path, name, known, required=False)
        if not _pairs_in(parse_samples(data, part)) <= writer.completed:
            stale.append(part)
        elif name not in writer._sha256:
            writer._sha256[name] = sha256_hex(data)  # a run from before checksums: adopt it
    for part in stale:
        writer._sha256.pop(part_name(part), None)
    for name in FINAL_FILES:  # rewritten by finish(); not recorded while the run is running
        writer._sha256.pop(name, None)
    writer._errors = [e for e in errors if (e["cell"], int(e["repetition"])) in writer.completed]
    writer.meta["status"] = "running"
    writer._write_meta()  # before the deletions: run.json never names a file that is gone
    for part in stale:
        part.unlink(missing_ok=True)
    writer._write_errors()
    return writer


def _pairs_in(samples: pd.DataFrame) -> set[Pair]:
    pairs = samples[["cell", "repetition"]].drop_duplicates()
    return {(str(c), int(r)) for c, r in pairs.itertuples(index=False)}


def _plain(obj: Any) -> Any:
    """A pydantic model as its JSON-mode dict; a mapping as a dict."""
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return dict(obj)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.]+", "_", name)


def _int(value: Any) -> int:
    """A groupby key (typed Hashable by pandas) as the int it is."""
    return int(value)
