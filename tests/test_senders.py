"""Sender state (issue 11, item 3): the congestion-window-limited share of a watch probe and the
`congestion_limited` flag — known answers on synthetic samples, then real runs through the
emulator: a cell that is congestion-limited (1,600 events/s ≈ 3.5 Mbit/s at 3% loss on 5 Mbit/s,
40 ms RTT: above CUBIC's Mathis rate there, ≈ 2 Mbit/s) is flagged, one that is not (20 events/s,
no loss, 50 Mbit/s) is not."""

from __future__ import annotations

import dataclasses
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from labrun import run_scenario_text, skip_without_netns

from lab.net.inet_diag import CONNECTIONS, DiagSocket
from lab.run.sender_sampler import read_quic_log
from lab.workloads.aggregate import sender_rows
from lab.workloads.metrics import (
    CONGESTION_LIMITED_FRACTION,
    congestion_limited,
    quic_cwnd_limited,
    sender_cwnd_limited_fraction,
    tcp_cwnd_limited,
    tcp_in_flight,
)

MS = 1_000_000  # ns


# --- known answers ------------------------------------------------------------------------
def test_fraction_counts_limited_time_between_samples() -> None:
    """Samples every 10 ms over [0, 100) ms, limited in the middle four: 40%."""
    t = np.arange(0, 100, 10) * MS
    limited = [False, False, False, True, True, True, True, False, False, False]
    assert sender_cwnd_limited_fraction(t, limited, 0, 100 * MS) == pytest.approx(0.4)


def test_fraction_is_clipped_to_the_probe() -> None:
    """Limited before the probe starts and after it ends does not count."""
    t = np.arange(0, 100, 10) * MS
    limited = [True] * 3 + [False] * 4 + [True] * 3
    assert sender_cwnd_limited_fraction(t, limited, 30 * MS, 70 * MS) == pytest.approx(0.0)
    # half of the probe [20, 40) ms is limited: the sample at 20 ms holds until 30 ms
    assert sender_cwnd_limited_fraction(t, limited, 20 * MS, 40 * MS) == pytest.approx(0.5)


def test_a_gap_in_the_samples_is_not_counted_either_way() -> None:
    """A sample holds at most SENDER_HOLD_MAX_MS: a limited sample before a 1 s gap counts
    100 ms, not the gap."""
    t = np.array([0, 1000, 1010]) * MS
    limited = [True, False, False]
    got = sender_cwnd_limited_fraction(t, limited, 0, 1020 * MS, hold_max_ms=100)
    assert got == pytest.approx(100 / 120)


def test_any_connection_limited_at_an_instant_counts() -> None:
    """Two connections sampled at the same instants: the instant counts once, limited if
    either was."""
    t = np.array([0, 0, 10, 10]) * MS
    limited = [True, False, False, False]
    assert sender_cwnd_limited_fraction(t, limited, 0, 20 * MS) == pytest.approx(0.5)


def test_no_sample_in_the_probe_is_nan_and_bad_input_raises() -> None:
    t = np.array([0, 10]) * MS
    assert np.isnan(sender_cwnd_limited_fraction(t, [True, True], 500 * MS, 600 * MS))
    assert np.isnan(sender_cwnd_limited_fraction([], [], 0, MS))
    with pytest.raises(ValueError):
        sender_cwnd_limited_fraction(t, [True], 0, MS)
    with pytest.raises(ValueError):
        sender_cwnd_limited_fraction(t, [True, True], MS, MS)


def test_tcp_limited_needs_a_full_window_and_waiting_data() -> None:
    cwnd = [10, 10, 10, 10]
    flight = [10, 10, 9, 12]
    notsent = [500, 0, 500, 1]
    assert tcp_cwnd_limited(cwnd, flight, notsent).tolist() == [True, False, False, True]


def test_tcp_in_flight_is_the_kernels_count() -> None:
    """tcp_packets_in_flight: packets_out − (sacked + lost) + retrans."""
    assert tcp_in_flight([20, 20], [5, 0], [3, 0], [2, 0]).tolist() == [14, 20]


def test_quic_limited_when_less_than_a_datagram_of_window_is_left() -> None:
    got = quic_cwnd_limited([12_000, 12_000, 12_000], [10_800, 10_799, 13_000], [1200] * 3)
    assert got.tolist() == [True, False, True]


def test_flag_threshold() -> None:
    assert congestion_limited(CONGESTION_LIMITED_FRACTION + 0.01)
    assert not congestion_limited(CONGESTION_LIMITED_FRACTION)
    assert not congestion_limited(float("nan"))


