"""`lab report results/<run-id>`: a run as evidence a reviewer can read in five minutes.

Writes, into the run directory (or `out_dir`):
- `report.md`   ready to paste into a KEP or pull request; plots as `report-<name>.png` beside it;
- `report.html` self-contained: the same content, plots embedded as base64 PNG, inline CSS,
  no scripts and no external resources.

Content, answers first: status (a banner when the run is incomplete), the KEP's claims (per
claim the condition, h2, h3, the h3/h2 ratio with its 95% interval, the verdict and every
confound), verdicts at a glance, per workload its plots (watch: and which servers stamp when
their events left, for the queue/rest CDFs) and a verdict table, failed cells, the
skipped workloads, what the senders used (congestion controllers, UDP buffers; a cell whose h2
and h3 senders differ is flagged), how to read the numbers, and last the scenario and
environment (versions, impairment backend and applied settings, stack settings, cells, seeds;
collapsed in the HTML).
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lab.evidence import conformance_table, plots
from lab.evidence.claims import ClaimRow, claim_rows, confounds
from lab.evidence.effect import ABSOLUTE_FLOORS, MIN_RELATIVE_EFFECT
from lab.evidence.significance import with_link_columns
from lab.evidence.transport import SENDER_HEADERS, SKIPPED_HEADERS, sender_rows, skipped_rows
from lab.evidence.verdicts import FLAG_MEANINGS, MIN_REPETITIONS, Verdict, direction, verdicts
from lab.results.reader import RunResults, load
from lab.results.schema import ERROR_FIELDS

# The verdicts shown in each workload's main table; the rest go in a collapsed "all" table.
KEY_METRICS: dict[str, tuple[str, ...]] = {
    "handshake": ("ttfb_ms",),
    "bulk": ("goodput_mbit", "completion_ms"),
    "multiplex": ("completion_ms", "goodput_mbit"),
    "watch": ("hol_spread", "stalled_fraction", "excess_p99_ms"),
    "rpc_under_load": ("rpc_p95_ms", "rpc_delayed_fraction"),
}
OUTCOME_TEXT = {
    "better": "h3 better",
    "worse": "h3 worse",
    "no meaningful difference": "no meaningful difference",
    "no significant difference": "no significant difference",
    "undecided": "undecided",
}
# Section titles, in the report's reading order (one per workload kind of lab.scenario.workloads).
WORKLOAD_TITLES: dict[str, str] = {
    "handshake": "Handshake and time to first byte",
    "bulk": "Bulk download (goodput)",
    "multiplex": "Multiplexed objects",
    "watch": "Watch streams (head-of-line blocking)",
    "rpc_under_load": "Small requests under load",
    "k8s_mix": "Kubernetes-like mix",
}


# --- a tiny document model rendered twice ------------------------------------------------
@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    name: str  # file name of the PNG beside report.md
    png: bytes
    alt: str


@dataclass
class Details:
    """Collapsed content; `collapse_markdown` False: collapsed in the HTML only, a `###` section
    in the Markdown (which is pasted into KEPs and pull requests)."""

    summary: str
    blocks: list[Any]
    collapse_markdown: bool = True


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str
    warn: bool = False


@dataclass
class Pre:
    text: str


@dataclass
class ReportFiles:
    """What `write_report` wrote and the warnings a CLI should print."""

    html: Path
    markdown: Path
    images: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# --- content ------------------------------------------------------------------------------
def completeness(meta: dict[str, Any]) -> tuple[int, int]:
    """(completed, expected) (cell, repetition) pairs of a run."""
    repeat = int((meta.get("scenario") or {}).get("repeat", 1) or 1)
    expected = len(meta.get("cells", [])) * repeat
    return len(meta.get("completed", [])), expected


def incomplete_message(meta: dict[str, Any]) -> str | None:
    """A sentence saying how incomplete the run is, or None when it is complete."""
    done, expected = completeness(meta)
    status = meta.get("status")
    if status == "complete" and done >= expected:
        return None
    return (
        f"This run is incomplete (status: {status}): {done} of {expected} (cell, repetition) "
        "pairs finished. Every number below covers only the finished pairs; resume it with "
        f"`lab run --resume {meta.get('run_id', '<run>')}` for the full evidence."
    )


def _group_identical(per_cell: dict[str, Any]) -> dict[str, Any]:
    """Merge cells whose applied settings are identical: {"c000, c001": {...}}, or
    {"all cells": {...}} when every cell has the same settings."""
    if not per_cell or not all(isinstance(v, dict) for v in per_cell.values()):
        return per_cell
    groups: dict[str, list[str]] = {}
    settings: dict[str, Any] = {}
    for cell, value in per_cell.items():
        key = json.dumps(value, sort_keys=True, default=str)
        groups.setdefault(key, []).append(cell)
        settings[key] = value
    if len(groups) == 1:
        return {"all cells": next(iter(settings.values()))}
    return {", ".join(cells): settings[key] for key, cells in groups.items()}


def _flatten(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    if isinstance(obj, dict):
        out: list[tuple[str, str]] = []
        for k, v in obj.items():
            out.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list) and obj and all(isinstance(x, dict) for x in obj):
        out = []
        for i, v in enumerate(obj):
            out.extend(_flatten(v, f"{prefix}[{i}]"))
        return out
    return [(prefix, json.dumps(obj) if not isinstance(obj, str) else obj)]


def _kv_table(pairs: Iterable[tuple[str, str]]) -> Table:
    return Table(["setting", "value"], [[k, v] for k, v in pairs])


def _fmt(v: float, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    text = f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{text} {unit}".strip()


def _display_unit(unit: str) -> str:
    """The unit written after a value: none for fractions and flags, RTT for base-RTT units."""
    return {"fraction": "", "bool": "", "count": "", "rtt": "RTT"}.get(unit, unit)


def _condition(v: Verdict) -> str:
    return ", ".join(f"{k}={val}" for k, val in v.condition.items()) or "all cells"


def _verdict_table(vs: list[Verdict], meta: dict[str, Any]) -> Table:
    rows = []
    for v in vs:
        unit = _display_unit(v.unit)
        mode = v.mode or ""
        if v.mode and v.h2_mode and v.h2_mode != v.mode:
            mode = f"{v.mode} (h2: {v.h2_mode})"
        better = "higher" if direction(v.metric) == "higher" else "lower"
        rows.append(
            [
                _condition(v),
                f"{v.metric} ({better} is better)",
                mode,
                _fmt(v.h2_median, unit),
                _fmt(v.h3_median, unit),
                v.ratio_text(),
                str(v.n_pairs),
                OUTCOME_TEXT[v.outcome],
                "; ".join(confounds(v, meta)),
            ]
        )
    headers = ["condition", "metric", "mode", "h2", "h3", "h3/h2 [95% CI]", "n", "verdict"]
    return Table([*headers, "flags"], rows)


CLAIM_HEADERS = (
    "claim",
    "condition",
    "measure",
    "h2",
    "h3",
    "h3/h2 [95% CI]",
    "n",
    "verdict",
    "confounds",
)


def _ratio_cell(v: Verdict) -> str:
    return v.ratio_text() + ("" if v.paired else " (unpaired)")


def _claim_table(rows: list[ClaimRow]) -> Table:
    """One row per ClaimRow; the claim is named on the first row of its rows."""
    out = []
    for i, r in enumerate(rows):
        v = r.verdict
        claim = r.claim.title() if i == 0 or rows[i - 1].claim != r.claim else ""
        better = "higher" if direction(r.measure.metric) == "higher" else "lower"
        measure = f"{r.measure.text()} ({better} is better)"
        if v is None:
            out.append([claim, r.condition, measure, "—", "—", "—", "0", r.missing, ""])
            continue
        unit = _display_unit(v.unit)
        out.append(
            [
                claim,
                r.condition,
                measure,
                _fmt(v.h2_median, unit),
                _fmt(v.h3_median, unit),
                _ratio_cell(v),
                str(v.n_pairs),
                OUTCOME_TEXT[v.outcome],
                "; ".join(r.confounds),
            ]
        )
    return Table(list(CLAIM_HEADERS), out)


def _floors_text() -> str:
    """e.g. "1 ms for latencies, 0.05 for fractions, ..." from lab.evidence.effect."""
    names = {
        "ms": "latencies",
        "fraction": "fractions",
        "rtt": "times in RTTs",
        "Mbit/s": "goodput",
    }
    parts = []
    for unit, floor in ABSOLUTE_FLOORS.items():
        shown = "" if unit == "fraction" else f" {'RTT' if unit == 'rtt' else unit}"
        parts.append(f"{floor:g}{shown} for {names.get(unit, unit)}")
    return ", ".join(parts)


def _claims_section(samples: pd.DataFrame, meta: dict[str, Any]) -> list[Any]:
    """The answers first: every claim with its verdicts and confounds."""
    intro = (
        "HTTP/3 against HTTP/2 on each claim of KEP-3156 and on what the lab adds, one row per "
        "measure and condition. The ratio is h3/h2 of the medians over (cell, repetition) "
        "pairs with a 95% bootstrap interval resampling the pairs (h2 and h3 of one "
        "repetition share the link). A verdict says better or worse only when the interval "
        f"excludes 1 and the difference is at least {MIN_RELATIVE_EFFECT:.0%} and at least "
        f'{_floors_text()}; a smaller one reads "no meaningful difference". '
        "Confounds name what may make a row measure something other than the protocol."
    )
    return [Heading("KEP claims"), Para(intro), _claim_table(claim_rows(samples, meta))]


def _glance(vs: list[Verdict], workloads: list[str]) -> Table:
    rows = []
    for wl in workloads:
        mine = [v for v in vs if v.workload == wl]
        counts = {o: sum(v.outcome == o for v in mine) for o in OUTCOME_TEXT}
        flagged = sum(bool(v.flags) for v in mine)
        rows.append([wl, *(str(counts[o]) for o in OUTCOME_TEXT), str(flagged)])
    return Table(["workload", *OUTCOME_TEXT.values(), "flagged"], rows)


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def workloads_in(samples: pd.DataFrame) -> list[str]:
    """Workload kinds in `samples`, in the reading order of WORKLOAD_TITLES (others last, by
    name)."""
    order = list(WORKLOAD_TITLES)
    present: Iterable[str] = samples["workload"].dropna().unique()
    return sorted(present, key=lambda w: (order.index(w) if w in order else len(order), w))


def build(run: RunResults) -> tuple[list[Any], list[str]]:
    """The report's blocks and its warnings."""
    meta, samples = run.meta, run.samples
    blocks, warnings = _header(run)
    df = with_link_columns(samples, meta)
    vs = verdicts(samples) if not samples.empty else []
    workloads = workloads_in(samples) if not samples.empty else []
    if not samples.empty:
        blocks.extend(_claims_section(samples, meta))
    if vs:
        blocks.append(Heading("Verdicts at a glance"))
        blocks.append(
            Para(
                "Count of verdicts (workload × metric × condition × mode) per outcome; "
                "HTTP/3 against HTTP/2 of the same run."
            )
        )
        blocks.append(_glance(vs, workloads))
    for wl in workloads:
        blocks.extend(_workload_section(wl, df, [v for v in vs if v.workload == wl], meta))
    if len(run.errors):
        blocks.extend(_failed_cells(run.errors))
        warnings.append(f"{len(run.errors)} failed (cell, repetition, protocol, workload)")
    blocks.extend(_skipped(meta))
    blocks.extend(_senders(meta, warnings))
    if (conf := conformance_table.load(run.path)) is not None:  # conformance.json beside it
        blocks += [Heading("Conformance"), Para(conf.summary, warn=conf.problem)]
        blocks += [Table(conf.headers, conf.rows)] if conf.rows else []
    blocks.extend(_method())
    blocks.extend(_environment(meta))
    return blocks, warnings


