"""A conformance run's table for `lab report`: `conformance.json` next to a run (written by
`lab conform --json results/<run>/conformance.json`, schema `lab-conformance/1`).

The report shows one row per case (ID, level, RFC section, the result on each path, the reason)
under a one-line summary. A damaged file does not break the report: the section says why it is
missing instead. This module reads the JSON only; it knows nothing of lab.conform.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FILE_NAME = "conformance.json"
SCHEMA = "lab-conformance/1"
PATHS = ("clean", "impaired")


@dataclass(frozen=True)
class ConformanceSection:
    """What the report shows: a summary line, then a table (empty when the file is unusable)."""

    summary: str
    headers: list[str]
    rows: list[list[str]]
    problem: bool = False  # the file was there but could not be used


def _summary(doc: dict[str, Any]) -> str:
    target = doc.get("target", {})
    name = target.get("server") or target.get("url") or "?"
    version = f" {target['version']}" if target.get("version") else ""
    parts = []
    for path, counts in doc.get("summary", {}).items():
        shown = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
        wall = doc.get("path_wall_s", {}).get(path)
        took = f" in {wall:.0f} s" if isinstance(wall, int | float) else ""
        parts.append(f"{path}: {shown}{took}")
    verdict = "every MUST case passed" if doc.get("exit_code") == 0 else "a MUST case failed"
    return (
        f"`lab conform` against {name}{version} ({doc.get('started', '?')}): "
        + "; ".join(parts)
        + f" — {verdict}."
    )


def section(doc: dict[str, Any]) -> ConformanceSection:
    """The report section of one conformance JSON document."""
    results = doc.get("results", [])
    paths = [p for p in PATHS if any(r.get("path") == p for r in results)]
    by_id: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        by_id.setdefault(str(r.get("id")), {})[str(r.get("path"))] = r
    rows = []
    for case_id, per_path in by_id.items():
        first = next(iter(per_path.values()))
        worst = next((r for r in per_path.values() if r.get("status") == "failed"), first)
        rows.append(
            [
                case_id,
                str(first.get("level", "")),
                str(first.get("rfc", "")),
                *(str(per_path.get(p, {}).get("label", "")) for p in paths),
                str(worst.get("reason", "")),
            ]
        )
    return ConformanceSection(_summary(doc), ["case", "level", "RFC", *paths, "reason"], rows)


def load(path: str | Path) -> ConformanceSection | None:
    """The section for `path`, None when there is no such file."""
    p = Path(path)
    if p.is_dir():
        p = p / FILE_NAME
    if not p.exists():
        return None
    try:
        doc = json.loads(p.read_text())
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise ValueError(f"not a {SCHEMA} document")
        return section(doc)
    except (OSError, ValueError, TypeError, AttributeError) as e:
        return ConformanceSection(f"{p.name} is unusable: {e}", [], [], problem=True)
