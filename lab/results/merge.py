"""`lab merge RUN… -o DIR`: join shards (and resumed or partial runs) of one scenario into one
run directory.

Runs are merged only when they measured the same thing: the same scenario (and cells, repeat,
plan), seeds, git commit, Python and library versions, impairment backend and stack settings —
otherwise the merge is refused with a message naming what differs, as pyperf refuses to combine
incompatible results. What may differ between them is what belongs to one machine or one
start: run id, times, status, the machines (`machines`, `environment` beyond the versions),
per-pair records.

Each input contributes its completed (cell, repetition) pairs. A pair completed by two inputs
is a duplicate: refused, unless `keep_first` (the copy of the input named first is kept). Pairs
of the plan that no input completed are missing: the merged run is then written "interrupted"
(`lab run --resume DIR` runs the missing pairs) and the outcome lists them.

The merged directory is written through `RunWriter`, so its checksums and schema are those of
any run; the emulator outputs and logs of the kept pairs are copied beside it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lab.errors import ResultsError
from lab.results.reader import RunResults, load
from lab.results.schema import Pair, RunStatus
from lab.results.writer import RunWriter

# What must be equal for runs to be merged: (what the refusal names, run.json paths).
COMPATIBILITY: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("results schema", ("schema_version",)),
    ("scenario", ("scenario", "cells", "repeat", "plan")),
    ("seeds", ("seed",)),
    ("git commit", ("git_commit",)),
    ("library versions", ("environment.python", "environment.libraries")),
    ("impairment backend", ("impairment", "backend", "link_model_reseeded_per_protocol")),
    ("stack settings", ("stacks", "quic_engine", "quic_engine_override", "implementation")),
)
# Top-level run.json fields of one start of one machine: they may differ between the inputs.
PER_RUN_FIELDS = frozenset(
    {
        "run_id",
        "created_utc",
        "finished_utc",
        "status",
        "completed",
        "sha256",
        "scenario_file",
        "environment",
        "cell_runs",
        "flagged",
        "current",
        "timing",
        "shard",
        "machines",
        "merged_from",
    }
)
_SHOWN = 10  # pairs named in a message before "… and N more"


@dataclass(frozen=True)
class MergeOutcome:
    """What `merge_runs` wrote: the run, its pairs against the plan, and what it noticed."""

    path: Path
    status: RunStatus
    pairs: int  # (cell, repetition) pairs in the merged run
    planned: int  # pairs of the plan
    missing: list[Pair]  # planned pairs no input completed
    duplicates: dict[Pair, list[str]]  # pair → run ids that completed it (kept: the first)
    warnings: list[str] = field(default_factory=list)


def merge_runs(
    runs: Sequence[str | Path], out: str | Path, *, keep_first: bool = False
) -> MergeOutcome:
    """Merge the run directories `runs` into the new run directory `out` (its name is the
    merged run's id). ResultsError (nothing written) when they are incompatible, when a pair
    is duplicated and not `keep_first`, or when `out` exists."""
    if not runs:
        raise ResultsError("nothing to merge: give at least one run directory")
    sources = [load(p) for p in runs]
    ids = [s.meta.get("run_id") or s.path.name for s in sources]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise ResultsError(f"run {twice[0]} is given twice")
    check_compatible([(str(i), s.meta) for i, s in zip(ids, sources, strict=True)])
    duplicates = duplicate_pairs(ids, [s.completed for s in sources])
    check_seeds(ids, sources, duplicates)
    if duplicates and not keep_first:
        raise ResultsError(
            f"{len(duplicates)} (cell, repetition) pair(s) completed by more than one run: "
            f"{_pairs_text(duplicates, duplicates)}; merge only one copy of each (or keep the "
            "first run's with --keep-first)"
        )
    kept = kept_pairs([s.completed for s in sources])
    planned = plan_pairs(sources[0].meta)
    merged = {p for k in kept for p in k}
    missing = [p for p in planned if p not in merged]
    extra = sorted(merged - set(planned))
    if extra:
        raise ResultsError(f"pairs outside the scenario's plan: {_pairs_text(extra)}")
    status: RunStatus = "interrupted" if missing else "complete"
    path = _write(Path(out), sources, ids, kept, status)
    warnings = machine_warnings(sources) + [
        f"{i}: status {s.status}; only its completed pairs are merged"
        for i, s in zip(ids, sources, strict=True)
        if s.status != "complete"
    ]
    return MergeOutcome(path, status, len(merged), len(planned), missing, duplicates, warnings)


# --- compatibility -----------------------------------------------------------------------
def check_compatible(metas: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """ResultsError naming what differs when the runs did not measure the same thing, e.g.
    "cannot merge: git commit differs: git_commit is 'abc' in A, 'def' in B"."""
    (first_id, first), *rest = metas
    named = {path.split(".")[0] for _, paths in COMPATIBILITY for path in paths}
    for run_id, meta in rest:
        for what, paths in COMPATIBILITY:
            for path in paths:
                diff = first_difference(_get(first, path), _get(meta, path), path)
                if diff is not None:
                    where, a, b = diff
                    verb = "differ" if what.endswith("s") else "differs"
                    raise ResultsError(
                        f"cannot merge: {what} {verb}: {where} is {_show(a)} in {first_id}, "
                        f"{_show(b)} in {run_id}"
                    )
        keys = (set(first) | set(meta)) - PER_RUN_FIELDS - named
        for key in sorted(keys):
            diff = first_difference(first.get(key), meta.get(key), key)
            if diff is not None:
                where, a, b = diff
                raise ResultsError(
                    f"cannot merge: {key} differs: {where} is {_show(a)} in {first_id}, "
                    f"{_show(b)} in {run_id}"
                )


def first_difference(a: Any, b: Any, where: str) -> tuple[str, Any, Any] | None:
    """The first dotted path (from `where`) at which `a` and `b` differ, with both values;
    None when they are equal (dict keys in sorted order, list items by index)."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            sub = first_difference(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{where}.{key}")
            if sub is not None:
                return sub
        return None
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            sub = first_difference(x, y, f"{where}[{i}]")
            if sub is not None:
                return sub
        return None
    same = type(a) is type(b) and a == b
    return None if same else (where, a, b)


