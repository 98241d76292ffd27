"""The TUN emulator with real namespaces and packets: no bypass, delay, loss on TCP and UDP,
seeded reproducibility, outputs; its log of the server's TCP first transmissions on hand-built
packets and on a real lossy transfer."""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from pathlib import Path

import pytest

from lab.link.emulator import (
    SEQ_MODULUS,
    EmulatorError,
    EmulatorProcess,
    EmulatorReport,
    TcpSentLog,
    ip_proto,
    not_end_to_end,
)
from lab.link.spec import (
    PURE_ACK_MAX_BYTES,
    BernoulliLoss,
    DirectionSpec,
    DropListLoss,
    IsolatedLoss,
    LinkSpec,
)
from lab.net.topology import Topology

pytestmark = pytest.mark.netns

SO_RCVBUFFORCE = 33  # <asm-generic/socket.h>; not exported by Python 3.11
FAMILIES = ((socket.AF_INET, "v4"), (socket.AF_INET6, "v6"))


def _addr(t: Topology, family: int, who: str) -> str:
    return getattr(t, f"{who}_{'v4' if family == socket.AF_INET else 'v6'}")


def _udp_pair(t: Topology, family: int, port: int) -> tuple[socket.socket, socket.socket]:
    srv = t.socket(t.server_ns, family, socket.SOCK_DGRAM)
    srv.bind((_addr(t, family, "server"), port))
    cli = t.socket(t.client_ns, family, socket.SOCK_DGRAM)
    return cli, srv


def _udp_delivers(t: Topology, family: int, port: int, timeout: float = 0.4) -> bool:
    cli, srv = _udp_pair(t, family, port)
    with cli, srv:
        srv.settimeout(timeout)
        cli.sendto(b"probe", (_addr(t, family, "server"), port))
        try:
            return srv.recv(100) == b"probe"
        except TimeoutError:
            return False


def _tcp_connects(t: Topology, family: int, port: int, timeout: float = 0.5) -> bool:
    srv = t.socket(t.server_ns, family, socket.SOCK_STREAM)
    cli = t.socket(t.client_ns, family, socket.SOCK_STREAM)
    with srv, cli:
        srv.bind((_addr(t, family, "server"), port))
        srv.listen()
        cli.settimeout(timeout)
        try:
            cli.connect((_addr(t, family, "server"), port))
        except (TimeoutError, OSError):
            return False
        return True


def _send_udp_sequence(t: Topology, n: int, port: int, gap_s: float = 0.0002) -> set[int]:
    """Send datagrams 0..n-1 client→server one at a time; return the indices received."""
    cli, srv = _udp_pair(t, socket.AF_INET, port)
    with cli, srv:
        srv.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)  # read after sending
        srv.settimeout(0.5)
        for i in range(n):
            cli.sendto(struct.pack("!I", i) + b"x" * 100, (t.server_v4, port))
            time.sleep(gap_s)
        got: set[int] = set()
        try:
            while True:
                got.add(struct.unpack("!I", srv.recv(2000)[:4])[0])
        except TimeoutError:
            pass
    return got


def test_ip_proto_parses_v4_and_v6() -> None:
    v4 = bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17]) + bytes(18)
    v6 = bytes([0x60, 0, 0, 0, 0, 8, 6, 64]) + bytes(40)
    assert ip_proto(v4) == 17 and ip_proto(v6) == 6 and ip_proto(b"") == -1
    assert not not_end_to_end(v4) and not not_end_to_end(v6)
    mld = bytes([0x60, 0, 0, 0, 0, 36, 0, 1]) + b"\xfe\x80" + bytes(14) + b"\xff\x02" + bytes(14)
    assert not_end_to_end(mld) and not_end_to_end(b"\x00" * 30)


# --- the TCP first-transmission log on hand-built packets -------------------------------------
SYN, ACK, FIN = 0x02, 0x10, 0x01


def _tcp(v: int, dport: int, seq: int, payload: int, flags: int = ACK, options: int = 0) -> bytes:
    """A server→client IPv4 (`v` 4, IHL 6: with 4 bytes of IP options) or IPv6 TCP packet with
    `options` bytes of TCP options and `payload` bytes of data."""
    offset = (20 + options) // 4
    tcp = struct.pack("!HHIIBBHHH", 8443, dport, seq, 777, offset << 4, flags, 65535, 0, 0)
    tcp += bytes(options + payload)
    if v == 4:
        size = 24 + len(tcp)
        return struct.pack("!BBHHHBBH8s", 0x46, 0, size, 0, 0, 64, 6, 0, bytes(8)) + bytes(4) + tcp
    return struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, bytes(16), bytes(16)) + tcp


