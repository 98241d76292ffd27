"""Sender state while an agent phase runs (issue 11, item 3), as one frame per phase with the
columns SENDER_COLUMNS: when (CLOCK_MONOTONIC ns), which sender, and whether it was
congestion-window limited then (lab.workloads.metrics.tcp_cwnd_limited / quic_cwnd_limited).

- TCP (h2, any server): `TcpSenderSampler` dumps the server namespace's connections on the
  server port (found by a dump every 200 ms) and reads each one's tcp_info by an exact lookup
  (lab.net.inet_diag.DiagSocket.tcp_state_of) every `interval_s` (default 20 ms: 50 Hz) from
  a thread of the runner — ≈ 1.5 % of a core; the frame also holds cwnd, unacked,
  not-sent bytes, MSS and the kernel's busy / rwnd-limited / sndbuf-limited times (µs).
- QUIC (h3, the reference server on aioquic): the server samples itself into a CSV file
  (lab.http.sender_log), and so does the Go server from quic-go's tracer (go/src/labgo/senderlog);
  `read_quic_log` reads both. qh3 and Caddy are not sampled.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd

from lab.net.inet_diag import CONNECTIONS, FAMILIES, LISTENING, DiagSocket, SocketInfo, TcpState
from lab.workloads.metrics import quic_cwnd_limited, tcp_cwnd_limited, tcp_in_flight

SENDER_COLUMNS: tuple[str, ...] = ("time_ns", "sender", "limited")
TCP_SAMPLE_INTERVAL_S = 0.02
DISCOVER_EVERY = 10  # ticks between the dumps that find new connections (200 ms)
_TCP_FIELDS: tuple[str, ...] = (
    "mss_bytes",
    "cwnd_packets",
    "unacked_packets",
    "sacked_packets",
    "lost_packets",
    "retrans_packets",
    "notsent_bytes",
    "busy_us",
    "rwnd_limited_us",
    "sndbuf_limited_us",
)


class TcpSenderSampler:
    """Samples the server's TCP connections on `port` in `server_ns` every `interval_s` from a
    thread, between `start()` and `stop()`. A failing dump stops the sampling (`error`)."""

    def __init__(self, server_ns: str, port: int, interval_s: float = TCP_SAMPLE_INTERVAL_S):
        self.port = port
        self.interval_s = interval_s
        self.error: str | None = None
        self._diag = DiagSocket(server_ns)
        self._families: tuple[int, ...] = FAMILIES
        self._rows: list[tuple[int, TcpState]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="tcp-sender-sampler", daemon=True)

    def start(self) -> TcpSenderSampler:
        """Find the families the server listens on `port` with, then sample from the thread."""
        try:
            listeners = self._diag.sockets("tcp", states=LISTENING)
        except BaseException:
            self._diag.close()
            raise
        listening = {s.family for s in listeners if s.sport == self.port}
        if listening:
            self._families = tuple(f for f in FAMILIES if f in listening)
        self._thread.start()
        return self

    def stop(self) -> pd.DataFrame:
        """Stop the thread, close the socket; the samples (SENDER_COLUMNS + the tcp_info
        fields)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._diag.close()
        return tcp_frame(self._rows)

    def _loop(self) -> None:
        """Every DISCOVER_EVERY-th tick a dump finds the connections (it walks the host's whole
        established hash: ≈ 3 ms per family here); every tick an exact lookup per known
        connection (≈ 0.02 ms each) samples them."""
        known: dict[int, SocketInfo] = {}
        tick = 0
        try:
            while not self._stop.is_set():
                if tick % DISCOVER_EVERY == 0:
                    for family in self._families:
                        for c in self._diag.dump("tcp", family, CONNECTIONS):
                            if c.sport == self.port:
                                known.setdefault(c.cookie, c)
                tick += 1
                now_ns = time.monotonic_ns()
                for cookie, c in list(known.items()):
                    state = self._diag.tcp_state_of(c)
                    if state is None:
                        del known[cookie]
                    else:
                        self._rows.append((now_ns, state))
                self._stop.wait(self.interval_s)
        except OSError as e:
            self.error = f"{type(e).__name__}: {e}"


def tcp_frame(rows: list[tuple[int, TcpState]]) -> pd.DataFrame:
    """(sample time ns, state) pairs as a sender frame."""
    frame = pd.DataFrame(
        {
            "time_ns": pd.array([t for t, _ in rows], dtype="int64"),
            "sender": pd.array([s.socket.cookie for _, s in rows], dtype="int64"),
            **{f: pd.array([getattr(s, f) for _, s in rows], dtype="int64") for f in _TCP_FIELDS},
        }
    )
    frame["in_flight_packets"] = tcp_in_flight(
        frame["unacked_packets"],
        frame["sacked_packets"],
        frame["lost_packets"],
        frame["retrans_packets"],
    )
    frame["limited"] = tcp_cwnd_limited(
        frame["cwnd_packets"], frame["in_flight_packets"], frame["notsent_bytes"]
    )
    return frame


def read_quic_log(path: Path) -> pd.DataFrame | None:
    """The reference server's QUIC sender log (lab.http.sender_log) as a sender frame: limited
    when a stream had data waiting and bytes in flight ≥ cwnd − one datagram. None when the
    server wrote none (not the reference server, or qh3)."""
    if not path.exists():
        return None
    frame = pd.read_csv(path, dtype="int64")
    if frame.empty:
        return None
    window_full = quic_cwnd_limited(
        frame["cwnd_bytes"], frame["bytes_in_flight"], frame["datagram_bytes"]
    )
    frame["limited"] = window_full & frame["waiting"].astype(bool).to_numpy()
    return frame