class _Absent:
    def __repr__(self) -> str:
        return "absent"


_ABSENT = _Absent()


def check_seeds(
    ids: Sequence[str], sources: Sequence[RunResults], duplicates: Mapping[Pair, list[str]]
) -> None:
    """ResultsError when one pair was run with two different emulator seeds."""
    by_id = dict(zip(ids, sources, strict=True))
    for (cell, rep), holders in duplicates.items():
        seeds = {h: _cell_runs(by_id[h].meta).get(f"{cell}-{rep}", {}).get("seed") for h in holders}
        if len({json.dumps(s) for s in seeds.values()}) > 1:
            shown = ", ".join(f"{s} in {h}" for h, s in seeds.items())
            raise ResultsError(f"cannot merge: seeds differ: pair {cell}-{rep} has seed {shown}")


def machine_warnings(sources: Sequence[RunResults]) -> list[str]:
    """A sentence per machine property that differs between the inputs (kernel, CPU model,
    CPUs): their timings are still comparable within a pair, not across machines."""
    out = []
    envs = [s.meta.get("environment") or {} for s in sources]
    machines = [m for s in sources for m in s.meta.get("machines") or []]
    for what, values in (
        ("kernel", [e.get("kernel") for e in envs]),
        ("CPU model", [m.get("cpu_model") for m in machines]),
        ("CPUs usable", [m.get("cpus_usable") for m in machines]),
        ("CPU limit", [m.get("cpu_limit") for m in machines]),
    ):
        distinct = _distinct(values)
        if len(distinct) > 1:
            out.append(f"{what} differs between the runs: {', '.join(map(str, distinct))}")
    return out


