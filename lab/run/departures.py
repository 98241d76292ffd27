"""Read the reference server's logs for "where the time went" (lab.http.departure_log) and join
h2's with the emulator's TCP first transmissions: per watch event, when its bytes left the server
(docs/metrics.md).

- the departure log `protocol,sent_ns,left_ns` (h3; CLOCK_MONOTONIC ns of the host);
- the TCP offset log `sent_ns,client_port,end_offset` (h2), joined by `tcp_departures` with the
  emulator's `tcp-sent.csv` (lab.link.emulator: time_ns, client_port, end_offset).

The server appends and flushes one line per event while it runs, so a last line without its
newline is one being written and is left out; anything else that does not parse makes the file
damaged (RunError naming it).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from lab.errors import RunError
from lab.http.departure_log import (
    DEPARTURE_LOG_HEADER,
    DEPARTURE_PROTOCOLS,
    TCP_OFFSET_LOG_HEADER,
)

DEPARTURE_FRAME_COLUMNS: tuple[str, ...] = ("sent_ns", "left_ns")
TCP_OFFSET_COLUMNS: tuple[str, ...] = ("sent_ns", "client_port", "end_offset")
_DTYPES: dict[str, str] = {"protocol": "str", "sent_ns": "int64", "left_ns": "int64"}
_OFFSET_DTYPES: dict[str, str] = dict.fromkeys(TCP_OFFSET_COLUMNS, "int64")


def _read_log(path: Path, header: str, dtypes: dict[str, str], what: str) -> pd.DataFrame | None:
    """The complete lines of a CSV log after `header` with columns `dtypes`; None when the file
    is missing or holds no complete line. RunError (one line naming the file) when damaged."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: unreadable {what}: {e}") from None
    if not text.startswith(header):
        first = text.split("\n", 1)[0][:60]
        raise RunError(f"{path}: not a {what} (header {first!r})")
    body = text[len(header) :]
    body = body[: body.rfind("\n") + 1]  # a last line without newline is still being written
    if not body.strip():
        return None
    try:
        return pd.read_csv(
            io.StringIO(body), header=None, names=list(dtypes), dtype=dtypes, on_bad_lines="error"
        )
    except ValueError as e:  # pandas' ParserError is one; so is a non-integer stamp
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise RunError(f"{path}: damaged {what}: {reason}") from None


def read_departure_log(path: Path) -> dict[str, pd.DataFrame]:
    """protocol ("h2", "h3") → frame with int64 columns sent_ns, left_ns (file order); {} when
    the file is missing or holds no complete line after the header. A damaged file (unreadable,
    another header, a line that is not `protocol,int,int`, an unknown protocol) raises RunError
    with one line naming the file."""
    frame = _read_log(path, DEPARTURE_LOG_HEADER, _DTYPES, "departure log")
    if frame is None:
        return {}
    unknown = sorted(set(frame["protocol"]) - set(DEPARTURE_PROTOCOLS))
    if unknown:
        raise RunError(f"{path}: damaged departure log: unknown protocol(s) {unknown}")
    return {
        str(protocol): group[list(DEPARTURE_FRAME_COLUMNS)].reset_index(drop=True)
        for protocol, group in frame.groupby("protocol", sort=True)
    }


def read_tcp_offset_log(path: Path) -> pd.DataFrame | None:
    """The h2 server's TCP offset log as int64 columns sent_ns, client_port, end_offset (file
    order); None when missing or empty; RunError (naming the file) when damaged."""
    return _read_log(path, TCP_OFFSET_LOG_HEADER, _OFFSET_DTYPES, "TCP offset log")


def tcp_departures(offsets: pd.DataFrame, sent: pd.DataFrame) -> pd.DataFrame:
    """Per h2 event, when its bytes left: DataFrame(sent_ns, left_ns), int64, by sent_ns.

    `offsets`: (sent_ns, client_port, end_offset) from the server — the event's TLS record ends
    at byte end_offset of the stream to client_port. `sent`: (time_ns, client_port, end_offset)
    from the emulator, each downlink TCP packet that carried new bytes (first transmissions only).
    An event left with the first record of its port whose end_offset ≥ the event's: the packet
    that carried its last byte. A port's records restart (end_offset not above the previous one)
    when a new connection reuses the port; an event belongs to the connection whose first record
    (its ServerHello) came last before the event was written (the first connection when none
    did). Events without such a record (past the connection's last one, or no record of the
    port) are left out."""
    out_sent: list[np.ndarray] = []
    out_left: list[np.ndarray] = []
    records = sent.sort_values("time_ns", kind="stable")
    rec_port = records["client_port"].to_numpy(dtype=np.int64)
    off_port = offsets["client_port"].to_numpy(dtype=np.int64)
    for port in np.unique(off_port):
        rec = records[rec_port == port]
        if rec.empty:
            continue
        events = offsets[off_port == port]
        times = rec["time_ns"].to_numpy(dtype=np.int64)
        ends = rec["end_offset"].to_numpy(dtype=np.int64)
        starts = np.flatnonzero(np.r_[True, ends[1:] <= ends[:-1]])  # a connection's first
        bounds = np.r_[starts, len(ends)]
        ev_sent = events["sent_ns"].to_numpy(dtype=np.int64)
        ev_end = events["end_offset"].to_numpy(dtype=np.int64)
        conn = np.maximum(np.searchsorted(times[starts], ev_sent, side="right") - 1, 0)
        left = np.full(len(ev_sent), -1, dtype=np.int64)
        for c in np.unique(conn):
            lo, hi = bounds[c], bounds[c + 1]
            mine = conn == c
            j = lo + np.searchsorted(ends[lo:hi], ev_end[mine], side="left")
            left[mine] = np.where(j < hi, times[np.minimum(j, hi - 1)], -1)
        found = left >= 0
        out_sent.append(ev_sent[found])
        out_left.append(left[found])
    if not out_sent:
        return pd.DataFrame({c: pd.Series(dtype="int64") for c in DEPARTURE_FRAME_COLUMNS})
    frame = pd.DataFrame({"sent_ns": np.concatenate(out_sent), "left_ns": np.concatenate(out_left)})
    return frame.sort_values("sent_ns", kind="stable").reset_index(drop=True)