def test_sender_rows_flag_and_fraction() -> None:
    frame = pd.DataFrame(
        {"time_ns": np.arange(0, 100, 10) * MS, "limited": [True] * 3 + [False] * 7}
    )
    rows = {r["metric"]: (r["value"], r["unit"]) for r in sender_rows(frame, 0, 100 * MS)}
    assert rows == {
        "sender_cwnd_limited_fraction": (pytest.approx(0.3), "fraction"),
        "congestion_limited": (1.0, "bool"),
    }
    assert sender_rows(frame, 500 * MS, 600 * MS) == []  # no sample covers that probe


def test_quic_log_needs_waiting_data_as_well_as_a_full_window(tmp_path: Path) -> None:
    log = tmp_path / "q.csv"
    log.write_text(
        "time_ns,sender,cwnd_bytes,bytes_in_flight,datagram_bytes,waiting\n"
        "1,7,12000,12000,1200,1\n"
        "2,7,12000,12000,1200,0\n"
        "3,7,12000,2400,1200,1\n"
    )
    frame = read_quic_log(log)
    assert frame is not None
    assert frame["limited"].tolist() == [True, False, False]
    assert read_quic_log(tmp_path / "absent.csv") is None


# --- real runs ----------------------------------------------------------------------------
LIMITED = """
name: congested
seed: 5
repeat: 1
uplink: {delay_ms: 20, rate_mbit: 5}
downlink: {delay_ms: 20, rate_mbit: 5, loss: {model: bernoulli, rate: 0.03}}
stack: {tcp_congestion: cubic, quic_congestion_control: cubic}
protocols: [h2, h3]
workloads:
  - {kind: watch, streams: 16, interval_ms: 10, duration_s: 4}
"""
UNLIMITED = """
name: relaxed
seed: 5
repeat: 1
uplink: {delay_ms: 20, rate_mbit: 50}
downlink: {delay_ms: 20, rate_mbit: 50}
stack: {tcp_congestion: cubic, quic_congestion_control: cubic}
protocols: [h2, h3]
workloads:
  - {kind: watch, streams: 4, interval_ms: 200, duration_s: 4}
"""


def _run(tmp: Path, name: str, text: str) -> pd.DataFrame:
    s = run_scenario_text(tmp, name, text).results.samples
    rows = s[s["metric"].isin(["sender_cwnd_limited_fraction", "congestion_limited"])]
    return rows.pivot_table(index="protocol", columns="metric", values="value")


@pytest.fixture(scope="module")
def real_cells(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame]:
    skip_without_netns()
    d = tmp_path_factory.mktemp("senders")
    return _run(d, "limited", LIMITED), _run(d, "unlimited", UNLIMITED)


@pytest.mark.slow
@pytest.mark.netns
def test_real_congested_cell_is_flagged_for_both_protocols(real_cells) -> None:
    limited, _ = real_cells
    assert set(limited.index) == {"h2", "h3"}, limited
    assert (limited["sender_cwnd_limited_fraction"] > CONGESTION_LIMITED_FRACTION).all(), limited
    assert (limited["congestion_limited"] == 1.0).all(), limited


@pytest.mark.slow
@pytest.mark.netns
def test_real_relaxed_cell_is_not_flagged(real_cells) -> None:
    _, unlimited = real_cells
    assert set(unlimited.index) == {"h2", "h3"}, unlimited
    assert (unlimited["sender_cwnd_limited_fraction"] < CONGESTION_LIMITED_FRACTION).all()
    assert (unlimited["congestion_limited"] == 0.0).all(), unlimited


# --- the exact tcp_info lookup the 50 Hz sampler uses --------------------------------------
def test_exact_lookup_reads_a_real_connection_and_only_it() -> None:
    """A dump finds the connection; the exact lookup returns its tcp_info (the bytes it was
    given and not yet sent show as notsent), None for a wrong cookie and once it is gone."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        server, _ = listener.accept()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the sender backs up
        server.setblocking(False)
        try:
            while True:
                server.send(b"x" * 65536)
        except BlockingIOError:
            pass
        with DiagSocket() as diag:
            (conn,) = [c for c in diag.dump("tcp", socket.AF_INET, CONNECTIONS) if c.sport == port]
            state = diag.tcp_state_of(conn)
            assert state is not None and state.socket.cookie == conn.cookie
            assert state.notsent_bytes > 0 and state.cwnd_packets >= 1 and state.mss_bytes > 500
            assert diag.tcp_state_of(dataclasses.replace(conn, cookie=conn.cookie + 1)) is None
            server.close()
            client.close()
            time.sleep(0.05)
            assert diag.tcp_state_of(conn) is None