@pytest.mark.parametrize("v", [4, 6])
def test_tcp_sent_log_records_first_transmissions_from_the_syn_acks_isn(v: int) -> None:
    log = TcpSentLog()
    isn = 1_000_000
    log.offer(_tcp(v, 50001, isn - 5, 100), 1)  # before its SYN-ACK: unknown flow, ignored
    log.offer(_tcp(v, 50001, isn, 0, SYN | ACK, options=20), 2)  # the SYN-ACK: ISN
    log.offer(_tcp(v, 50001, isn + 1, 0), 3)  # a pure ACK: no data
    log.offer(_tcp(v, 50001, isn + 1, 1448, options=12), 4)
    log.offer(_tcp(v, 50001, isn + 1449, 1000), 5)
    log.offer(_tcp(v, 50001, isn + 1, 1448, options=12), 6)  # a retransmission: not new
    log.offer(_tcp(v, 50001, isn + 1449, 1200), 7)  # retransmitted with 200 new bytes
    log.offer(_tcp(v, 50001, isn + 2649, 50, ACK | FIN), 8)  # FIN: its sequence number no byte
    assert log.records == [(4, 50001, 1448), (5, 50001, 2448), (7, 50001, 2648), (8, 50001, 2698)]


def test_tcp_sent_log_keeps_flows_apart_and_restarts_on_a_new_syn_ack() -> None:
    log = TcpSentLog()
    log.offer(_tcp(4, 40000, 10, 0, SYN | ACK), 1)
    log.offer(_tcp(6, 40002, 5_000, 0, SYN | ACK), 2)
    log.offer(_tcp(4, 40000, 11, 500), 3)
    log.offer(_tcp(6, 40002, 5_001, 300), 4)
    log.offer(_tcp(4, 40000, 999, 0, SYN | ACK), 5)  # the port reused by a new connection
    log.offer(_tcp(4, 40000, 1000, 100), 6)
    assert log.records == [(3, 40000, 500), (4, 40002, 300), (6, 40000, 100)]
    log.offer(bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17]) + bytes(18), 7)  # UDP: ignored
    log.offer(_tcp(4, 40000, 1000, 0)[:30], 8)  # truncated TCP header: ignored
    assert len(log.records) == 3


def test_tcp_sent_log_offsets_go_on_across_the_sequence_wrap() -> None:
    log = TcpSentLog()
    isn = SEQ_MODULUS - 1000
    log.offer(_tcp(4, 40000, isn, 0, SYN | ACK), 1)
    log.offer(_tcp(4, 40000, isn + 1, 900), 2)
    log.offer(_tcp(4, 40000, (isn + 901) % SEQ_MODULUS, 1400), 3)  # crosses 2**32
    log.offer(_tcp(4, 40000, (isn + 2301) % SEQ_MODULUS, 1400), 4)  # wholly past it
    log.offer(_tcp(4, 40000, (isn + 901) % SEQ_MODULUS, 1400), 5)  # a retransmission
    assert log.records == [(2, 40000, 900), (3, 40000, 2300), (4, 40000, 3700)]
    log.flows[40000][1] = SEQ_MODULUS + 5  # more than 4 GiB into the stream
    log.offer(_tcp(4, 40000, (isn + 1 + SEQ_MODULUS + 5) % SEQ_MODULUS, 10), 6)
    assert log.records[-1] == (6, 40000, SEQ_MODULUS + 15)


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_INET6])
def test_tcp_sent_log_of_a_lossy_transfer_counts_each_byte_once(
    topology: Topology, tmp_path: Path, family: int
) -> None:
    """2 MB server→client at 5 % downlink loss: retransmissions galore, yet the log's offsets
    rise strictly, end at exactly the bytes sent, and the port is the client's."""
    t = topology
    total = 2_000_000
    spec = DirectionSpec(loss=BernoulliLoss(model="bernoulli", rate=0.05))
    with EmulatorProcess(t, LinkSpec(downlink=spec), seed=5, out_dir=tmp_path) as emu:
        srv = t.socket(t.server_ns, family, socket.SOCK_STREAM)
        cli = t.socket(t.client_ns, family, socket.SOCK_STREAM)
        with srv, cli:
            srv.bind((_addr(t, family, "server"), 9260))
            srv.listen()
            cli.settimeout(20)
            cli.connect((_addr(t, family, "server"), 9260))
            conn, _ = srv.accept()
            with conn:
                sender = threading.Thread(target=conn.sendall, args=(bytes(total),))
                sender.start()
                got = 0
                while got < total:
                    got += len(cli.recv(1 << 20))
                sender.join()
            port = cli.getsockname()[1]
    report = EmulatorReport.load(emu.out_dir)
    sent = report.tcp_sent()
    assert list(sent.columns) == ["time_ns", "client_port", "end_offset"]
    assert set(sent["client_port"]) == {port}
    assert sent["end_offset"].is_monotonic_increasing and sent["end_offset"].is_unique
    assert sent["end_offset"].iloc[-1] == total
    assert sent["time_ns"].is_monotonic_increasing
    dropped = report.directions["downlink"].packets_dropped
    assert dropped > 20  # retransmissions happened, and none of them was logged as new
    assert len(sent) < report.directions["downlink"].packets_in - dropped


