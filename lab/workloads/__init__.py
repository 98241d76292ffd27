"""Workloads: one module each (bulk, multiplex, watch, rpc_under_load, handshake, k8s_mix).

Each module has `async def run(params, ctx) -> list[dict]` (sample rows, see
`lab.workloads.base`) and `estimate_s(params, base_rtt_ms, rate_mbit) -> float`; the params
models live in lab.scenario. `module(kind)` imports the module of a workload kind.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from lab.scenario.workloads import WORKLOAD_KINDS, Workload

KINDS: tuple[str, ...] = tuple(WORKLOAD_KINDS)  # a module lab/workloads/<kind>.py each


def module(kind: str) -> ModuleType:
    """The module implementing workload `kind`."""
    if kind not in KINDS:
        raise ValueError(f"unknown workload kind {kind!r}; known: {list(KINDS)}")
    return importlib.import_module(f"lab.workloads.{kind}")


def estimate_s(params: Workload, base_rtt_ms: float, rate_mbit: float | None) -> float:
    """Rough duration in seconds of one run of that workload (for the run's estimate)."""
    return float(module(params.kind).estimate_s(params, base_rtt_ms, rate_mbit))