def _header(run: RunResults) -> tuple[list[Any], list[str]]:
    """Title, the incomplete-run and no-samples warnings, and the one-paragraph run summary."""
    meta = run.meta
    scen = meta.get("scenario") or {}
    blocks: list[Any] = [Heading(f"lab report: {meta.get('run_id', run.path.name)}", 1)]
    warnings: list[str] = []
    msg = incomplete_message(meta)
    if msg:
        blocks.append(Para("Warning: " + msg, warn=True))
        warnings.append(msg)
    env = meta.get("environment") or {}
    blocks.append(
        Para(
            f"Scenario **{scen.get('name', '?')}** ({meta.get('scenario_file') or 'inline'}), "
            f"seed {meta.get('seed')}, {scen.get('repeat', '?')} repetitions, "
            f"{len(meta.get('cells', []))} cells, created {meta.get('created_utc')}, "
            f"git {meta.get('git_commit')}, kernel {env.get('kernel', '?')}."
        )
    )
    if run.samples.empty:
        warnings.append("the run has no samples: nothing to plot or decide")
        blocks.append(
            Para("Warning: the run has no samples: nothing to plot or decide.", warn=True)
        )
    return blocks, warnings


def _workload_section(
    wl: str, df: pd.DataFrame, mine: list[Verdict], meta: dict[str, Any]
) -> list[Any]:
    """One workload: its plots, the table of its key verdicts, all of them collapsed."""
    out: list[Any] = [Heading(WORKLOAD_TITLES.get(wl, wl))]
    for spec in plots.plots_for(df, wl):
        fig = plots.figure(spec, df)
        out.append(Image(f"report-{spec.name}.png", _png(fig), f"{wl}: {spec.name}"))
    if wl == "watch":
        out.extend(_departure_note(df))
    keys = KEY_METRICS.get(wl)
    key_vs = [v for v in mine if keys is None or v.metric in keys]
    if key_vs:
        out.append(_verdict_table(key_vs, meta))
    if any(v not in key_vs for v in mine):
        out.append(Details(f"All {len(mine)} verdicts for {wl}", [_verdict_table(mine, meta)]))
    return out


