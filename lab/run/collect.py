"""Agent results → samples rows (pure): one cell, repetition and protocol at a time, through
lab.workloads.aggregate (RTTs in ms, rates in Mbit/s, CPU and wall times in seconds). Here the
agent's raw watch-event stamps meet the emulator's drop log of the same protocol's phase (one
host clock), for the loss-anchored HOL metrics."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from lab.run.plan import downlink_rate
from lab.scenario.models import Cell
from lab.workloads.aggregate import CpuUsage, aggregate


def axis_value(value: Any) -> Any:
    """An axis value as a parquet-friendly scalar (lists and mappings as JSON text)."""
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return json.dumps(value, sort_keys=True)


def cell_frame(
    cell: Cell,
    repetition: int,
    protocol: str,
    implementation: str,
    agent_result: dict[str, Any],
    *,
    emulator: bool,
    drops: pd.DataFrame | None = None,
    senders: pd.DataFrame | None = None,
    departures: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """samples rows of one agent result (one protocol), and the (workload, error) failures.
    `drops`: the emulator's drop log (drops.csv columns) of this protocol's phase; None with
    netem, which has none (then no loss-anchored HOL metrics). `senders`: the phase's sender
    samples (lab.run.sender_sampler); None when not sampled (no sender-state metrics).
    `departures`: this protocol's lines of the server's departure log (sent_ns, left_ns;
    lab.run.departures); None when the server does not stamp (Go, Caddy, qh3)."""
    rows: list[dict[str, Any]] = []
    errors: list[tuple[str, str]] = []
    base_rtt, rate = cell.link.base_rtt_ms, downlink_rate(cell)
    axes = {k: axis_value(v) for k, v in cell.axes.items()}
    for w in agent_result["workloads"]:
        if w["error"]:
            errors.append((w["kind"], w["error"]))
            continue
        params = cell.workloads[w["index"]]
        cpu = w["cpu"]
        usage = CpuUsage(
            server_s=cpu["server_s"] or 0.0,
            client_s=cpu["client_s"] or 0.0,
            emulator_s=(cpu["emulator_s"] or 0.0) if emulator else None,
            wall_s=w["wall_s"],
            host_s=cpu.get("host_s"),
        )
        try:
            out = aggregate(
                w["kind"],
                params,
                w["rows"],
                base_rtt_ms=base_rtt,
                rate_mbit=rate,
                cpu=usage,
                drops=drops,
                senders=senders,
                departures=departures,
            )
        except ValueError as e:
            errors.append((w["kind"], f"aggregation failed: {e}"))
            continue
        for r in out:
            r.update(
                cell=cell.id,
                repetition=repetition,
                protocol=protocol,
                workload=w["kind"],
                implementation=implementation,
                **axes,
            )
            rows.append(r)
    return pd.DataFrame(rows), errors
