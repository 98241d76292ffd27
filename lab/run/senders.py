"""What each protocol's senders used in one (cell, repetition) (pure): the run.json record
`cell_runs[<cell>-<rep>].transport.<protocol>`.

- TCP (h2 phase): the congestion-control algorithm of every connection the inet_diag sampler
  saw (lab.net.inet_diag), server side and client side, as counts per algorithm, and the
  client addresses the server saw (which address family the connections used).
- QUIC (h3): each end's controller as its implementation states it — aioquic's setting
  (`stack.quic_congestion_control`), quic-go's fixed NewReno ("reno"; lab.peers.go), None for
  qh3 (one built-in controller the lab cannot name) — and the UDP socket buffers each end got
  (inet_diag, as getsockopt reports them: twice what a program set), plus what the Go agent
  reports of its own sockets.
- `sender`: the controller of the server → client data (what the download-heavy workloads
  measure): h2 the server's measured TCP algorithm(s) joined with "+", None when no connection
  was seen; h3 the server's QUIC controller. `lab check` and the report flag a cell whose h2
  and h3 senders differ.
"""

from __future__ import annotations

from typing import Any

from lab.net.inet_diag import Sampled, Seen
from lab.peers import go, registry
from lab.scenario.models import StackSpec


def quic_controller(implementation: str, stack: StackSpec) -> tuple[str | None, str]:
    """(controller, where that comes from) of a QUIC end: a server of the registry, or a
    client ("lab": the stack's engine; "go": quic-go, as the `go` server)."""
    impl = registry.IMPLEMENTATIONS.get(implementation)
    fixed = impl.quic_congestion if impl is not None else None
    if fixed is not None:
        return fixed, go.QUIC_GO_CONGESTION_DETAIL
    if stack.quic_engine == "qh3":
        return None, "qh3's built-in controller (not configurable, not named)"
    return stack.quic_congestion_control, "aioquic's setting (stack.quic_congestion_control)"


def _buffers(seen: Seen) -> dict[str, Any]:
    socks = list(seen.udp.values())
    return {
        "sockets": len(socks),
        "rcvbuf_bytes": sorted({s.rcvbuf_bytes for s in socks if s.rcvbuf_bytes is not None}),
        "sndbuf_bytes": sorted({s.sndbuf_bytes for s in socks if s.sndbuf_bytes is not None}),
    }


def _reported_buffers(agent_result: dict[str, Any]) -> dict[str, Any] | None:
    """The UDP buffers an agent reports of its own QUIC socket (the Go agent does)."""
    quic = (agent_result.get("implementation") or {}).get("quic") or {}
    keys = ("udp_rcvbuf_bytes", "udp_sndbuf_bytes")
    return {k: quic[k] for k in keys if k in quic} or None


def transport_record(
    protocol: str,
    *,
    server: str,
    client: str,
    stack: StackSpec,
    sampled: Sampled | None,
    agent_result: dict[str, Any],
) -> dict[str, Any]:
    """The record of one protocol's phase (see the module docstring)."""
    out: dict[str, Any] = {}
    if sampled is not None and protocol == "h2":
        out["tcp_congestion"] = {
            "server": sampled.server.congestion(),
            "client": sampled.client.congestion(),
        }
        # the client addresses the server's connections came from (IPv4 as itself, not as
        # the IPv4-mapped IPv6 address a dual-stack socket reports): the family really used
        peers = {s.dst.removeprefix("::ffff:") for s in sampled.server.tcp.values()}
        out["tcp_peers"] = sorted(peers)
    if protocol == "h3":
        s_cc, s_src = quic_controller(server, stack)
        c_cc, c_src = quic_controller(client, stack)
        out["quic_congestion"] = {"server": s_cc, "client": c_cc}
        out["quic_congestion_source"] = {"server": s_src, "client": c_src}
        out["sender"] = s_cc
        if sampled is not None:
            out["udp_buffers"] = {
                "server": _buffers(sampled.server),
                "client": _buffers(sampled.client),
            }
        reported = _reported_buffers(agent_result)
        if reported:
            out["udp_buffers_reported_by_client"] = reported
    else:
        measured = sorted(out.get("tcp_congestion", {}).get("server", {}))
        out["sender"] = "+".join(measured) if measured else None
    if sampled is not None:
        out["inet_diag"] = {
            "samples": sampled.samples,
            "interval_s": sampled.interval_s,
            "error": sampled.error,
        }
    return out
