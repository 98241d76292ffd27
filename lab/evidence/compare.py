"""`lab compare RUN_A RUN_B`: what changed between two runs (two versions, two implementations).

Cells are matched by their matrix-axis values (falling back to the cell id), then every
protocol × workload × metric × handshake mode is compared on its per-repetition values
(the repetition is the independent unit). A difference is reported as a change only when all of:

1. the 95% bootstrap interval of median(B) / median(A) excludes 1;
2. the two-sided Mann-Whitney U test on the per-repetition values, with Benjamini-Hochberg
   correction over all comparisons of the two runs, gives q < alpha (0.05) — when a side has
   fewer than 4 repetitions the test cannot reach 0.05 at all, so it is skipped and the row is
   flagged "few repetitions";
3. the relative change |median(B) / median(A) − 1| is at least `min_effect` (default 10%, the
   relative minimum effect the verdicts use too: lab.evidence.effect).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control

from lab.evidence.effect import MIN_RELATIVE_EFFECT
from lab.evidence.significance import bootstrap_ratio, mann_whitney_p
from lab.evidence.stats import Interval
from lab.evidence.verdicts import direction, effective_mode
from lab.results.reader import load

ALPHA = 0.05
MIN_REPS_FOR_TEST = 4  # exact two-sided Mann-Whitney with 3 vs 3 cannot go below p = 0.1
EXCLUDED = frozenset({"cpu_bound", "congestion_limited", "host_busy"})  # flags, not measures
Change = Literal["improved", "regressed", "no change", "undecided"]


@dataclass(frozen=True)
class Difference:
    """One metric of one protocol/workload/mode in one matched cell, run B against run A."""

    cell: str  # run A's cell id
    condition: str  # the cell's axis values, e.g. "link.loss.rate=0.01, watch.streams=16"
    protocol: str
    workload: str
    metric: str
    mode: str | None
    median_a: float
    median_b: float
    ratio: Interval  # median(B) / median(A)
    n_a: int
    n_b: int
    p: float  # Mann-Whitney U, two-sided (NaN when not computed)
    q: float  # Benjamini-Hochberg adjusted p (NaN when not computed)
    change: Change
    flags: tuple[str, ...] = ()

    @property
    def relative(self) -> float:
        """median(B) / median(A) − 1 (e.g. 0.12 = +12%)."""
        return self.ratio.point - 1.0


def _axes_key(axes: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), repr(float(v)) if _num(v) else repr(v)) for k, v in axes.items()))


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def match_cells(meta_a: dict[str, Any], meta_b: dict[str, Any]) -> dict[str, str]:
    """Map run B's cell ids to run A's: by identical axis values when both runs list their
    cells with axes, else by cell id."""
    cells_a = {c["cell"]: c.get("axes") or {} for c in meta_a.get("cells", [])}
    cells_b = {c["cell"]: c.get("axes") or {} for c in meta_b.get("cells", [])}
    by_axes = {_axes_key(ax): cid for cid, ax in cells_a.items()}
    out: dict[str, str] = {}
    for cid, ax in cells_b.items():
        key = _axes_key(ax)
        if key in by_axes and len(by_axes) == len(cells_a):
            out[cid] = by_axes[key]
        elif cid in cells_a and not ax:
            out[cid] = cid
    if not cells_a or not cells_b:  # runs without a cell list: trust the ids
        return {}
    return out


def _condition_text(meta: dict[str, Any]) -> dict[str, str]:
    return {
        c["cell"]: ", ".join(f"{k}={v}" for k, v in (c.get("axes") or {}).items())
        for c in meta.get("cells", [])
    }


def _per_rep(samples: pd.DataFrame) -> pd.DataFrame:
    rows = samples[~samples["metric"].isin(EXCLUDED) & samples["value"].notna()]
    rows = rows.assign(_mode=effective_mode(rows).fillna("-"))
    keys = ["cell", "protocol", "workload", "metric", "_mode", "repetition"]
    return rows.groupby(keys, sort=True)["value"].median().reset_index()


def compare(
    a: pd.DataFrame,
    b: pd.DataFrame,
    meta_a: dict[str, Any] | None = None,
    meta_b: dict[str, Any] | None = None,
    *,
    min_effect: float = MIN_RELATIVE_EFFECT,
    alpha: float = ALPHA,
    seed: int = 0,
) -> list[Difference]:
    """Every comparable (cell, protocol, workload, metric, mode) of samples `a` and `b`."""
    meta_a, meta_b = meta_a or {}, meta_b or {}
    mapping = match_cells(meta_a, meta_b)
    ra, rb = _per_rep(a), _per_rep(b)
    if mapping:
        rb = rb.assign(cell=rb["cell"].map(mapping))
        rb = rb[rb["cell"].notna()]
    cond = _condition_text(meta_a)
    keys = ["cell", "protocol", "workload", "metric", "_mode"]
    gb = dict(iter(rb.groupby(keys, sort=True)))
    rows: list[dict[str, Any]] = []
    for key, ga in ra.groupby(keys, sort=True):
        gbk = gb.get(key)
        if gbk is None:
            continue
        va, vb = ga["value"].to_numpy(float), gbk["value"].to_numpy(float)
        testable = min(va.size, vb.size) >= MIN_REPS_FOR_TEST
        rows.append(
            {
                "key": key,
                "va": va,
                "vb": vb,
                "ratio": bootstrap_ratio(vb, va, seed=seed),
                "p": mann_whitney_p(va, vb) if testable else float("nan"),
            }
        )
    ps = np.array([r["p"] for r in rows], dtype=float)
    qs = np.full(ps.shape, np.nan)
    tested = np.isfinite(ps)
    if tested.any():
        qs[tested] = false_discovery_control(ps[tested], method="bh")
    out = []
    for r, q in zip(rows, qs, strict=True):
        out.append(_difference(r, float(q), cond.get(r["key"][0], ""), min_effect, alpha))
    return out


def _difference(
    r: dict[str, Any], q: float, condition: str, min_effect: float, alpha: float
) -> Difference:
    cell, protocol, workload, metric, mode = r["key"]
    ratio: Interval = r["ratio"]
    va, vb = r["va"], r["vb"]
    flags: list[str] = []
    if min(va.size, vb.size) < MIN_REPS_FOR_TEST:
        flags.append(f"few repetitions ({va.size}/{vb.size}): rank test skipped")
    if min(va.size, vb.size) < 2 or np.isnan(ratio.point):
        change: Change = "undecided"
        if np.isnan(ratio.point):
            flags.append("median of A is 0: no relative change")
    else:
        big = abs(ratio.point - 1.0) >= min_effect
        significant = ratio.excludes(1.0) and (np.isnan(q) or q < alpha)
        if big and significant:
            lower_better = direction(str(metric)) == "lower"
            change = "improved" if (ratio.point < 1.0) == lower_better else "regressed"
        else:
            change = "no change"
    return Difference(
        cell=str(cell),
        condition=condition,
        protocol=str(protocol),
        workload=str(workload),
        metric=str(metric),
        mode=None if mode == "-" else str(mode),
        median_a=float(np.median(va)),
        median_b=float(np.median(vb)),
        ratio=ratio,
        n_a=int(va.size),
        n_b=int(vb.size),
        p=float(r["p"]),
        q=q,
        change=change,
        flags=tuple(flags),
    )


def difference_frame(diffs: list[Difference]) -> pd.DataFrame:
    """Differences as a table (one row each)."""
    return pd.DataFrame(
        [
            {
                "cell": d.cell,
                "condition": d.condition,
                "protocol": d.protocol,
                "workload": d.workload,
                "metric": d.metric,
                "mode": d.mode,
                "median_a": d.median_a,
                "median_b": d.median_b,
                "relative": d.relative,
                "ratio_low": d.ratio.low,
                "ratio_high": d.ratio.high,
                "n_a": d.n_a,
                "n_b": d.n_b,
                "p": d.p,
                "q": d.q,
                "change": d.change,
                "flags": "; ".join(d.flags),
            }
            for d in diffs
        ]
    )


# --- entry points for the CLI -------------------------------------------------------------
def compare_runs(
    run_a: str | Path, run_b: str | Path, *, min_effect: float = MIN_RELATIVE_EFFECT
) -> list[Difference]:
    """Load two run directories and compare them (B against A)."""
    a, b = load(run_a), load(run_b)
    return compare(a.samples, b.samples, a.meta, b.meta, min_effect=min_effect)


def difference_table(diffs: list[Difference], *, show_all: bool = False) -> Any:
    """A rich Table of the changes (every row with `show_all`)."""
    from rich.table import Table  # deferred: rich is only needed for the CLI's table

    counts = {c: sum(d.change == c for d in diffs) for c in get_args(Change)}
    title = "lab compare (B against A): " + ", ".join(f"{v} {k}" for k, v in counts.items())
    table = Table(title=title, show_lines=False)
    for col in ("change", "condition", "what", "A → B", "B/A − 1 [95% CI]", "q", "flags"):
        table.add_column(col, overflow="fold")
    rows = diffs if show_all else [d for d in diffs if d.change in ("improved", "regressed")]
    for d in rows:
        style = {"improved": "green", "regressed": "red"}.get(d.change, "dim")
        ci = f"{d.relative:+.1%}"
        if not np.isnan(d.ratio.low):
            ci += f" [{d.ratio.low - 1:+.1%}, {d.ratio.high - 1:+.1%}]"
        what = f"{d.protocol} {d.workload} {d.metric}" + (f" ({d.mode})" if d.mode else "")
        table.add_row(
            f"[{style}]{d.change}[/{style}]",
            d.condition or d.cell,
            what,
            f"{d.median_a:.4g} → {d.median_b:.4g}",
            ci,
            "—" if np.isnan(d.q) else f"{d.q:.2g}",
            "; ".join(d.flags),
        )
    if not rows:
        table.add_row("no change", "", "nothing changed beyond noise", "", "", "", "")
    return table
