"""Reading run.json: parse it and check its shape, so a damaged file is one ResultsError line.

Only the fields the lab relies on are checked (types and the schema version); any other field
is kept as it is.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from lab.errors import ResultsError
from lab.results.schema import READABLE_SCHEMA_VERSIONS, RUN_JSON, RUN_STATUSES, Pair

_HEX64 = re.compile(r"[0-9a-f]{64}")
_OBJECT_FIELDS = ("scenario", "environment", "impairment", "stacks")


def read_meta(run_dir: Path) -> dict[str, Any]:
    """run.json of `run_dir` as a dict, checked (`check_meta`); ResultsError naming the file."""
    file = run_dir / RUN_JSON
    if not file.exists():
        raise ResultsError(f"{run_dir} is not a run directory (no {RUN_JSON})")
    try:
        meta = json.loads(file.read_bytes())
    except OSError as exc:
        raise ResultsError(f"{file}: cannot read it ({exc.strerror or exc})") from exc
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, too deep
        raise ResultsError(f"{file}: not valid JSON ({one_line(exc)})") from exc
    return check_meta(meta, file)


def check_meta(meta: object, file: Path) -> dict[str, Any]:
    """`meta` itself when it is a run.json this lab reads; ResultsError "FILE: what is wrong"
    otherwise."""
    if not isinstance(meta, dict):
        raise ResultsError(f"{file}: not a JSON object")
    version = meta.get("schema_version")
    if version not in READABLE_SCHEMA_VERSIONS or isinstance(version, bool):
        readable = " or ".join(str(v) for v in READABLE_SCHEMA_VERSIONS)
        raise ResultsError(f"{file}: schema_version {version!r}, this lab reads {readable}")
    if not isinstance(meta.get("run_id", ""), str):
        raise ResultsError(f"{file}: run_id is not a string")
    status = meta.get("status")
    if status not in RUN_STATUSES:
        raise ResultsError(f"{file}: status {status!r} is not one of {list(RUN_STATUSES)}")
    for name in _OBJECT_FIELDS:
        if not isinstance(meta.get(name) or {}, dict):
            raise ResultsError(f"{file}: {name} is not an object")
    _check_cells(meta.get("cells", []), file)
    _check_completed(meta.get("completed", []), file)
    _check_sha256(meta.get("sha256", {}), file)
    return meta


def completed_pairs(meta: dict[str, Any]) -> set[Pair]:
    """The (cell, repetition) pairs run.json names completed (a checked run.json)."""
    return {(str(c), int(r)) for c, r in meta.get("completed", [])}


def recorded_sha256(meta: dict[str, Any]) -> dict[str, str] | None:
    """run.json's {relative path: SHA-256}; None for a run written before checksums existed."""
    sums = meta.get("sha256")
    return None if sums is None else dict(sums)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (pyarrow's span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_cells(cells: object, file: Path) -> None:
    if not isinstance(cells, list):
        raise ResultsError(f"{file}: cells is not a list")
    for i, cell in enumerate(cells):
        ok = (
            isinstance(cell, dict)
            and isinstance(cell.get("cell"), str)
            and isinstance(cell.get("axes") or {}, dict)
            and isinstance(cell.get("link") or {}, dict)
        )
        if not ok:
            raise ResultsError(
                f"{file}: cells[{i}] is not an object with a string 'cell' (and object "
                "'axes', 'link')"
            )


def _check_completed(completed: object, file: Path) -> None:
    if not isinstance(completed, list):
        raise ResultsError(f"{file}: completed is not a list")
    for i, entry in enumerate(completed):
        ok = (
            isinstance(entry, list)
            and len(entry) == 2
            and isinstance(entry[0], str)
            and isinstance(entry[1], int)
            and not isinstance(entry[1], bool)
            and entry[1] >= 0
        )
        if not ok:
            raise ResultsError(
                f"{file}: completed[{i}] is {_short(entry)}, not a [cell, repetition] pair"
            )


def _check_sha256(sums: object, file: Path) -> None:
    if not isinstance(sums, dict):
        raise ResultsError(f"{file}: sha256 is not an object")
    for name, digest in sums.items():
        if not (isinstance(digest, str) and _HEX64.fullmatch(digest)):
            raise ResultsError(f"{file}: sha256[{name!r}] is not 64 hex digits")
        if name.startswith("/") or ".." in Path(name).parts:
            raise ResultsError(f"{file}: sha256 names {name!r}, outside the run directory")


def _short(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."
