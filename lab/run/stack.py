"""A cell's stack settings (pure): the `stack:` section as the reference server's `lab serve`
flags, the agent's config and the run.json `stacks` record (sizes in bytes), for every server
and client the cells name."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from pydantic import BaseModel, ConfigDict

from lab.http.settings import H2Settings, QuicSettings, ServerConfig
from lab.net.mtu import TCP_MSS_IPV4_BYTES
from lab.peers import go, registry
from lab.run.plan import downlink_rate, effective_rate
from lab.scenario.models import Cell, StackSpec
from lab.scenario.workloads import Workload


class AgentConfig(BaseModel):
    """What one agent run needs (written as JSON by the runner)."""

    model_config = ConfigDict(extra="forbid")

    protocol: str
    host: str
    port: int
    server_name: str = "localhost"
    ca_file: str | None = None
    base_rtt_ms: float
    rate_mbit: float | None = None  # the link's downlink rate
    expected_rate_mbit: float | None = None  # expected goodput, for the timeouts only
    early_data_header: bool = True
    stack: StackSpec = StackSpec()  # the cell's stack settings (see lab.run.stack.cell_stack)
    workloads: list[Workload]
    server_pid: int | None = None
    emulator_pid: int | None = None
    out: str
    timeout_factor: float = 4.0  # a workload may take this × its estimate (+ 20 s)


def cell_stack(cell: Cell, quic_engine: str | None = None) -> StackSpec:
    """The stack settings a cell runs with: the cell's `stack:` (matrix values applied), with
    `quic_engine` (the `lab run --quic-engine` flag) overriding the scenario's when given, and
    max_concurrent_streams capped by any k8s_mix workload's `max_concurrent_streams`."""
    stack = cell.scenario.stack
    update: dict[str, Any] = {}
    if quic_engine is not None:
        update["quic_engine"] = quic_engine
    caps = [w.max_concurrent_streams for w in cell.workloads if w.kind == "k8s_mix"]
    if caps and min(caps) < stack.max_concurrent_streams:
        update["max_concurrent_streams"] = min(caps)
    return stack.model_copy(update=update) if update else stack


def reference_serve_args(stack: StackSpec) -> list[str]:
    """`lab serve` flags that give the reference server `stack`."""
    args = [
        "--quic-engine",
        stack.quic_engine,
        "--max-streams",
        str(stack.max_concurrent_streams),
        "--cc",
        stack.quic_congestion_control,
        "--h2-cc",
        stack.tcp_congestion,
    ]
    if stack.tcp_notsent_lowat_bytes is not None:
        args += ["--notsent-lowat", str(stack.tcp_notsent_lowat_bytes)]
    return args


def client_settings(stack: StackSpec) -> tuple[H2Settings, QuicSettings]:
    """The (h2, QUIC) settings of a cell's `stack:` section: the clients' and, with the
    server's own defaults otherwise, the reference server's."""
    h2 = H2Settings(
        max_concurrent_streams=stack.max_concurrent_streams,
        tcp_congestion=stack.tcp_congestion,
        tcp_notsent_lowat_bytes=stack.tcp_notsent_lowat_bytes,
    )
    quic = QuicSettings(
        engine=stack.quic_engine,
        congestion_control=stack.quic_congestion_control,
        max_concurrent_streams=stack.max_concurrent_streams,
    )
    return h2, quic


def reference_config(stack: StackSpec) -> ServerConfig:
    """The ServerConfig `lab serve` builds from `reference_serve_args(stack)` (for run.json)."""
    h2, quic = client_settings(stack)
    return ServerConfig(h2=h2, quic=quic)


def agent_config(
    cell: Cell,
    quic_engine: str | None,
    *,
    workloads: Sequence[Workload] | None = None,
    **fields: Any,
) -> AgentConfig:
    """The AgentConfig of `cell` (its link, workloads — or `workloads`, e.g. those its server
    serves — and stack settings) plus `fields`."""
    return AgentConfig(
        base_rtt_ms=cell.link.base_rtt_ms,
        rate_mbit=downlink_rate(cell),
        expected_rate_mbit=effective_rate(cell),
        workloads=list(cell.workloads if workloads is None else workloads),
        stack=cell_stack(cell, quic_engine),
        **fields,
    )


def stacks_info(
    cells: Sequence[Cell],
    quic_engine: str | None = None,
    *,
    versions: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """Stack settings of the servers and clients for run.json: `stack` and `client` (the lab
    client's h2/QUIC settings) are those of the first cell; when cells differ, `per_cell` maps
    every cell id to the `stack:` values it ran with; then one entry per server the cells name
    (`reference`: its settings; an external one: description, version, what it runs) and
    `go_agent` when a cell runs `client: go`. `versions`: implementation name (or "go_agent")
    → its version line (the runner asks the binaries; None = unknown)."""
    versions = versions or {}
    stacks = {c.id: cell_stack(c, quic_engine) for c in cells}
    first = next(iter(stacks.values()))
    h2, quic = client_settings(first)
    out: dict[str, Any] = {
        "stack": first.model_dump(mode="json"),
        "client": _jsonable({"h2": asdict(h2), "quic": asdict(quic)}),
    }
    if len({s.model_dump_json() for s in stacks.values()}) > 1:
        out["per_cell"] = {cid: s.model_dump(mode="json") for cid, s in stacks.items()}
    for server in dict.fromkeys(c.scenario.server for c in cells):
        if server == "reference":
            out["reference"] = _jsonable(reference_config(first).report())
            out["reference"]["tcp_segment_bytes"] = TCP_MSS_IPV4_BYTES
        else:
            out[server] = external_server_info(server, versions.get(server))
    if any(c.scenario.client == "go" for c in cells):
        out["go_agent"] = go_agent_info(versions.get("go_agent"))
    return out


def external_server_info(server: str, version: str | None) -> dict[str, Any]:
    """run.json `stacks.<server>` of a server other than the reference one."""
    impl = registry.get(server)
    settings = "its own defaults; TCP congestion control from the routes (stack.tcp_congestion)"
    if server == "go":
        settings += "; --tcp-cc and --max-streams from the stack"
    info: dict[str, Any] = {
        "description": impl.description,
        "version": version,
        "settings": settings,
        "quic_congestion": impl.quic_congestion,
    }
    if impl.quic_congestion == go.QUIC_GO_CONGESTION:
        info["quic_congestion_detail"] = go.QUIC_GO_CONGESTION_DETAIL
    if server == "go" and version:
        info["versions"] = go.parse_versions(version)
    return info


def go_agent_info(version: str | None) -> dict[str, Any]:
    """run.json `stacks.go_agent`: the Go client's version line, its library versions and what
    it runs (docs/peers.md, "The agent")."""
    return {
        "description": "lab-go-agent: x/net/http2 Transport (h2), quic-go http3.RoundTripper (h3)",
        "version": version,
        "versions": go.parse_versions(version) if version else {},
        "settings": "stack.tcp_congestion and tcp_notsent_lowat_bytes per socket; quic-go's own "
        "QUIC settings",
        "quic_congestion": go.QUIC_GO_CONGESTION,
        "quic_congestion_detail": go.QUIC_GO_CONGESTION_DETAIL,
    }


def _jsonable(obj: Any) -> Any:
    """`obj` through JSON and back (non-JSON values as their str())."""
    return json.loads(json.dumps(obj, default=str))
