"""Departure stamps of the reference HTTP/3 server (issue 11, item 4: where the time went).

Binds the sans-I/O `DepartureTracker` (lab.http.quic_departures) to one aioquic connection: a
watch event's end offset is its stream sender's buffered end (`_buffer_stop`) when the event
was handed to the engine; after each transmit the sender's `highest_offset` (the highest offset
ever put into a frame) says which events' last bytes the new datagrams carry. Those events are
written to the departure log (lab.http.departure_log) with left_ns = when the datagrams were
handed to the socket. Only streams with pending events are looked at; a stream that is gone
(finished and discarded by aioquic) or reset is forgotten.

qh3 is not stamped: its stream state lives in Rust, out of Python's reach.
"""

from __future__ import annotations

from typing import Any

from lab.http.departure_log import DepartureLog
from lab.http.quic_departures import DepartureTracker


def _highest_sent_offset(stream: Any) -> int | None:
    """The highest stream offset aioquic put into a frame; None: gone or reset."""
    if stream is None:
        return None
    sender = stream.sender
    if sender._reset_error_code is not None:
        return None
    return int(sender.highest_offset)


class AioquicDepartures:
    """The `DepartureStamps` of one aioquic connection (lab.http.h3_driver)."""

    __slots__ = ("_log", "_quic", "tracker")

    def __init__(self, quic: Any, log: DepartureLog) -> None:
        self._quic = quic
        self._log = log
        self.tracker = DepartureTracker()

    def queued(self, stream_id: int, stamp_ns: int) -> None:
        stream = self._quic._streams.get(stream_id)
        if stream is not None:
            self.tracker.pending(stream_id, int(stream.sender._buffer_stop), stamp_ns)

    def covered(self) -> list[int]:
        tracker = self.tracker
        if not tracker:
            return []
        streams = self._quic._streams
        offsets = {sid: _highest_sent_offset(streams.get(sid)) for sid in tracker.streams()}
        return tracker.sent(offsets)

    def left(self, stamps: list[int], left_ns: int) -> None:
        record = self._log.record
        for sent_ns in stamps:
            record("h3", sent_ns, left_ns)


def departure_stamps(
    engine_name: str, quic: Any, log: DepartureLog | None
) -> AioquicDepartures | None:
    """The stamps for a new server connection: None without a log or on qh3."""
    if log is None or engine_name != "aioquic":
        return None
    return AioquicDepartures(quic, log)