def _departure_note(df: pd.DataFrame) -> list[Any]:
    """One line under the watch plots: which servers stamp when an event's bytes left them."""
    stamped, unstamped = plots.departure_stamps(df, "watch")
    if not stamped and not unstamped:
        return []
    parts = [f"stamped for {', '.join(stamped)}"] if stamped else []
    if unstamped:
        parts.append(f"none for {', '.join(unstamped)} (no queue/rest split there)")
    return [
        Para(
            "Where the time went (queued at the sender, and the rest: network and receiver): "
            "departures " + "; ".join(parts) + ". The reference server stamps them (h2: the "
            "emulator's first transmission of the TCP bytes ending the event's TLS record, none "
            "on netem; h3: the first datagram carrying it); Go, Caddy and qh3 do not. See "
            "docs/metrics.md."
        )
    ]


def _failed_cells(errors: pd.DataFrame) -> list[Any]:
    return [
        Heading("Failed cells"),
        Table(
            list(ERROR_FIELDS),
            [[str(x) for x in r] for r in errors.itertuples(index=False)],
        ),
    ]


def _skipped(meta: dict[str, Any]) -> list[Any]:
    """Workloads a cell's server cannot serve: not run there, not errors."""
    rows = skipped_rows(meta)
    if not rows:
        return []
    intro = "Workloads a cell's server cannot serve were not run in that cell (not an error)."
    return [Heading("Skipped workloads"), Para(intro), Table(SKIPPED_HEADERS, rows)]