# --- pairs --------------------------------------------------------------------------------
def plan_pairs(meta: Mapping[str, Any]) -> list[Pair]:
    """Every (cell, repetition) pair of a run's whole plan, in run order: run.json `plan`, or
    (runs from before it) every cell of repetition 0, then of 1, …"""
    recorded = (meta.get("plan") or {}).get("pairs")
    if recorded is not None:
        return [(str(c), int(r)) for c, r in recorded]
    repeat = int(meta.get("repeat") or (meta.get("scenario") or {}).get("repeat") or 1)
    cells = [str(c["cell"]) for c in meta.get("cells", [])]
    return [(c, r) for r in range(repeat) for c in cells]


def duplicate_pairs(
    ids: Sequence[str], completed: Sequence[Iterable[Pair]]
) -> dict[Pair, list[str]]:
    """Pairs completed by more than one run → those runs' ids, in the order given."""
    holders: dict[Pair, list[str]] = {}
    for run_id, pairs in zip(ids, completed, strict=True):
        for pair in pairs:
            holders.setdefault(pair, []).append(run_id)
    return {p: h for p, h in sorted(holders.items()) if len(h) > 1}


def kept_pairs(completed: Sequence[Iterable[Pair]]) -> list[set[Pair]]:
    """Per run, the pairs it contributes: its completed pairs no earlier run completed."""
    seen: set[Pair] = set()
    out = []
    for pairs in completed:
        mine = set(pairs) - seen
        seen |= mine
        out.append(mine)
    return out


# --- writing ------------------------------------------------------------------------------
def _write(
    out: Path,
    sources: Sequence[RunResults],
    ids: Sequence[str],
    kept: Sequence[set[Pair]],
    status: RunStatus,
) -> Path:
    base = sources[0].meta
    merged_pairs = {p for k in kept for p in k}
    created = _earliest([str(s.meta.get("created_utc") or "") for s in sources])
    fixed = {k: v for k, v in base.items() if k not in PER_RUN_FIELDS}
    for name in ("schema_version", "scenario", "seed", "cells", "impairment", "stacks"):
        fixed.pop(name, None)
    writer = RunWriter.create(
        out,
        scenario=base["scenario"],
        seed=int(base.get("seed") or 0),
        cells=base.get("cells", []),
        scenario_file=base.get("scenario_file"),
        impairment=base.get("impairment") or {},
        stacks=base.get("stacks") or {},
        environment=merged_environment([s.meta.get("environment") or {} for s in sources]),
        git=str(base.get("git_commit")),
        extra={**fixed, "git_commit": base.get("git_commit"), "shard": None},
        now=created,
    )
    cell_runs: dict[str, Any] = {}
    flagged: set[str] = set()
    machines: list[dict[str, Any]] = []
    merged_from = []
    for run_id, src, mine in zip(ids, sources, kept, strict=True):
        samples = src.samples
        if len(samples) and mine:
            keys = list(zip(samples["cell"], samples["repetition"].astype(int), strict=True))
            writer.append_samples(samples[[k in mine for k in keys]])
        records = _cell_runs(src.meta)
        for cell, rep in sorted(mine):
            tag = f"{cell}-{rep}"
            writer.mark_completed(cell, rep)
            if tag in records:
                cell_runs[tag] = {**records[tag], "run_id": run_id}
            _copy_outputs(src.path, writer.path, tag)
        flagged |= {f for f in src.meta.get("flagged") or [] if _pair_of(f) in mine}
        for err in src.errors.to_dict("records"):
            pair = (str(err["cell"]), int(err["repetition"]))
            if pair in mine or (pair not in merged_pairs and _first_holder(pair, src, sources)):
                writer.record_error(
                    pair[0], pair[1], _opt(err["protocol"]), _opt(err["workload"]), err["error"]
                )
        shard = src.meta.get("shard") or {}
        for m in src.meta.get("machines") or []:
            machines.append({**m, "run_id": run_id, "shard": shard.get("label")})
        merged_from.append(
            {
                "run_id": run_id,
                "status": src.status,
                "shard": shard.get("label"),
                "completed": len(src.completed),
                "kept": len(mine),
            }
        )
    writer.update_meta(
        cell_runs=dict(sorted(cell_runs.items())),
        flagged=sorted(flagged),
        machines=machines,
        merged_from=merged_from,
        timing=summed_timing([s.meta.get("timing") or {} for s in sources]),
    )
    writer.finish(status)
    return writer.path


