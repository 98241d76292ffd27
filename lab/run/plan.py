"""Planning of a run (pure): the order of (cell, repetition) pairs and protocols, seeds,
time estimates in seconds, from the cells' links (Mbit/s, ms) and workloads, and the shards of
a plan (`lab run --shard I/N`), balanced by those estimates."""

from __future__ import annotations

import heapq
import re
from collections.abc import Sequence
from dataclasses import dataclass

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


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard `index` of `count` (1-based, as `--shard 2/3` says it): a subset of a plan."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.index <= self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 1 ≤ I ≤ N")

    @property
    def label(self) -> str:
        """The run-id suffix, e.g. "s2of3"."""
        return f"s{self.index}of{self.count}"

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


MAX_SHARDS = 10_000  # one pod per shard; more shards than pairs leaves shards empty
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> Shard:
    """ "I/N" (1 ≤ I ≤ N ≤ MAX_SHARDS) as a Shard; ValueError saying what is wrong."""
    m = _SHARD.match(text)
    if m is None:
        raise ValueError(f"--shard {text!r}: expected I/N, e.g. 1/3")
    index, count = int(m.group(1)), int(m.group(2))
    if not 1 <= count <= MAX_SHARDS:
        raise ValueError(f"--shard {text!r}: N must be between 1 and {MAX_SHARDS:,}")
    if not 1 <= index <= count:
        raise ValueError(f"--shard {text!r}: I must be between 1 and N ({count})")
    return Shard(index, count)


def shard_of_pairs(estimates: Sequence[float], count: int) -> list[int]:
    """The shard (0-based) of each pair, given each pair's estimated seconds.

    Longest estimate first (ties: plan order), each pair goes to the shard with the least
    estimated time so far (ties: the lowest shard). Deterministic, and balanced: the most and
    the least loaded shard differ by at most the longest single estimate (when the busiest
    shard got its last pair it was the least loaded one)."""
    heap = [(0.0, k) for k in range(count)]  # (estimated seconds so far, shard): a min-heap
    out = [0] * len(estimates)
    for i in sorted(range(len(estimates)), key=lambda i: (-estimates[i], i)):
        load, k = heapq.heappop(heap)
        out[i] = k
        heapq.heappush(heap, (load + estimates[i], k))
    return out


def shard_pairs(pairs: Sequence[tuple[Cell, int]], shard: Shard) -> list[tuple[Cell, int]]:
    """The pairs of `shard`, in plan order (so an interrupted shard has covered its cells
    once as early as possible). The shards of one plan are disjoint and cover it."""
    owner = shard_of_pairs([estimate_cell_s(c) for c, _ in pairs], shard.count)
    return [pair for pair, s in zip(pairs, owner, strict=True) if s == shard.index - 1]


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