def test_emulator_down_means_no_bypass(topology: Topology, tmp_path: Path) -> None:
    t = topology
    for family, _ in FAMILIES:
        assert not _udp_delivers(t, family, 9200), "UDP bypassed the (stopped) emulator"
        assert not _tcp_connects(t, family, 9201), "TCP bypassed the (stopped) emulator"
    with EmulatorProcess(t, LinkSpec(), seed=1, out_dir=tmp_path / "a"):
        for family, _ in FAMILIES:
            assert _udp_delivers(t, family, 9202)
            assert _tcp_connects(t, family, 9203)
    for family, _ in FAMILIES:  # stopped again: dropped again
        assert not _udp_delivers(t, family, 9204)


def test_delay_is_applied_both_ways(topology: Topology, tmp_path: Path) -> None:
    t = topology
    link = LinkSpec(uplink=DirectionSpec(delay_ms=15), downlink=DirectionSpec(delay_ms=5))
    with EmulatorProcess(t, link, seed=1, out_dir=tmp_path) as emu:
        for family, _ in FAMILIES:
            cli, srv = _udp_pair(t, family, 9210)
            with cli, srv:
                srv.settimeout(2)
                cli.settimeout(2)
                t0 = time.monotonic()
                cli.sendto(b"ping", (_addr(t, family, "server"), 9210))
                _, peer = srv.recvfrom(100)
                t1 = time.monotonic()
                srv.sendto(b"pong", peer)
                cli.recv(100)
                t2 = time.monotonic()
            assert 0.015 <= t1 - t0 < 0.025
            assert 0.005 <= t2 - t1 < 0.015
    assert emu.proc is not None and emu.proc.returncode == 0  # stopped cleanly on SIGTERM


def test_tcp_and_udp_both_lose_packets_at_2_percent(topology: Topology, tmp_path: Path) -> None:
    t = topology
    spec = DirectionSpec(loss=BernoulliLoss(model="bernoulli", rate=0.02))
    emu = EmulatorProcess(t, LinkSpec(uplink=spec, downlink=spec), seed=7, out_dir=tmp_path)
    emu.start()
    try:
        # UDP stream client → server
        got = _send_udp_sequence(t, 1500, 9220, gap_s=0.0001)
        assert 1500 * 0.005 < 1500 - len(got) < 1500 * 0.05
        # TCP transfer server → client: 2 MB, must arrive intact despite loss
        payload = bytes(range(256)) * 8192
        srv = t.socket(t.server_ns, socket.AF_INET, socket.SOCK_STREAM)
        srv.bind((t.server_v4, 9221))
        srv.listen()

        def serve() -> None:
            conn, _ = srv.accept()
            with conn:
                conn.sendall(payload)

        th = threading.Thread(target=serve, daemon=True)
        th.start()
        cli = t.socket(t.client_ns, socket.AF_INET, socket.SOCK_STREAM)
        cli.settimeout(30)
        cli.connect((t.server_v4, 9221))
        received = bytearray()
        while chunk := cli.recv(65536):
            received += chunk
        cli.close()
        srv.close()
        th.join(5)
        assert received == payload
    finally:
        report = emu.stop()
    drops = report.drops()
    assert {6, 17} <= set(drops["ip_proto"])
    assert set(drops["reason"]) == {"random"}
    for name in ("uplink", "downlink"):
        d = report.directions[name]
        assert d.packets_dropped > 0
        assert d.packets_in == d.packets_out + d.packets_dropped + d.pending_at_stop
        assert (drops["direction"] == name).sum() == d.packets_dropped
    assert report.directions["downlink"].packets_in > 2_000_000 / 1500


def _dropped_indices(t: Topology, link: LinkSpec, seed: int, out: Path) -> tuple[set[int], int]:
    with EmulatorProcess(t, link, seed=seed, out_dir=out):
        got = _send_udp_sequence(t, 300, 9230)
    rep = EmulatorReport.load(out)  # written when the context manager stopped it
    return set(range(300)) - got, len(rep.drops())