def merged_environment(envs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The inputs' `environment`: a field equal in all of them as it is, one that differs as
    the list of its distinct values (in input order)."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(k for e in envs for k in e):
        distinct = _distinct([e.get(key) for e in envs])
        out[key] = distinct[0] if len(distinct) == 1 else distinct
    return out


def summed_timing(timings: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The inputs' `timing` added up (machine-seconds: the shards ran side by side)."""
    wall = round(sum(float(t.get("wall_s") or 0.0) for t in timings), 3)
    work = round(sum(float(t.get("workload_s") or 0.0) for t in timings), 3)
    overhead = round(max(0.0, wall - work), 3)
    return {
        "wall_s": wall,
        "workload_s": work,
        "overhead_s": overhead,
        "overhead_fraction": round(overhead / wall, 4) if wall else None,
    }


def _copy_outputs(src: Path, dst: Path, tag: str) -> None:
    """The emulator outputs (emulator/<tag>/) and logs (logs/<tag>-*) of one pair."""
    emu = src / "emulator" / tag
    if emu.is_dir():
        shutil.copytree(emu, dst / "emulator" / tag)
    logs = sorted((src / "logs").glob(f"{tag}-*")) if (src / "logs").is_dir() else []
    if logs:
        (dst / "logs").mkdir(exist_ok=True)
        for f in logs:
            shutil.copy2(f, dst / "logs" / f.name)


def _first_holder(pair: Pair, src: RunResults, sources: Sequence[RunResults]) -> bool:
    """True when `src` is the first input with an error for `pair` (a failed pair's errors
    are kept once, from one run)."""
    for s in sources:
        errs = s.errors
        pairs = zip(errs["cell"].astype(str), errs["repetition"].astype(int), strict=True)
        if pair in set(pairs):
            return s is src
    return False


def _earliest(stamps: Sequence[str]) -> datetime | None:
    """The earliest of run.json UTC timestamps ("2026-01-01T00:00:00Z"); None when none parses."""
    times = []
    for text in stamps:
        try:
            times.append(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC))
        except ValueError:
            continue
    return min(times, default=None)


def _cell_runs(meta: Mapping[str, Any]) -> dict[str, Any]:
    runs = meta.get("cell_runs") or {}
    return dict(runs) if isinstance(runs, dict) else {}


def _pair_of(tag: str) -> Pair:
    cell, _, rep = tag.rpartition("-")
    return cell, int(rep) if rep.isdigit() else -1


def _opt(value: Any) -> str | None:
    return None if value is None or value != value else str(value)  # NaN from pandas


def _get(meta: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted run.json path (`_ABSENT` when there is none); "plan" is the
    plan's pairs, as recorded or (runs from before `plan`) as implied by cells and repeat."""
    if path == "plan":
        return [list(p) for p in plan_pairs(meta)]
    node: Any = meta
    for part in path.split("."):
        node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
    return node


def _distinct(values: Iterable[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for v in values:
        seen.setdefault(json.dumps(v, sort_keys=True, default=str), v)
    return list(seen.values())


def _show(value: Any) -> str:
    text = repr(value) if not isinstance(value, dict | list) else json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _pairs_text(pairs: Iterable[Pair], holders: Mapping[Pair, list[str]] | None = None) -> str:
    """ "c000-1, c001-0 (in A, B), … and 3 more"."""
    items = sorted(pairs)
    shown = []
    for cell, rep in items[:_SHOWN]:
        runs = f" (in {', '.join(holders[(cell, rep)])})" if holders else ""
        shown.append(f"{cell}-{rep}{runs}")
    more = f" … and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
    return ", ".join(shown) + more