def _senders(meta: dict[str, Any], warnings: list[str]) -> list[Any]:
    """What each cell's senders used; a warning when some cell's h2 and h3 senders differ."""
    rows = sender_rows(meta)
    if not rows:
        return []
    flagged = [r[0] for r in rows if r[-1]]
    intro = (
        "h2's TCP congestion control as the kernel reports it for every connection seen "
        "(inet_diag, sampled while the agent ran; the scenario's `stack.tcp_congestion` is set "
        "on the namespaces' routes, so every implementation's TCP follows it), h3's QUIC "
        "controller as the implementation states it (aioquic: the setting; quic-go 0.29: "
        "NewReno, fixed), and the UDP socket buffers each end got (bytes as getsockopt reports "
        "them: twice what was set)."
    )
    out: list[Any] = [Heading("Congestion control and UDP buffers"), Para(intro)]
    if flagged:
        msg = (
            f"{len(flagged)} cell(s) whose h2 and h3 senders used different congestion "
            f"controllers ({', '.join(flagged)}): their h3/h2 ratios also compare the controllers."
        )
        out.append(Para("Warning: " + msg, warn=True))
        warnings.append(msg)
    out.append(Table(SENDER_HEADERS, rows))
    return out


def _method() -> list[Any]:
    flags = "; ".join(f"`{m}` — {meaning}" for m, meaning in FLAG_MEANINGS.items())
    return [
        Heading("How to read this"),
        Para(
            "Each verdict compares HTTP/3 with HTTP/2 on one metric in one condition (the values "
            "of the matrix axes that matter to the workload). The unit is the repetition: a "
            "per-sample metric is first reduced to its median per repetition. The ratio is "
            "median(h3) / median(h2) over (cell, repetition) pairs, with a 95% percentile "
            "bootstrap interval resampling the pairs (marked unpaired when no repetition has "
            f"both protocols). Fewer than {MIN_REPETITIONS} pairs → undecided; interval "
            "containing 1 → no significant difference; a difference below the minimum effect "
            f"({MIN_RELATIVE_EFFECT:.0%} of h2 and at least {_floors_text()}) → no meaningful "
            "difference; otherwise the side of 1 the interval lies on → better or worse. Lower "
            "is better for latencies, completion times, HOL spread and stalled fractions; "
            "higher for goodput and utilisation."
        ),
        Para(
            f"Flags and confounds: {flags}; too few repetitions; different congestion "
            "controllers of the two senders (h2's TCP as measured against h3's QUIC, from "
            "run.json), or unknown ones (not measured, or an implementation running its own "
            "defaults); one watch stream (no "
            "other stream to block). 0-RTT is counted only when the server saw the request as "
            "early data (otherwise the mode reads zero_rtt→1-RTT); the loss-anchored HOL "
            "spread exists only where a loss was counted; the older per-stalled-event one "
            "(results schema 1) is left out of repetitions where no event stalled."
        ),
    ]