def test_same_seed_same_drops_other_seed_other_drops(topology: Topology, tmp_path: Path) -> None:
    spec = DirectionSpec(loss=BernoulliLoss(model="bernoulli", rate=0.1))
    link = LinkSpec(uplink=spec, downlink=spec)
    a, na = _dropped_indices(topology, link, 11, tmp_path / "a")
    b, nb = _dropped_indices(topology, link, 11, tmp_path / "b")
    c, _ = _dropped_indices(topology, link, 12, tmp_path / "c")
    assert 10 < len(a) < 60
    assert a == b and na == nb == len(a)
    assert a != c


def test_drop_list_drops_exactly_those_packets(topology: Topology, tmp_path: Path) -> None:
    spec = DirectionSpec(loss=DropListLoss(model="drop_list", packets=[0, 7, 42]))
    dropped, n = _dropped_indices(topology, LinkSpec(uplink=spec), 1, tmp_path)
    assert dropped == {0, 7, 42} and n == 3


def test_reseed_restarts_the_drop_list_for_each_phase(topology: Topology, tmp_path: Path) -> None:
    spec = DirectionSpec(loss=DropListLoss(model="drop_list", packets=[0, 3]))
    emu = EmulatorProcess(topology, LinkSpec(uplink=spec), seed=1, out_dir=tmp_path)
    emu.start()
    try:
        first = _send_udp_sequence(topology, 10, 9240)
        t1 = emu.reseed()
        second = _send_udp_sequence(topology, 10, 9241)
        t2 = emu.reseed()
    finally:
        report = emu.stop()
    assert set(range(10)) - first == {0, 3}
    assert set(range(10)) - second == {0, 3}  # index 0 again after the reseed
    phases = report.phases
    assert [p.index for p in phases] == [0, 1, 2]
    assert [p.started_ns for p in phases[1:]] == [t1, t2]
    assert phases[0].started_ns < t1 < t2
    up = [p.directions["uplink"] for p in phases]
    assert [u["dropped_by_reason"] for u in up] == [{"drop_list": 2}, {"drop_list": 2}, {}]
    assert [u["packets_in"] for u in up] == [10, 10, 0]
    drops = report.drops()
    assert ((drops["time_ns"] >= t1) & (drops["time_ns"] < t2)).sum() == 2


def test_isolated_loss_drops_what_its_log_says(topology: Topology, tmp_path: Path) -> None:
    """One data packet about every 100 ms, never an ACK-sized one: what went missing at the
    receiver is exactly what the drop log lists."""
    t = topology
    every_ms = 100.0
    spec = DirectionSpec(loss=IsolatedLoss(model="isolated", every_ms=every_ms))
    sizes = [40 if i % 2 else 300 for i in range(500)]  # UDP payload; +28 B of headers
    with EmulatorProcess(t, LinkSpec(uplink=spec), seed=3, out_dir=tmp_path) as emu:
        cli, srv = _udp_pair(t, socket.AF_INET, 9250)
        with cli, srv:
            srv.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)
            srv.settimeout(0.5)
            for i, n in enumerate(sizes):
                cli.sendto(struct.pack("!I", i) + b"x" * (n - 4), (t.server_v4, 9250))
                time.sleep(0.002)
            got: set[int] = set()
            with contextlib.suppress(TimeoutError):
                while True:
                    got.add(struct.unpack("!I", srv.recv(2000)[:4])[0])
    report = EmulatorReport.load(emu.out_dir)
    drops = report.drops()
    missing = sorted(set(range(len(sizes))) - got)
    assert len(missing) == len(drops) >= 5
    assert set(drops["reason"]) == {"isolated"}
    assert all(sizes[i] == 300 for i in missing)  # data packets only
    assert (drops["length"] == 328).all() and (drops["length"] > PURE_ACK_MAX_BYTES).all()
    gaps_ms = drops["time_ns"].diff().dropna() / 1e6
    assert gaps_ms.min() >= every_ms * 0.75  # never closer (position_jitter 0.5)
    assert gaps_ms.max() <= every_ms * 1.25 + 15  # + the wait for a data packet, scheduling
    assert report.directions["uplink"].dropped_by_reason == {"isolated": len(missing)}


def test_start_fails_loudly_without_tun_devices(plain_topology: Topology, tmp_path: Path) -> None:
    emu = EmulatorProcess(plain_topology, LinkSpec(), seed=1, out_dir=tmp_path)
    with pytest.raises(EmulatorError, match="does not exist"):
        emu.start()
    assert emu.proc is not None and emu.proc.poll() is not None
