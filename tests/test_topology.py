"""Real-namespace tests of lab.net: build, invariants, teardown on every way out, lab clean."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from pyroute2 import IPRoute

from lab.net import nsenter
from lab.net.clean import clean
from lab.net.inet_diag import DiagSocket, Sampler
from lab.net.names import IFNAMSIZ, Names, new_prefix, prefix_of
from lab.net.runlock import RunLock, is_live
from lab.net.topology import ADDRESSES, Addresses, Topology, TopologyError
from lab.net.workdir import create_workdir, workdir_path, workdir_prefixes
from lab.run.lifecycle import TeardownRegistry, registry

pytestmark = pytest.mark.netns


def _root_links(prefix: str) -> list[str]:
    with IPRoute() as ipr:
        return [
            lk.get("ifname") for lk in ipr.get_links() if lk.get("ifname", "").startswith(prefix)
        ]


def _leftovers(prefix: str) -> list[str]:
    return [ns for ns in nsenter.list_namespaces() if ns.startswith(prefix)] + _root_links(prefix)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --- pure parts ---------------------------------------------------------------------------
def test_names_are_prefixed_and_short() -> None:
    names = Names(new_prefix())
    for name in (*names.namespaces, *names.interfaces):
        assert prefix_of(name) == names.prefix
        assert len(name) <= IFNAMSIZ or name in names.namespaces
    assert all(len(i) <= IFNAMSIZ for i in names.interfaces)
    assert prefix_of("eth0") is None and prefix_of("labxyz-cli") is None
    with pytest.raises(ValueError):
        Names("lab12")


def test_teardown_registry_runs_lifo_once_and_survives_errors() -> None:
    reg = TeardownRegistry()
    calls: list[str] = []
    reg.push("a", lambda: calls.append("a"))
    reg.push("boom", lambda: 1 / 0)
    h = reg.push("c", lambda: calls.append("c"))
    reg.push("d", lambda: calls.append("d"))
    reg.discard(h)
    reg.run_all()
    reg.run_all()
    assert calls == ["d", "a"]
    assert len(reg) == 0


def test_addresses_are_plain_attributes() -> None:
    t = Topology(new_prefix())  # not up: nothing is created
    assert {f.name for f in dataclasses.fields(Addresses)} <= set(vars(t))
    assert (t.server_v4, t.router_client_v6) == (ADDRESSES.server_v4, ADDRESSES.router_client_v6)
    with pytest.raises(AttributeError):
        t.client_v5  # noqa: B018 — no __getattr__ invents it


def test_clean_removes_dead_work_directories_and_keeps_live_ones() -> None:
    dead, live = new_prefix(), new_prefix()
    lock = RunLock(live)
    lock.acquire()
    try:
        for p in (dead, live):
            (create_workdir(p) / "key.pem").write_text("secret")
        assert {dead, live} <= workdir_prefixes()
        report = clean(dead)
        assert f"workdir {workdir_path(dead)}" in report.removed
        assert not workdir_path(dead).exists()
        assert clean(live).skipped_live == [live] and workdir_path(live).is_dir()
    finally:
        lock.release()
        clean(live)
    assert not workdir_path(live).exists()


# --- real namespaces ----------------------------------------------------------------------
def test_up_builds_three_namespaces_with_offloads_off(topology: Topology) -> None:
    t = topology
    assert set(t.names.namespaces) <= set(nsenter.list_namespaces())
    assert nsenter.read_sysctl(t.router_ns, "net/ipv4/ip_forward") == "1"
    assert nsenter.read_sysctl(t.router_ns, "net/ipv6/conf/all/forwarding") == "1"
    assert nsenter.read_sysctl(t.client_ns, "net/ipv4/ip_forward") == "0"
    assert nsenter.read_sysctl(t.server_ns, "net/ipv6/conf/all/forwarding") == "0"
    out = subprocess.run(
        t.run_in(t.client_ns, ["ethtool", "-k", t.names.client_if]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for feature in (
        "tcp-segmentation-offload",
        "generic-segmentation-offload",
        "generic-receive-offload",
        "tx-checksumming",
        "rx-checksumming",
    ):
        assert f"{feature}: off" in out, feature
    mtu = subprocess.run(
        t.run_in(t.server_ns, ["cat", f"/sys/class/net/{t.names.server_if}/mtu"]),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert mtu.strip() == "1500"


def test_routes_go_through_the_router_only(topology: Topology) -> None:
    t = topology
    t.assert_no_bypass()
    for argv, via in (
        (["ip", "route", "get", t.server_v4], t.router_client_v4),
        (["ip", "-6", "route", "get", t.server_v6], t.router_client_v6),
    ):
        out = subprocess.run(t.run_in(t.client_ns, argv), capture_output=True, text=True).stdout
        assert f"via {via} dev {t.names.client_if}" in out
    # an address in the far subnet would be a bypass: the check must catch it
    subprocess.run(
        t.run_in(t.client_ns, ["ip", "addr", "add", "198.51.100.7/24", "dev", t.names.client_if]),
        check=True,
    )
    with pytest.raises(TopologyError):
        t.assert_no_bypass()


def test_router_forwards_without_steering(plain_topology: Topology) -> None:
    t = plain_topology
    for family, dst in ((socket.AF_INET, t.server_v4), (socket.AF_INET6, t.server_v6)):
        srv = t.socket(t.server_ns, family, socket.SOCK_DGRAM)
        cli = t.socket(t.client_ns, family, socket.SOCK_DGRAM)
        with srv, cli:
            srv.bind((dst, 9100))
            srv.settimeout(2)
            cli.sendto(b"hi", (dst, 9100))
            data, (src, *_) = srv.recvfrom(100)
            assert data == b"hi"
            assert src == (t.client_v4 if family == socket.AF_INET else t.client_v6)


def _tcp_pair(t: Topology, family: int, port: int) -> tuple[socket.socket, ...]:
    """(listener, client, accepted) over the router: the listener asks for bbr (accepted
    connections inherit it), the client for cubic."""
    dst = t.server_v4 if family == socket.AF_INET else t.server_v6
    listener = t.socket(t.server_ns, family, socket.SOCK_STREAM)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"bbr")
    listener.bind((dst, port))
    listener.listen()
    client = t.socket(t.client_ns, family, socket.SOCK_STREAM)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"cubic")
    client.connect((dst, port))
    accepted, _ = listener.accept()
    return listener, client, accepted


def _algorithm(sock: socket.socket) -> str:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()


@pytest.mark.parametrize("congctl", [None, "reno"])
def test_route_congctl_decides_every_connections_algorithm(congctl: str | None) -> None:
    """`congctl` on the ends' routes wins over what the programs ask for (bbr on the listener,
    cubic on the client), over IPv4 and IPv6; inet_diag reports what each connection uses, as
    getsockopt does. Without it, each end keeps its own choice."""
    with Topology(tun_steering=False, tcp_congestion=congctl) as t:
        for ns, far in ((t.client_ns, (t.server_net_v4, t.server_net_v6)),
                        (t.server_ns, (t.client_net_v4, t.client_net_v6))):  # fmt: skip
            routes = t.route_congestion(ns)
            assert [routes[net] for net in far] == [congctl, congctl], routes
        for family, port in ((socket.AF_INET, 9201), (socket.AF_INET6, 9202)):
            listener, client, accepted = _tcp_pair(t, family, port)
            with listener, client, accepted:
                assert _algorithm(accepted) == (congctl or "bbr")
                assert _algorithm(client) == (congctl or "cubic")
                with DiagSocket(t.server_ns) as server_diag, DiagSocket(t.client_ns) as cli_diag:
                    served = [s for s in server_diag.dump("tcp", family) if s.sport == port]
                    asked = [s for s in cli_diag.dump("tcp", family) if s.dport == port]
                by_state = {s.state: s.congestion for s in served}
                assert by_state == {1: congctl or "bbr", 10: "bbr"}  # established, listening
                assert [s.congestion for s in asked] == [congctl or "cubic"]
                established = next(s for s in served if s.state == 1)
                assert asked[0].sport == client.getsockname()[1] == established.dport


def test_unknown_route_congctl_is_a_topology_error_and_leaves_nothing() -> None:
    t = Topology(tun_steering=False, tcp_congestion="nosuchcc")
    with pytest.raises(TopologyError, match="congctl nosuchcc"):
        t.up()
    assert _leftovers(t.prefix) == []


def test_inet_diag_reports_udp_buffers_and_the_sampler_sees_connections() -> None:
    """SO_RCVBUF/SO_SNDBUF as getsockopt reports them (twice the value set) for the server's UDP
    socket and the client's; the sampler keeps each TCP connection of both sides."""
    with Topology(tun_steering=False, tcp_congestion="reno") as t:
        port = 9203
        udp = t.socket(t.server_ns, socket.AF_INET6, socket.SOCK_DGRAM)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        udp.bind(("::", port))
        cli_udp = t.socket(t.client_ns, socket.AF_INET, socket.SOCK_DGRAM)
        cli_udp.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 19)
        cli_udp.sendto(b"x", (t.server_v4, port))
        sampler = Sampler(t.server_ns, t.client_ns, port, interval_s=0.01).start()
        listener, client, accepted = _tcp_pair(t, socket.AF_INET6, port)
        with udp, cli_udp, listener, client, accepted:
            time.sleep(0.1)
            seen = sampler.stop()
            want_server = udp.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            want_client = cli_udp.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
        assert want_server == 2 << 20 and want_client == 2 << 19
        assert [s.rcvbuf_bytes for s in seen.server.udp.values()] == [want_server]
        assert [s.sndbuf_bytes for s in seen.client.udp.values()] == [want_client]
        assert seen.samples >= 2 and seen.error is None
        assert seen.server.congestion() == {"reno": 1} == seen.client.congestion()


