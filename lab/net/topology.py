"""Three network namespaces client ⇄ router ⇄ server joined by veth pairs.

```
 <p>-cli                 <p>-rtr                          <p>-srv
 <p>-c0 192.0.2.2  ⇄  <p>-rc 192.0.2.1  <p>-rs 198.51.100.1  ⇄  <p>-s0 198.51.100.2
        2001:db8:1::2       2001:db8:1::1  2001:db8:2::1          2001:db8:2::2
```

MTU 1500, checksum/TSO/GSO/GRO offloads off on every veth, loopback up everywhere, forwarding on
in the router only. Client and server have a route to the other side's subnet via the router and
nothing else (no default route): `assert_no_bypass()` checks it and raises.

With `tcp_congestion="cubic"` (or any algorithm the kernel has) the routes of the client and
server namespaces to the far subnet carry `congctl cubic` (`ip route replace … congctl`): every
TCP connection over them uses that algorithm whatever its program asks for at socket creation —
how Caddy's and Go's TCP get the scenario's algorithm (a namespace may not change the sysctl
`net.ipv4.tcp_congestion_control` on this host). `route_congestion(ns)` reads the routes back.

With `tun_steering=True` (the default) the router sends every forwarded packet through a
persistent TUN device per direction (see docs/topology.md): packets from the client side go to
`<p>-tu`, from the server side to `<p>-td`; the emulator (lab/link/emulator.py) reads them and
writes them back at their release time. With no emulator attached the packets are dropped.

Use as a context manager (`with Topology() as topo:`) or `up()`/`down()`. Whoever owns the
topology makes sure `down()` runs (the runner registers it with `lab.run.lifecycle`, so it also
happens on Ctrl-C, SIGTERM and exit); a run lock tells `lab clean` it is alive.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from socket import AF_INET, AF_INET6

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from lab.errors import RunError
from lab.net import nsenter, tun
from lab.net.names import Names, new_prefix
from lab.net.runlock import RunLock

log = logging.getLogger(__name__)

MTU = 1500
TABLE_UPLINK = 100  # router policy-routing table for packets from the client side
TABLE_DOWNLINK = 101  # … from the server side
RULE_PRIORITY = 100
TUN_TXQUEUELEN = 1000
# ethtool -K features switched off on every veth (super-packets hide loss)
OFFLOADS_OFF = ("rx", "off", "tx", "off", "sg", "off", "tso", "off", "gso", "off", "gro", "off")


class TopologyError(RunError):
    """The topology could not be built or violates an invariant (e.g. a bypass route)."""


@dataclass(frozen=True, slots=True)
class Addresses:
    """Documentation/test-range addresses of the three namespaces (RFC 5737 / RFC 3849)."""

    client_v4: str = "192.0.2.2"
    router_client_v4: str = "192.0.2.1"
    client_net_v4: str = "192.0.2.0/24"
    server_v4: str = "198.51.100.2"
    router_server_v4: str = "198.51.100.1"
    server_net_v4: str = "198.51.100.0/24"
    client_v6: str = "2001:db8:1::2"
    router_client_v6: str = "2001:db8:1::1"
    client_net_v6: str = "2001:db8:1::/64"
    server_v6: str = "2001:db8:2::2"
    router_server_v6: str = "2001:db8:2::1"
    server_net_v6: str = "2001:db8:2::/64"


ADDRESSES = Addresses()


def _plen(net: str) -> int:
    return ipaddress.ip_network(net).prefixlen


class Topology:
    """One run's client ⇄ router ⇄ server namespaces. Attributes: `names` (all names),
    `client_ns`/`router_ns`/`server_ns`, and the addresses of `ADDRESSES` (e.g. `server_v4`)."""

    def __init__(
        self,
        prefix: str | None = None,
        *,
        tun_steering: bool = True,
        tcp_congestion: str | None = None,
    ) -> None:
        self.names = Names(prefix or new_prefix())
        self.prefix = self.names.prefix
        self.tun_steering = tun_steering
        self.tcp_congestion = tcp_congestion  # congctl of the end namespaces' routes (None: none)
        self.addresses = a = ADDRESSES
        # the namespaces' addresses (documentation ranges), as on `ADDRESSES`
        self.client_v4, self.client_v6 = a.client_v4, a.client_v6
        self.server_v4, self.server_v6 = a.server_v4, a.server_v6
        self.router_client_v4, self.router_client_v6 = a.router_client_v4, a.router_client_v6
        self.router_server_v4, self.router_server_v6 = a.router_server_v4, a.router_server_v6
        self.client_net_v4, self.client_net_v6 = a.client_net_v4, a.client_net_v6
        self.server_net_v4, self.server_net_v6 = a.server_net_v4, a.server_net_v6
        self._lock = RunLock(self.prefix)
        self.is_up = False

    # --- convenient attributes ---------------------------------------------------------
    @property
    def client_ns(self) -> str:
        return self.names.client_ns

    @property
    def router_ns(self) -> str:
        return self.names.router_ns

    @property
    def server_ns(self) -> str:
        return self.names.server_ns

    def run_in(self, ns: str, argv: Sequence[str]) -> list[str]:
        """argv running `argv` inside namespace `ns` (one of this topology's)."""
        if ns not in self.names.namespaces:
            raise ValueError(f"{ns!r} is not a namespace of topology {self.prefix}")
        return nsenter.run_in(ns, argv)

    def enter(self, ns: str) -> contextlib.AbstractContextManager[None]:
        """Context manager running the body (this thread) inside `ns`; see lab.net.nsenter."""
        return nsenter.enter(ns)

    def socket(self, ns: str, family: int, kind: int, proto: int = 0) -> socket.socket:
        """A socket created inside `ns` (it stays there; use it from any thread)."""
        if ns not in self.names.namespaces:
            raise ValueError(f"{ns!r} is not a namespace of topology {self.prefix}")
        with nsenter.enter(ns):
            return socket.socket(family, kind, proto)

    # --- lifecycle ------------------------------------------------------------------------
    def __enter__(self) -> Topology:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self) -> Topology:
        """Create namespaces, links, addresses, routes (and TUN steering); check no bypass."""
        if self.is_up:
            return self
        self._lock.acquire()
        self.is_up = True
        try:
            self._build()
            self.assert_no_bypass()
        except BaseException:
            self.down()
            raise
        return self

    def down(self) -> None:
        """Kill processes left in the namespaces, delete namespaces and links. Idempotent."""
        if not self.is_up:
            return
        remove_run(self.names)
        self._lock.release()
        self.is_up = False

    # --- building -------------------------------------------------------------------------
    def _build(self) -> None:
        n, a = self.names, ADDRESSES
        for ns in n.namespaces:
            # `ip netns add`: pyroute2 0.9's netns.create() proved unreliable on repeated use
            _run(["ip", "netns", "add", ns])
            self._base_sysctls(ns)
        with IPRoute() as ipr:
            ipr.link("add", ifname=n.client_if, kind="veth", peer={"ifname": n.router_client_if})
            ipr.link("add", ifname=n.server_if, kind="veth", peer={"ifname": n.router_server_if})
            _ethtool_offloads_off(
                [n.client_if, n.router_client_if, n.router_server_if, n.server_if]
            )
            for ifname, ns in (
                (n.client_if, n.client_ns),
                (n.router_client_if, n.router_ns),
                (n.router_server_if, n.router_ns),
                (n.server_if, n.server_ns),
            ):
                (idx,) = ipr.link_lookup(ifname=ifname)
                # pass an fd: pyroute2 0.9 resolving a namespace *name* here proved unreliable
                fd = os.open(nsenter.ns_path(ns), os.O_RDONLY | os.O_CLOEXEC)
                try:
                    ipr.link("set", index=idx, net_ns_fd=fd)
                finally:
                    os.close(fd)
        # router: forwarding, rp_filter off (packets come back from the TUN devices)
        for key, val in (
            ("net/ipv4/conf/all/rp_filter", 0),
            ("net/ipv4/conf/default/rp_filter", 0),
            ("net/ipv4/ip_forward", 1),
            ("net/ipv6/conf/all/forwarding", 1),
            ("net/ipv6/conf/default/forwarding", 1),
        ):
            nsenter.write_sysctl(n.router_ns, key, val)
        self._configure_end(
            n.client_ns,
            n.client_if,
            (a.client_v4, a.client_net_v4),
            (a.client_v6, a.client_net_v6),
            ((a.server_net_v4, a.router_client_v4), (a.server_net_v6, a.router_client_v6)),
        )
        self._configure_end(
            n.server_ns,
            n.server_if,
            (a.server_v4, a.server_net_v4),
            (a.server_v6, a.server_net_v6),
            ((a.client_net_v4, a.router_server_v4), (a.client_net_v6, a.router_server_v6)),
        )
        if self.tcp_congestion is not None:
            self._set_route_congestion(self.tcp_congestion)
        with ns_iproute(n.router_ns) as ipr:
            _up(ipr, "lo")
            for ifname, v4, net4, v6, net6 in (
                (
                    n.router_client_if,
                    a.router_client_v4,
                    a.client_net_v4,
                    a.router_client_v6,
                    a.client_net_v6,
                ),
                (
                    n.router_server_if,
                    a.router_server_v4,
                    a.server_net_v4,
                    a.router_server_v6,
                    a.server_net_v6,
                ),
            ):
                idx = _up(ipr, ifname)
                ipr.addr("add", index=idx, address=v4, prefixlen=_plen(net4))
                ipr.addr("add", index=idx, address=v6, prefixlen=_plen(net6))
            if self.tun_steering:
                self._steer(ipr)

    @staticmethod
    def _base_sysctls(ns: str) -> None:
        for key, val in (
            ("net/ipv6/conf/all/accept_dad", 0),  # addresses usable at once
            ("net/ipv6/conf/default/accept_dad", 0),
            ("net/ipv6/conf/all/accept_ra", 0),
            ("net/ipv6/conf/default/accept_ra", 0),
        ):
            nsenter.write_sysctl(ns, key, val)

    @staticmethod
    def _configure_end(
        ns: str,
        ifname: str,
        v4: tuple[str, str],
        v6: tuple[str, str],
        routes: tuple[tuple[str, str], ...],
    ) -> None:
        with ns_iproute(ns) as ipr:
            _up(ipr, "lo")
            idx = _up(ipr, ifname)
            ipr.addr("add", index=idx, address=v4[0], prefixlen=_plen(v4[1]))
            ipr.addr("add", index=idx, address=v6[0], prefixlen=_plen(v6[1]))
            for dst, gw in routes:
                ipr.route("add", dst=dst, gateway=gw, oif=idx)

    def _end_routes(self) -> list[tuple[str, str, str, str]]:
        """(namespace, interface, far subnet, gateway) of every route of the two ends."""
        n, a = self.names, ADDRESSES
        return [
            (n.client_ns, n.client_if, a.server_net_v4, a.router_client_v4),
            (n.client_ns, n.client_if, a.server_net_v6, a.router_client_v6),
            (n.server_ns, n.server_if, a.client_net_v4, a.router_server_v4),
            (n.server_ns, n.server_if, a.client_net_v6, a.router_server_v6),
        ]

    def _set_route_congestion(self, algorithm: str) -> None:
        """`ip route replace DST via GW dev IF congctl ALGO` for every route of the two ends
        (pyroute2 0.9 does not encode RTAX_CC_ALGO); TopologyError for an unknown algorithm."""
        for ns, ifname, dst, gw in self._end_routes():
            family = "-6" if ":" in dst else "-4"
            argv = ["ip", "-n", ns, family, "route", "replace", dst, "via", gw, "dev", ifname]
            _run([*argv, "congctl", algorithm])

    def route_congestion(self, ns: str) -> dict[str, str | None]:
        """far subnet → the congctl of its route in `ns` (None: none set), from `ip -j route`."""
        out: dict[str, str | None] = {}
        for family in ("-4", "-6"):
            p = subprocess.run(
                ["ip", "-n", ns, "-j", family, "route", "show"],
                capture_output=True,
                text=True,
                check=False,
            )
            if p.returncode != 0:
                raise TopologyError(f"ip -n {ns} route show failed: {p.stderr.strip()}")
            for route in json.loads(p.stdout or "[]"):
                metrics = {k: v for m in route.get("metrics") or [] for k, v in m.items()}
                out[str(route.get("dst"))] = metrics.get("congestion")
        return out

    def _steer(self, ipr: IPRoute) -> None:
        """Persistent TUN per direction + policy routing: iif <p>-rc to the server subnet →
        table U → <p>-tu, iif <p>-rs to the client subnet → table D → <p>-td, with a blackhole
        fallback in each table."""
        n = self.names
        with nsenter.enter(n.router_ns):
            tun.create_persistent(n.tun_uplink)
            tun.create_persistent(n.tun_downlink)
        a = ADDRESSES
        for tun_if, in_if, table, far in (
            (n.tun_uplink, n.router_client_if, TABLE_UPLINK, (a.server_net_v4, a.server_net_v6)),
            (
                n.tun_downlink,
                n.router_server_if,
                TABLE_DOWNLINK,
                (a.client_net_v4, a.client_net_v6),
            ),
        ):
            (idx,) = ipr.link_lookup(ifname=tun_if)
            ipr.link("set", index=idx, mtu=MTU, txqlen=TUN_TXQUEUELEN, state="up")
            nsenter.write_sysctl(n.router_ns, f"net/ipv4/conf/{tun_if}/rp_filter", 0)
            for family, default, dst in (
                (AF_INET, "0.0.0.0/0", far[0]),
                (AF_INET6, "::/0", far[1]),
            ):
                ipr.route("add", dst=default, oif=idx, table=table, family=family)
                # if the TUN route ever disappears, drop rather than fall through to main
                ipr.route(
                    "add",
                    dst=default,
                    type="blackhole",
                    table=table,
                    family=family,
                    priority=4096,
                )
                # only traffic for the far subnet: link-local/multicast (MLD, ND) stays local,
                # so the emulator sees exactly the end-to-end packets
                net = ipaddress.ip_network(dst)
                ipr.rule(
                    "add",
                    iifname=in_if,
                    dst=str(net.network_address),
                    dst_len=net.prefixlen,
                    table=table,
                    priority=RULE_PRIORITY,
                    family=family,
                )

    # --- invariants -----------------------------------------------------------------------
    def assert_no_bypass(self) -> None:
        """Raise TopologyError unless client→server and server→client routes go via the router
        (for IPv4 and IPv6), and no end has a link or address in the other's subnet."""
        a = ADDRESSES
        for ns, ifname, dsts, gws, other_nets in (
            (
                self.client_ns,
                self.names.client_if,
                (a.server_v4, a.server_v6),
                (a.router_client_v4, a.router_client_v6),
                (a.server_net_v4, a.server_net_v6),
            ),
            (
                self.server_ns,
                self.names.server_if,
                (a.client_v4, a.client_v6),
                (a.router_server_v4, a.router_server_v6),
                (a.client_net_v4, a.client_net_v6),
            ),
        ):
            with ns_iproute(ns) as ipr:
                (idx,) = ipr.link_lookup(ifname=ifname)
                links = [lk.get("ifname") for lk in ipr.get_links()]
                if sorted(links) != sorted(["lo", ifname]):
                    raise TopologyError(f"{ns} has unexpected links {links}")
                for addr in ipr.get_addr():
                    ip = ipaddress.ip_address(addr.get("IFA_ADDRESS"))
                    if any(ip in ipaddress.ip_network(net) for net in other_nets):
                        raise TopologyError(f"{ns} has an address {ip} in the far subnet")
                for dst, gw in zip(dsts, gws, strict=True):
                    family = AF_INET6 if ":" in dst else AF_INET
                    try:
                        (route,) = ipr.route("get", dst=dst, family=family)
                    except NetlinkError as e:
                        raise TopologyError(f"{ns}: no route to {dst}: {e}") from e
                    via = route.get("RTA_GATEWAY")
                    if via != gw or route.get("RTA_OIF") != idx:
                        raise TopologyError(
                            f"{ns}: route to {dst} goes via {via!r} (oif "
                            f"{route.get('RTA_OIF')}), not via the router {gw}"
                        )


