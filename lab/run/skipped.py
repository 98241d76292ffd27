"""Workloads a cell's server cannot serve (pure): the runner leaves them out of the cell's
agents and run.json lists them under `skipped` with the reason — a matrix over servers
(`server: [reference, go, caddy]`) is not an error because Caddy has no watch route."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from lab.peers import registry
from lab.scenario.models import Cell
from lab.scenario.workloads import Workload


@dataclass(frozen=True, slots=True)
class SkippedWorkload:
    """One workload of one cell that its server cannot serve."""

    cell: str
    index: int  # its position in the scenario's `workloads:` list
    workload: str  # its kind
    server: str
    reason: str

    def record(self) -> dict[str, Any]:
        """The run.json `skipped` entry."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ServedWorkloads:
    """A cell's workloads split into those its server serves (with their indices in the
    scenario's list, which the samples keep) and those it skips."""

    indices: tuple[int, ...]
    workloads: tuple[Workload, ...]
    skipped: tuple[SkippedWorkload, ...]


def served(cell: Cell) -> ServedWorkloads:
    """Which of `cell`'s workloads its server serves; the others with the routes they lack."""
    impl = registry.get(cell.scenario.server)
    indices: list[int] = []
    skipped: list[SkippedWorkload] = []
    for i, w in enumerate(cell.workloads):
        missing = impl.missing_routes(w.kind)
        if not missing:
            indices.append(i)
            continue
        reason = f"server {impl.name!r} does not serve the {', '.join(missing)} route(s)"
        skipped.append(SkippedWorkload(cell.id, i, w.kind, impl.name, reason))
    workloads = tuple(cell.workloads[i] for i in indices)
    return ServedWorkloads(tuple(indices), workloads, tuple(skipped))


def skipped_record(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """run.json `skipped`: every workload of every cell that its server cannot serve."""
    return [s.record() for c in cells for s in served(c).skipped]


def restore_indices(agent_result: dict[str, Any], indices: Sequence[int]) -> dict[str, Any]:
    """The agent's result with each workload's `index` (its position in the agent's list)
    mapped back to the position in the scenario's list (`ServedWorkloads.indices`)."""
    workloads = [{**w, "index": indices[int(w["index"])]} for w in agent_result["workloads"]]
    return {**agent_result, "workloads": workloads}
