"""run.json records of a run (pure): what the impairment backend applies per cell, what
happened in one (cell, repetition) — phase times in seconds, UTC timestamps —, the plan and
the shard of a run, and the machines it ran on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from lab.link.netem import netem_commands, netem_not_expressed
from lab.scenario.models import Cell

Backend = Literal["netem", "emulator"]


@dataclass
class CellOutcome:
    """What happened in one (cell, repetition)."""

    cell: str
    repetition: int
    ok: bool
    seed: int
    prefix: str = ""  # the topology's name prefix (namespaces <prefix>-cli/-rtr/-srv)
    errors: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # emulator flags (lateness, TUN drops)
    load_avg: float | None = None  # host 1-min load average at the end (other processes' CPU)
    setup_s: float = 0.0
    workload_s: float = 0.0
    collect_s: float = 0.0
    teardown_s: float = 0.0
    wall_s: float = 0.0
    # protocol → what its senders used (lab.run.senders.transport_record)
    transport: dict[str, Any] = field(default_factory=dict)


def cell_key(o: CellOutcome) -> str:
    """The run.json key of an outcome's (cell, repetition), e.g. "c000-1"."""
    return f"{o.cell}-{o.repetition}"


def cell_record(o: CellOutcome, earlier: dict[str, Any], now: datetime) -> dict[str, Any]:
    """run.json `cell_runs` entry of one outcome; keeps `earlier`'s `finished_utc`, else
    `now` (a UTC datetime) to the second. Times in seconds, rounded to ms."""
    return {
        "seed": o.seed,
        "prefix": o.prefix,
        "ok": o.ok,
        "problems": o.problems,
        "load_avg_1min": o.load_avg,
        "errors": o.errors,
        "transport": o.transport,
        "finished_utc": earlier.get("finished_utc") or now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        **{
            k: round(getattr(o, k), 3)
            for k in ("wall_s", "setup_s", "workload_s", "collect_s", "teardown_s")
        },
    }


def impairment_info(backend: Backend, cells: Sequence[Cell]) -> dict[str, Any]:
    """What the backend applies per cell (run.json `impairment`)."""
    applied: dict[str, Any] = {}
    for cell in cells:
        link = cell.link.model_dump(mode="json")
        if backend == "netem":
            cmds = netem_commands(
                cell.link,
                uplink_dev="<router-server-if>",
                downlink_dev="<router-client-if>",
                netns="<router-ns>",
            )
            applied[cell.id] = {
                "link": link,
                "tc": [" ".join(c) for c in cmds],
                "seeded": False,
                "not_expressed": netem_not_expressed(cell.link),
            }
        else:
            applied[cell.id] = {
                "link": link,
                "tool": "lab.link.emulator (seeded per cell and repetition, restarted from "
                "the seed for each protocol)",
            }
    return {"backend": backend, "applied": applied}


def pairs_record(pairs: Sequence[tuple[Cell, int]]) -> list[list[Any]]:
    """(cell, repetition) pairs as run.json lists them: [["c000", 0], ...], in run order."""
    return [[c.id, r] for c, r in pairs]


def plan_record(pairs: Sequence[tuple[Cell, int]], estimate_s: float) -> dict[str, Any]:
    """run.json `plan`: every pair of the whole run (all shards), and its estimate in s."""
    return {"pairs": pairs_record(pairs), "estimate_s": round(estimate_s, 1)}


def shard_record(
    index: int, count: int, pairs: Sequence[tuple[Cell, int]], estimate_s: float
) -> dict[str, Any]:
    """run.json `shard`: which shard this run is (1-based `index` of `count`), its pairs and
    their estimate in s."""
    return {
        "index": index,
        "count": count,
        "label": f"s{index}of{count}",
        "pairs": pairs_record(pairs),
        "estimate_s": round(estimate_s, 1),
    }


def machine_record(machine: dict[str, Any], now: datetime, completed_before: int) -> dict[str, Any]:
    """One run.json `machines` entry: the machine a start (or a resume) ran on, when (UTC, to
    the second), and how many pairs were already completed then."""
    return {
        **machine,
        "started_utc": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "completed_before": completed_before,
    }
