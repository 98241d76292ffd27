"""The Go server's QUIC sender log (go/src/labgo/senderlog, issue 11 item 3), for real: the Go
server in the server namespace behind the lab's emulator on a 5 Mbit/s, 20 ms RTT link, the
lab's h3 client in the client namespace. With LAB_QUIC_SENDER_LOG set, quic-go's congestion
window and bytes in flight come out at ~50 Hz in the reference server's format
(lab.run.sender_sampler.read_quic_log reads them), a rate-limited download keeps the window
full and an idle connection does not; unset, the server writes nothing."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import trio

from lab.http import tls
from lab.http.client import open_connection
from lab.http.sender_log import SENDER_LOG_ENV, SENDER_LOG_HEADER
from lab.http.tls import CertPaths
from lab.http.types import ConnectOptions, Response
from lab.link.emulator import EmulatorProcess
from lab.link.spec import DirectionSpec, LinkSpec
from lab.net.topology import Topology
from lab.peers import go, probe
from lab.peers.proc import Running, running
from lab.peers.registry import LaunchSpec
from lab.run.sender_sampler import read_quic_log
from lab.workloads.metrics import quic_cwnd_limited

pytestmark = pytest.mark.netns

PORT = 8443
ONE_WAY = DirectionSpec(delay_ms=10, rate_mbit=5)  # 20 ms base RTT
BULK_BYTES = 3_000_000  # ~5 s at 5 Mbit/s
TINY_GETS = 10
TINY_GAP_S = 0.1
SAMPLE_HZ = 50  # senderlog.Interval: 20 ms
MIN_CWND_BYTES = 2 * 1200  # quic-go's minimum window: two datagrams
IPV4_DATAGRAM_BYTES = (1252, 1452)  # quic-go's initial IPv4 size .. its MTU-discovery ceiling
LIMITED_SHARE = 0.2  # the congestion_limited threshold


@pytest.fixture(scope="module")
def go_binaries() -> None:
    if os.geteuid() != 0 or not Path("/dev/net/tun").exists():
        pytest.skip("needs root and /dev/net/tun")
    status = go.build_status()
    if not status.built:
        pytest.skip(f"the Go server is not built ({status.detail}): run scripts/build-go.sh")


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> CertPaths:
    return tls.ensure_certs(tmp_path_factory.mktemp("senders-tls"))


@contextlib.contextmanager
def go_server(topo: Topology, workdir: Path, certs: CertPaths) -> Iterator[Running]:
    """lab-go-server in the server namespace (environment as the caller's), ready."""
    argv = go.server_argv(topo.server_v4, PORT, certs.cert, certs.key)
    spec = LaunchSpec(topo.run_in(topo.server_ns, argv), cwd=workdir)
    with running(spec, workdir, "go") as proc:
        with topo.enter(topo.server_ns):
            ready = probe.wait_ready(topo.server_v4, PORT, timeout_s=20)
        assert ready, proc.output()[-3000:]
        yield proc


def _options(topo: Topology) -> ConnectOptions:
    return ConnectOptions(protocol="h3", host=topo.server_v4, port=PORT, connect_timeout_s=10)


def _in_client(topo: Topology, fn: Callable[[], Awaitable[Response]]) -> Response:
    """Run `fn` in trio with this thread in the client namespace (the client's sockets)."""
    with topo.enter(topo.client_ns):
        return trio.run(fn)


def tiny_gets(topo: Topology) -> Response:
    """A few tiny GETs, TINY_GAP_S apart, on one connection that then idles; the last."""

    async def main() -> Response:
        async with open_connection(_options(topo)) as conn:
            for _ in range(TINY_GETS):
                r = await conn.request("GET", "/bytes/100")
                assert r.status == 200 and r.body_bytes == 100
                await trio.sleep(TINY_GAP_S)
        return r

    return _in_client(topo, main)


def bulk(topo: Topology) -> Response:
    async def main() -> Response:
        async with open_connection(_options(topo)) as conn:
            r = await conn.request("GET", f"/bytes/{BULK_BYTES}", keep_body=False)
        assert r.status == 200 and r.body_bytes == BULK_BYTES
        return r

    return _in_client(topo, main)


def during(frame: pd.DataFrame, start_ns: int, end_ns: int) -> pd.DataFrame:
    """The samples of the sender seen most in [start_ns, end_ns] (the connection of that span:
    the readiness probe's Initial makes a connection of its own), within it."""
    inside = frame[(frame["time_ns"] >= start_ns) & (frame["time_ns"] <= end_ns)]
    assert not inside.empty, "no sample in the span"
    sender = inside["sender"].value_counts().idxmax()
    return inside[inside["sender"] == sender]


def window_full_share(samples: pd.DataFrame) -> float:
    full = quic_cwnd_limited(
        samples["cwnd_bytes"], samples["bytes_in_flight"], samples["datagram_bytes"]
    )
    return float(np.mean(full))


@pytest.mark.timeout(120)
def test_go_server_logs_quic_sender_state_at_50_hz(
    go_binaries: None,
    topology: Topology,
    certs: CertPaths,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log = tmp_path / "quic_senders.csv"
    monkeypatch.setenv(SENDER_LOG_ENV, str(log))
    link = LinkSpec(uplink=ONE_WAY, downlink=ONE_WAY)
    with (
        EmulatorProcess(topology, link, seed=1, out_dir=tmp_path / "emu"),
        go_server(topology, tmp_path / "go", certs) as proc,
    ):
        assert f"sender_log={log}" in proc.output()
        idle_start = time.monotonic_ns()
        tiny_gets(topology)
        idle_end = time.monotonic_ns()
        download = bulk(topology)
    assert log.read_text().startswith(SENDER_LOG_HEADER)
    frame = read_quic_log(log)
    assert frame is not None

    # the download's connection: sampled over its whole span at ~50 Hz
    start_ns, end_ns = download.request_sent_ns, download.end_ns
    samples = during(frame, start_ns, end_ns)
    span_s = (end_ns - start_ns) / 1e9
    assert span_s > 2, f"the download took {span_s:.2f} s: the link did not limit it"
    expected = span_s * SAMPLE_HZ
    assert 0.6 * expected <= len(samples) <= expected + 2, (len(samples), expected)
    gaps_ms = np.diff(samples["time_ns"].to_numpy()) / 1e6
    assert gaps_ms.max() < 250, gaps_ms.max()  # no hole in the span
    assert samples["time_ns"].iloc[0] - start_ns < 100e6  # from the request on
    assert end_ns - samples["time_ns"].iloc[-1] < 100e6  # to the last byte

    # plausible quic-go state on every sample of every connection
    lo, hi = IPV4_DATAGRAM_BYTES
    assert frame["datagram_bytes"].between(lo, hi).all(), frame["datagram_bytes"].unique()
    assert (frame["cwnd_bytes"] >= MIN_CWND_BYTES).all(), frame["cwnd_bytes"].min()
    over = frame["bytes_in_flight"] - frame["cwnd_bytes"] - frame["datagram_bytes"]
    assert (over <= 0).all(), frame[over > 0].head()
    for _, one in frame.groupby("sender"):
        assert one["time_ns"].is_monotonic_increasing
        assert one["datagram_bytes"].is_monotonic_increasing  # MTU discovery only grows it

    # the rate-limited download keeps the window full, with a response being written
    full = window_full_share(samples)
    assert full > LIMITED_SHARE, full
    assert samples["waiting"].mean() > 0.9, samples["waiting"].mean()
    assert samples["limited"].mean() > LIMITED_SHARE, samples["limited"].mean()

    # the idle connection does not; waiting only while a GET is handled
    idle = during(frame, idle_start, idle_end)
    assert len(idle) >= 0.6 * (idle_end - idle_start) / 1e9 * SAMPLE_HZ
    idle_full = window_full_share(idle)
    assert idle_full < LIMITED_SHARE, idle_full
    assert idle["waiting"].mean() < 0.5, idle["waiting"].mean()
    assert idle["limited"].mean() < LIMITED_SHARE
    assert idle["sender"].iloc[0] != samples["sender"].iloc[0]
    print(
        f"download {span_s:.2f} s: {len(samples)} samples, window full {full:.2f}, "
        f"limited {samples['limited'].mean():.2f}, cwnd max {samples['cwnd_bytes'].max()} B, "
        f"datagram {sorted(frame['datagram_bytes'].unique())}; idle: {len(idle)} samples, "
        f"window full {idle_full:.2f}, waiting {idle['waiting'].mean():.2f}"
    )


@pytest.mark.timeout(60)
def test_go_server_writes_no_sender_log_without_the_variable(
    go_binaries: None,
    topology: Topology,
    certs: CertPaths,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(SENDER_LOG_ENV, raising=False)
    workdir = tmp_path / "go"
    link = LinkSpec(uplink=ONE_WAY, downlink=ONE_WAY)
    with (
        EmulatorProcess(topology, link, seed=1, out_dir=tmp_path / "emu"),
        go_server(topology, workdir, certs) as proc,
    ):
        tiny_gets(topology)
        output = proc.output()
    assert "sender_log=off" in output, output
    # its working directory holds only its stdout and stderr
    assert sorted(p.name for p in workdir.iterdir()) == ["go.stderr", "go.stdout"]