def test_down_leaves_nothing_and_kills_processes() -> None:
    topo = Topology().up()
    try:
        sleeper = subprocess.Popen(topo.run_in(topo.server_ns, ["sleep", "60"]))
        assert _leftovers(topo.prefix)
        assert sleeper.pid in nsenter.ns_pids(topo.server_ns)
        assert is_live(topo.prefix)
    finally:
        topo.down()
    assert sleeper.wait(5) is not None
    assert _leftovers(topo.prefix) == []
    assert not is_live(topo.prefix)
    topo.down()  # idempotent


def test_two_topologies_coexist() -> None:
    with Topology() as a, Topology() as b:
        assert a.prefix != b.prefix
        a.assert_no_bypass()
        b.assert_no_bypass()
    assert _leftovers(a.prefix) == [] and _leftovers(b.prefix) == []


_CHILD = """
import contextlib, sys, time
from lab.net.topology import Topology
from lab.link.emulator import EmulatorProcess
from lab.link.spec import LinkSpec
from lab.run import lifecycle
lifecycle.install_signal_handlers()  # as the CLI does
with contextlib.ExitStack() as stack:  # as the runner owns a cell's lifetimes
    topo = Topology()
    lifecycle.owned(stack, "topology", topo.down)
    topo.up()
    emu = None
    if sys.argv[1] == "emulator":
        emu = EmulatorProcess(topo, LinkSpec(), seed=1, out_dir=sys.argv[2])
        lifecycle.owned(stack, "emulator", emu.kill)
        emu.start()
    print(topo.prefix, emu.pid if emu else 0, flush=True)
    time.sleep(60)
"""


