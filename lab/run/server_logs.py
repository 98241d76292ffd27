"""What a server measures of itself during one (cell, repetition), and how the runner reads it
back: its QUIC sender state (lab.http.sender_log), its watch events' departures and, for h2,
the TCP stream offsets of its events (lab.http.departure_log) — the offsets become departures
once joined with the emulator's log of TCP first transmissions (lab.run.departures). A server
that cannot log one of them leaves that file absent or header-only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from lab.http.departure_log import DEPARTURE_LOG_ENV, TCP_OFFSET_LOG_ENV
from lab.http.sender_log import SENDER_LOG_ENV
from lab.run.departures import read_departure_log, read_tcp_offset_log, tcp_departures
from lab.run.sender_sampler import read_quic_log


@dataclass(frozen=True)
class ServerLogs:
    """The files of one server process (in the results directory, `server/<cell>-<rep>/`)."""

    quic_senders: Path
    departures: Path
    tcp_offsets: Path

    @classmethod
    def under(cls, directory: Path) -> ServerLogs:
        """The files in `directory` (created), as absolute paths: the server runs in a working
        directory of its own, so a relative results directory would not be found from there."""
        directory = directory.resolve()
        directory.mkdir(parents=True, exist_ok=True)
        return cls(
            quic_senders=directory / "quic-senders.csv",
            departures=directory / "departures.csv",
            tcp_offsets=directory / "tcp-offsets.csv",
        )

    def env(self) -> dict[str, str]:
        """The environment variables that tell a server where to write them."""
        return {
            SENDER_LOG_ENV: str(self.quic_senders),
            DEPARTURE_LOG_ENV: str(self.departures),
            TCP_OFFSET_LOG_ENV: str(self.tcp_offsets),
        }


@dataclass
class ServerMeasurements:
    """What the server logged, per protocol: QUIC sender samples (h3, or None) and departures
    (sent_ns, left_ns)."""

    quic_senders: pd.DataFrame | None = None
    departures: dict[str, pd.DataFrame] = field(default_factory=dict)


def read_server_logs(logs: ServerLogs, h2_tcp_sent: pd.DataFrame | None) -> ServerMeasurements:
    """Read the server's logs; h2's departures come from its TCP offsets joined with
    `h2_tcp_sent` (the emulator's tcp-sent log of the h2 phase; None without the emulator or
    an h2 phase: no h2 departures)."""
    departures = read_departure_log(logs.departures)
    offsets = read_tcp_offset_log(logs.tcp_offsets)
    if offsets is not None and h2_tcp_sent is not None:
        departures["h2"] = tcp_departures(offsets, h2_tcp_sent)  # left = seen by the emulator
    return ServerMeasurements(read_quic_log(logs.quic_senders), departures)
