"""A conformance run as a terminal table (rich), JUnit XML and JSON.

JUnit: one `testsuite` per group and path, one `testcase` per case with `name` = the case ID and
`classname` = the group (`<group>.impaired` for the impaired path), failures as `<failure>`,
unsupported and skipped cases as `<skipped>`. JSON (`SCHEMA`) is what `lab report` reads from
a run directory's `conformance.json` (lab.evidence.conformance_table).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from xml.etree import ElementTree

from rich.markup import escape
from rich.table import Table

from lab.conform.model import GROUPS, CaseResult, ConformRun, counts

SCHEMA = "lab-conformance/1"
STYLES = {"passed": "green", "failed": "bold red", "unsupported": "yellow", "skipped": "dim"}


def result_json(r: CaseResult) -> dict[str, Any]:
    s, o = r.spec, r.outcome
    return {
        "id": s.id,
        "group": s.group,
        "title": s.title,
        "rfc": s.rfc,
        "level": s.level,
        "impaired_too": s.impaired,
        "path": r.path,
        "status": o.status,
        "label": o.label,
        "coarse": o.coarse,
        "reason": o.reason,
        "notes": list(o.notes),
        "duration_s": r.duration_s,
        "attempts": r.attempts,
    }


def to_json(run: ConformRun) -> dict[str, Any]:
    """The run as a JSON-ready dict (schema `lab-conformance/1`)."""
    paths = sorted({r.path for r in run.results}, key=["clean", "impaired"].index)
    return {
        "schema": SCHEMA,
        "started": run.started,
        "target": run.target,
        "link": run.link,
        "wall_s": run.wall_s,
        "path_wall_s": run.path_wall_s,
        "summary": {p: counts(r for r in run.results if r.path == p) for p in paths},
        "exit_code": run.exit_code,
        "results": [result_json(r) for r in run.results],
    }


def junit_xml(run: ConformRun) -> bytes:
    """JUnit XML: `name` = case ID, `classname` = group (+ ".impaired")."""
    suites: dict[str, list[CaseResult]] = defaultdict(list)
    for r in run.results:
        suites[r.spec.group if r.path == "clean" else f"{r.spec.group}.impaired"].append(r)
    root = ElementTree.Element("testsuites", name="lab conform", time=f"{run.wall_s:.3f}")
    for name in sorted(
        suites, key=lambda n: (n.endswith(".impaired"), GROUPS.index(n.split(".")[0]))
    ):
        rs = suites[name]
        c = counts(rs)
        suite = ElementTree.SubElement(
            root,
            "testsuite",
            name=name,
            tests=str(len(rs)),
            failures=str(c["failed"]),
            skipped=str(c["unsupported"] + c["skipped"]),
            time=f"{sum(r.duration_s for r in rs):.3f}",
        )
        for r in rs:
            case = ElementTree.SubElement(
                suite, "testcase", name=r.spec.id, classname=name, time=f"{r.duration_s:.3f}"
            )
            message = f"{r.spec.rfc} ({r.spec.level}): {r.outcome.reason}"
            if r.outcome.status == "failed":
                ElementTree.SubElement(case, "failure", message=message).text = r.spec.title
            elif r.outcome.status in ("unsupported", "skipped"):
                ElementTree.SubElement(case, "skipped", message=f"{r.outcome.status}: {message}")
            if r.outcome.notes:
                ElementTree.SubElement(case, "system-out").text = "\n".join(r.outcome.notes)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True)


def _cell(r: CaseResult | None) -> str:
    if r is None:
        return ""
    return f"[{STYLES[r.outcome.status]}]{r.outcome.label}[/]"


def result_table(run: ConformRun) -> Table:
    """One row per case: level, RFC, the result on each path, the reason and the time."""
    paths = [p for p in ("clean", "impaired") if any(r.path == p for r in run.results)]
    by_case: dict[str, dict[str, CaseResult]] = defaultdict(dict)
    for r in run.results:
        by_case[r.spec.id][r.path] = r
    title = str(run.target.get("server") or run.target.get("url"))
    table = Table(title=f"lab conform {title} — {_summary(run)}", show_lines=False)
    for col in ("case", "level", "RFC", *paths, "reason", "s"):
        table.add_column(col, overflow="fold", justify="right" if col == "s" else "left")

    def order(item: tuple[str, dict[str, CaseResult]]) -> tuple[int, str]:
        return GROUPS.index(next(iter(item[1].values())).spec.group), item[0]

    for case_id, per_path in sorted(by_case.items(), key=order):
        first = next(iter(per_path.values()))
        worst = max(per_path.values(), key=lambda r: r.outcome.status == "failed")
        reason = escape(worst.outcome.reason)
        if worst.outcome.notes:
            reason += " [dim](" + escape("; ".join(worst.outcome.notes)) + ")[/]"
        seconds = sum(r.duration_s for r in per_path.values())
        table.add_row(
            case_id,
            first.spec.level,
            first.spec.rfc,
            *(_cell(per_path.get(p)) for p in paths),
            reason,
            f"{seconds:.1f}",
        )
    return table


def _summary(run: ConformRun) -> str:
    parts = []
    for path, wall in run.path_wall_s.items():
        c = counts(r for r in run.results if r.path == path)
        shown = ", ".join(f"{n} {k}" for k, n in c.items() if n)
        parts.append(f"{path}: {shown} in {wall:.0f} s")
    return "; ".join(parts)


def progress_line(r: CaseResult) -> str:
    """One line per finished case, for the live log."""
    tries = f" ({r.attempts} attempts)" if r.attempts > 1 else ""
    return (
        f"{r.spec.id:<6} {r.path:<8} [{STYLES[r.outcome.status]}]{r.outcome.label:<16}[/] "
        f"{r.duration_s:5.1f} s{tries}  {escape(r.outcome.reason)}"
    )