def _environment(meta: dict[str, Any]) -> list[Any]:
    """Last: the scenario and the environment, each table collapsed in the HTML."""
    env = meta.get("environment") or {}
    imp = meta.get("impairment") or {}
    scen = meta.get("scenario") or {}
    out: list[Any] = [Heading("Scenario and environment")]
    if scen.get("description"):
        out.append(Para(str(scen["description"]).strip()))
    versions = [
        ("kernel", str(env.get("kernel"))),
        ("iproute2", str(env.get("iproute2"))),
        ("python", str(env.get("python"))),
        ("host CPUs", str(env.get("host_cpus"))),
        *((f"{k}", str(v)) for k, v in (env.get("libraries") or {}).items()),
        ("git commit", str(meta.get("git_commit"))),
        ("seed", str(meta.get("seed"))),
    ]
    sections = [
        ("Versions and seed", [_kv_table(versions)]),
        (
            f"Impairment: backend {imp.get('backend', '?')}",
            [_kv_table(_flatten(_group_identical(imp.get("applied") or {})))],
        ),
        ("Stack settings", [_kv_table(_flatten(meta.get("stacks") or {}))]),
    ]
    cells = meta.get("cells") or []
    if cells:
        axes = sorted({k for c in cells for k in (c.get("axes") or {})})
        table = Table(
            ["cell", *axes],
            [[c["cell"], *(str((c.get("axes") or {}).get(a, "")) for a in axes)] for c in cells],
        )
        sections.append(("Cells", [table]))
    out += [Details(title, blocks, collapse_markdown=False) for title, blocks in sections]
    scenario = json.dumps(scen, indent=2)
    out.append(Details("The resolved scenario", [Pre(scenario)]))
    return out


