"""Planning of a run (pure): the order of (cell, repetition) pairs and protocols, seeds, and
time estimates in seconds, from the cells' links (Mbit/s, ms) and workloads."""

from __future__ import annotations

from collections.abc import Sequence

from lab.scenario.models import Cell
from lab.workloads import estimate_s

# Calibrated on the 2-core box (see docs/running.md): fixed costs of one cell-repetition and
# of one agent (process start, imports, connection set-up beyond the workload's own estimate).
CELL_OVERHEAD_S = 2.5
AGENT_OVERHEAD_S = 1.0


def protocol_order(protocols: Sequence[str], repetition: int) -> list[str]:
    """The scenario's protocol order on even repetitions, reversed on odd ones."""
    out = list(protocols)
    return out if repetition % 2 == 0 else out[::-1]


def plan(cells: Sequence[Cell], repeat: int) -> list[tuple[Cell, int]]:
    """(cell, repetition) pairs in run order: every cell of repetition 0, then of 1, …
    (so an interrupted run has covered every cell once as early as possible)."""
    return [(c, r) for r in range(repeat) for c in cells]


def cell_seed(cell: Cell, repetition: int) -> int:
    """The emulator seed of (cell, repetition), derived from the scenario seed with
    numpy's SeedSequence([scenario seed, cell index, repetition])."""
    return cell.seed(repetition)


def downlink_rate(cell: Cell) -> float | None:
    """The server → client rate in Mbit/s (None = unlimited)."""
    return cell.link.downlink.rate_mbit


def mean_loss(cell: Cell) -> float:
    """The downlink's mean random loss probability (0 for drop lists and no loss)."""
    loss = cell.link.downlink.loss
    if loss.model == "bernoulli":
        return float(loss.rate)
    if loss.model == "gilbert_elliott":
        return float(loss.mean_loss)
    return 0.0


def effective_rate(cell: Cell) -> float | None:
    """Expected bulk goodput (Mbit/s) for estimates: the link rate, capped by loss-limited
    throughput (Mathis: 1.22 × MSS / (RTT × √p), × 1.5 since cubic recovers faster than the
    Reno model — calibrated on lossy.yaml); None = unlimited."""
    rate = downlink_rate(cell)
    p, rtt_s = mean_loss(cell), cell.link.base_rtt_ms / 1e3
    if p > 0 and rtt_s > 0:
        mathis = 1.5 * 1.22 * 1448 * 8 / (rtt_s * p**0.5) / 1e6
        rate = mathis if rate is None else min(rate, mathis)
    return rate


def estimate_cell_s(cell: Cell) -> float:
    """Estimated seconds of one repetition of `cell` (all protocols, overhead included)."""
    rtt, rate = cell.link.base_rtt_ms, effective_rate(cell)
    per_protocol = AGENT_OVERHEAD_S + sum(estimate_s(w, rtt, rate) for w in cell.workloads)
    return CELL_OVERHEAD_S + len(cell.scenario.protocols) * per_protocol


def estimate_run_s(pairs: Sequence[tuple[Cell, int]]) -> float:
    """Estimated seconds of the given (cell, repetition) pairs."""
    return sum(estimate_cell_s(c) for c, _ in pairs)


def bytes_sizes(cell: Cell) -> tuple[int, ...]:
    """Every /bytes/{n} size the cell's workloads fetch (for servers that pre-write files)."""
    sizes: set[int] = set()
    for w in cell.workloads:
        for attr in ("object_bytes", "rpc_bytes", "bulk_bytes", "response_bytes", "get_bytes"):
            if hasattr(w, attr):
                sizes.add(int(getattr(w, attr)))
        if w.kind == "bulk":
            sizes.add(int(w.bytes))
    return tuple(sorted(sizes))
