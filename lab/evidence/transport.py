"""What each cell's senders used and which workloads it skipped, from run.json (pure): the rows
of the report's "Congestion control and UDP buffers" and "Skipped workloads" tables.

Per cell, over its repetitions (run.json `cell_runs[<cell>-<rep>].transport`, written by
lab.run.senders): h2's TCP algorithms per connection on each side (inet_diag), h3's QUIC
controllers as the implementations state them, the UDP socket buffers each end got (bytes, as
getsockopt reports them), and the flag when the server → client senders of h2 and h3 used
different controllers (lab.evidence.claims.controller_mismatches).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from lab.evidence.claims import controller_mismatches

SENDER_HEADERS = [
    "cell",
    "server",
    "client",
    "address family",
    "h2 TCP, server (connections)",
    "h2 TCP, client (connections)",
    "h3 QUIC, server / client",
    "UDP rcvbuf / sndbuf, server",
    "UDP rcvbuf / sndbuf, client",
    "flag",
]
SKIPPED_HEADERS = ["cell", "server", "workload", "reason"]


def _records(meta: dict[str, Any], cell: str) -> list[dict[str, Any]]:
    """The `transport` records of `cell`'s repetitions, in repetition order."""
    runs = meta.get("cell_runs") or {}
    keys = sorted((k for k in runs if str(k).rsplit("-", 1)[0] == cell), key=str)
    return [runs[k].get("transport") or {} for k in keys if isinstance(runs[k], dict)]


def _counts(records: list[dict[str, Any]], side: str) -> str:
    total: Counter[str] = Counter()
    for r in records:
        total.update(((r.get("h2") or {}).get("tcp_congestion") or {}).get(side) or {})
    return ", ".join(f"{name} ({n})" for name, n in sorted(total.items())) or "—"


def _quic(records: list[dict[str, Any]]) -> str:
    pairs = {
        (str(q.get("server") or "?"), str(q.get("client") or "?"))
        for r in records
        if (q := (r.get("h3") or {}).get("quic_congestion"))
    }
    return "; ".join(f"{s} / {c}" for s, c in sorted(pairs)) or "—"


def _buffers(records: list[dict[str, Any]], side: str) -> str:
    rcv: set[int] = set()
    snd: set[int] = set()
    for r in records:
        b = ((r.get("h3") or {}).get("udp_buffers") or {}).get(side) or {}
        rcv.update(b.get("rcvbuf_bytes") or [])
        snd.update(b.get("sndbuf_bytes") or [])
    if not rcv and not snd:
        return "—"
    return f"{'/'.join(map(str, sorted(rcv))) or '?'} / {'/'.join(map(str, sorted(snd))) or '?'}"


def sender_rows(meta: dict[str, Any]) -> list[list[str]]:
    """One row per cell that recorded its senders (SENDER_HEADERS); [] for older runs."""
    flags = controller_mismatches(meta)
    rows = []
    for c in meta.get("cells") or []:
        cell = str(c.get("cell"))
        records = _records(meta, cell)
        if not any(records):
            continue
        rows.append(
            [
                cell,
                str(c.get("server") or meta.get("implementation") or "reference"),
                str(c.get("client") or meta.get("client") or "lab"),
                str(c.get("address_family") or "ipv4"),
                _counts(records, "server"),
                _counts(records, "client"),
                _quic(records),
                _buffers(records, "server"),
                _buffers(records, "client"),
                flags.get(cell, ""),
            ]
        )
    return rows


def skipped_rows(meta: dict[str, Any]) -> list[list[str]]:
    """One row per skipped workload of a cell (SKIPPED_HEADERS), from run.json `skipped`."""
    return [
        [str(s.get(k, "")) for k in ("cell", "server", "workload", "reason")]
        for s in meta.get("skipped") or []
        if isinstance(s, dict)
    ]