# --- rendering ----------------------------------------------------------------------------
def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def _md_table(t: Table) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in t.headers) + " |"]
    lines.append("|" + "|".join("---" for _ in t.headers) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines)


def render_markdown(blocks: list[Any]) -> str:
    """GitHub-flavoured Markdown; images referenced by file name (beside the .md)."""
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(f"> **{b.text}**" if b.warn else b.text)
        elif isinstance(b, Table):
            out.append(_md_table(b))
        elif isinstance(b, Image):
            out.append(f"![{b.alt}]({b.name})")
        elif isinstance(b, Pre):
            out.append(f"```json\n{b.text}\n```")
        elif isinstance(b, Details) and not b.collapse_markdown:
            out.append(f"### {b.summary}\n\n{render_markdown(b.blocks).rstrip()}")
        elif isinstance(b, Details):
            inner = render_markdown(b.blocks)
            out.append(
                f"<details><summary>{html.escape(b.summary)}</summary>\n\n{inner}\n</details>"
            )
    return "\n\n".join(out) + "\n"


def _inline_md(text: str) -> str:
    """Escape, then the two inline marks the report uses: **bold** and `code`."""
    parts = html.escape(text).split("**")
    text = "".join(f"<strong>{p}</strong>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _html_blocks(blocks: list[Any]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"<h{b.level}>{html.escape(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            cls = ' class="warn"' if b.warn else ""
            out.append(f"<p{cls}>{_inline_md(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{html.escape(h)}</th>" for h in b.headers)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in b.rows
            )
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode(b.png).decode("ascii")
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(b.alt)}">'
                "</figure>"
            )
        elif isinstance(b, Pre):
            out.append(f"<pre>{html.escape(b.text)}</pre>")
        elif isinstance(b, Details):
            out.append(
                f"<details><summary>{html.escape(b.summary)}</summary>"
                f"{_html_blocks(b.blocks)}</details>"
            )
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}
img{max-width:100%;height:auto}
figure{margin:1em 0}
.warn{background:#fff4ce;border:1px solid #e0b400;padding:.6em}
pre{background:#f6f6f6;padding:.6em;overflow:auto}
details{margin:.6em 0}
code{background:#f3f3f3;padding:0 .2em}
"""


def render_html(blocks: list[Any], title: str) -> str:
    """A self-contained HTML page (inline CSS, embedded images, no scripts)."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>\n<body>\n"
        f"{_html_blocks(blocks)}\n</body></html>\n"
    )


def _images(blocks: list[Any]) -> list[Image]:
    out: list[Image] = []
    for b in blocks:
        if isinstance(b, Image):
            out.append(b)
        elif isinstance(b, Details):
            out.extend(_images(b.blocks))
    return out


def write_report(run_dir: str | Path, out_dir: str | Path | None = None) -> ReportFiles:
    """Load a run and write report.md (+ PNGs) and report.html into `out_dir` (default: the
    run directory). Raises lab.errors.ResultsError for a directory that is not a run."""
    run = load(run_dir)
    out = Path(out_dir) if out_dir is not None else run.path
    out.mkdir(parents=True, exist_ok=True)
    blocks, warnings = build(run)
    files = ReportFiles(out / "report.html", out / "report.md", warnings=warnings)
    for img in _images(blocks):
        path = out / img.name
        path.write_bytes(img.png)
        files.images.append(path)
    files.markdown.write_text(render_markdown(blocks))
    title = f"lab report: {run.meta.get('run_id', run.path.name)}"
    files.html.write_text(render_html(blocks, title))
    return files