@contextlib.contextmanager
def ns_iproute(ns: str) -> Iterator[IPRoute]:
    """An IPRoute whose netlink socket lives in namespace `ns` (created after setns; pyroute2
    0.9's own `IPRoute(netns=NAME)` proved unreliable across repeated topologies)."""
    with nsenter.enter(ns):
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def _up(ipr: IPRoute, ifname: str) -> int:
    (idx,) = ipr.link_lookup(ifname=ifname)
    ipr.link("set", index=idx, state="up", mtu=MTU if ifname != "lo" else None)
    return idx


def _run(argv: Sequence[str]) -> None:
    p = subprocess.run(argv, capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise TopologyError(f"{' '.join(argv)} failed: {p.stderr.strip()}")


def _ethtool_offloads_off(ifnames: Sequence[str]) -> None:
    """`ethtool -K IF rx off tx off sg off tso off gso off gro off` for each, in parallel."""
    procs = [
        subprocess.Popen(
            ["ethtool", "-K", ifname, *OFFLOADS_OFF],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for ifname in ifnames
    ]
    errors = []
    for ifname, p in zip(ifnames, procs, strict=True):
        _, err = p.communicate()
        if p.returncode != 0:
            errors.append(f"{ifname}: {err.decode().strip()}")
    if errors:
        raise TopologyError("ethtool -K failed: " + "; ".join(errors))


# --- removal (also used by lab clean) -------------------------------------------------------
def kill_ns_processes(namespaces: Sequence[str], grace_s: float = 0.5) -> list[int]:
    """SIGTERM every process in `namespaces`, SIGKILL the survivors after `grace_s`.
    Returns the pids found. Never touches the calling process."""
    me = os.getpid()
    pids = sorted({p for ns in namespaces for p in nsenter.ns_pids(ns)} - {me})
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        time.sleep(0.01)
        alive = [p for p in alive if _alive(p)]
    for pid in alive:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def remove_run(names: Names) -> list[str]:
    """Remove every object of one run: processes in its namespaces, the namespaces (their
    links and TUN devices go with them) and links left in the root namespace. Returns what
    was removed."""
    removed: list[str] = []
    existing = set(nsenter.list_namespaces())
    mine = [ns for ns in names.namespaces if ns in existing]
    for pid in kill_ns_processes(mine):
        removed.append(f"process {pid}")
    for ns in mine:
        try:
            _run(["ip", "netns", "delete", ns])
            removed.append(f"netns {ns}")
        except TopologyError as e:
            log.warning("could not remove netns %s: %s", ns, e)
    removed += remove_root_links(names.prefix)
    return removed


def remove_root_links(prefix: str) -> list[str]:
    """Delete links named `<prefix>-*` in the root namespace (left by a crash mid-setup)."""
    removed = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get("ifname") or ""
            if name.startswith(prefix + "-"):
                with contextlib.suppress(NetlinkError):
                    ipr.link("del", index=link["index"])
                    removed.append(f"link {name}")
    return removed


@contextlib.contextmanager
def topology(
    prefix: str | None = None, *, tun_steering: bool = True, tcp_congestion: str | None = None
) -> Iterator[Topology]:
    """`with topology() as topo:` — a Topology that is up inside the block."""
    topo = Topology(prefix, tun_steering=tun_steering, tcp_congestion=tcp_congestion)
    with topo:
        yield topo