def _spawn_child(mode: str, tmp_path) -> tuple[subprocess.Popen, str, int]:
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, mode, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    line = child.stdout.readline().split()
    assert line, "child did not build its topology"
    return child, line[0], int(line[1])


def test_sigterm_tears_down(tmp_path) -> None:
    child, prefix, emu_pid = _spawn_child("emulator", tmp_path)
    try:
        assert _leftovers(prefix)
        child.send_signal(signal.SIGTERM)
        child.wait(10)
        assert _leftovers(prefix) == []
        deadline = time.monotonic() + 5
        while _alive(emu_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(emu_pid)
    finally:
        child.kill()
        clean(prefix, force=True)


def test_sigkill_then_lab_clean_leaves_nothing(tmp_path) -> None:
    child, prefix, emu_pid = _spawn_child("emulator", tmp_path)
    try:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(5)
        assert len(_leftovers(prefix)) == 3  # the three namespaces survive a SIGKILL
        assert _alive(emu_pid)  # … and so does the emulator inside the router namespace
        assert not is_live(prefix)
        out = subprocess.run(
            [sys.executable, "-m", "lab", "clean", "--prefix", prefix],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert f"netns {prefix}-rtr" in out
        assert _leftovers(prefix) == []
        time.sleep(0.1)
        assert not _alive(emu_pid)
    finally:
        child.kill()
        clean(prefix, force=True)


def test_clean_skips_live_runs(topology: Topology) -> None:
    report = clean(topology.prefix)
    assert report.skipped_live == [topology.prefix]
    assert set(topology.names.namespaces) <= set(nsenter.list_namespaces())


def test_forked_child_exit_does_not_tear_down_parent(topology: Topology) -> None:
    handle = registry.push("topology", topology.down)
    pid = os.fork()
    if pid == 0:  # child: a normal interpreter exit runs atexit → the registry
        try:
            sys.exit(0)
        finally:
            import atexit

            atexit._run_exitfuncs()
            os._exit(0)  # never return into pytest in the child
    os.waitpid(pid, 0)
    registry.discard(handle)
    assert set(topology.names.namespaces) <= set(nsenter.list_namespaces())
