"""Read the reference server's departure log (lab.http.departure_log): per watch event, when its
bytes left the server in a packet, for "where the time went" (docs/metrics.md).

The file is `protocol,sent_ns,left_ns` (CLOCK_MONOTONIC ns of the host). The server appends and
flushes one line per event while it runs, so a last line without its newline is one being
written and is left out; anything else that does not parse makes the file damaged.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from lab.errors import RunError
from lab.http.departure_log import DEPARTURE_LOG_HEADER, DEPARTURE_PROTOCOLS

DEPARTURE_FRAME_COLUMNS: tuple[str, ...] = ("sent_ns", "left_ns")
_DTYPES: dict[str, str] = {"protocol": "str", "sent_ns": "int64", "left_ns": "int64"}


def read_departure_log(path: Path) -> dict[str, pd.DataFrame]:
    """protocol ("h2", "h3") → frame with int64 columns sent_ns, left_ns (file order); {} when
    the file is missing or holds no complete line after the header. A damaged file (unreadable,
    another header, a line that is not `protocol,int,int`, an unknown protocol) raises RunError
    with one line naming the file."""
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as e:
        raise RunError(f"{path}: unreadable departure log: {e}") from None
    if not text.startswith(DEPARTURE_LOG_HEADER):
        first = text.split("\n", 1)[0][:60]
        raise RunError(f"{path}: not a departure log (header {first!r})")
    body = text[len(DEPARTURE_LOG_HEADER) :]
    body = body[: body.rfind("\n") + 1]  # a last line without newline is still being written
    if not body.strip():
        return {}
    try:
        frame = pd.read_csv(
            io.StringIO(body), header=None, names=list(_DTYPES), dtype=_DTYPES, on_bad_lines="error"
        )
    except ValueError as e:  # pandas' ParserError is one; so is a non-integer stamp
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise RunError(f"{path}: damaged departure log: {reason}") from None
    unknown = sorted(set(frame["protocol"]) - set(DEPARTURE_PROTOCOLS))
    if unknown:
        raise RunError(f"{path}: damaged departure log: unknown protocol(s) {unknown}")
    return {
        str(protocol): group[list(DEPARTURE_FRAME_COLUMNS)].reset_index(drop=True)
        for protocol, group in frame.groupby("protocol", sort=True)
    }
