"""Planning of a run (pure): the order of (cell, repetition) pairs and protocols, seeds, and
time estimates in seconds, from the cells' links (Mbit/s, ms) and workloads."""

from __future__ import annotations

from collections.abc import Sequence

from lab.link.mathis import mathis_mbit
from lab.net.mtu import TCP_MSS_IPV4_BYTES
from lab.scenario.models import Cell
from lab.workloads import estimate_s

# Calibrated on the 2-core box (see docs/running.md): fixed costs of one cell-repetition and
# of one agent (process start, imports, connection set-up beyond the workload's own estimate).
CELL_OVERHEAD_S = 2.5
AGENT_OVERHEAD_S = 1.0
# Mathis constant of the estimates: the paper's 1.22, × 1.5 since cubic recovers faster than the
# Reno model (calibrated on lossy.yaml).
ESTIMATE_MATHIS_C = 1.5 * 1.22


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
    return cell.link.downlink.mean_loss


def effective_rate(cell: Cell) -> float | None:
    """Expected bulk goodput (Mbit/s) for estimates: the link rate, capped by loss-limited
    throughput (Mathis with ESTIMATE_MATHIS_C and the IPv4 MSS); None = unlimited."""
    rate = downlink_rate(cell)
    bound = mathis_mbit(
        TCP_MSS_IPV4_BYTES, cell.link.base_rtt_ms, mean_loss(cell), c=ESTIMATE_MATHIS_C
    )
    if bound is not None:
        rate = bound if rate is None else min(rate, bound)
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
