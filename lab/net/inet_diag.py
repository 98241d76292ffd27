"""What the kernel says about a namespace's sockets, via inet_diag (NETLINK_SOCK_DIAG), as
`ss -tin` / `ss -uem` show it: each TCP connection's congestion-control algorithm
(INET_DIAG_CONG) and each socket's buffer sizes (INET_DIAG_SKMEMINFO: SO_RCVBUF/SO_SNDBUF as
getsockopt reports them, i.e. twice the value a program set, in bytes).

`Sampler` queries a server and a client namespace every `interval_s` from a thread while an
agent runs and keeps what it saw per socket. The netlink sockets are made inside the namespaces
and used from the thread. Cost: a TCP dump walks the host's whole established-connection hash
(shared by all namespaces; 262,144 buckets here, ~2 ms of kernel time per dump and family),
a UDP dump ~0.1 ms; so the default interval is 0.1 s (two TCP dumps per sample: ≈ 4% of a
core) and a connection that lives less than that (a cold handshake over a short RTT) may be
missed. Raw netlink, not pyroute2's DiagSocket: that one adds ~5 ms of Python per dump.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from lab.net import nsenter

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
ENOENT, ESTALE = 2, 116  # an exact lookup's "no such socket" / "cookie does not match"
INET_DIAG_INFO, INET_DIAG_CONG, INET_DIAG_SKMEMINFO = 2, 4, 7
SK_MEMINFO_RCVBUF, SK_MEMINFO_SNDBUF = 1, 3
TCP_SYN_RECV, TCP_TIME_WAIT, TCP_LISTEN = 3, 6, 10
ALL_STATES = 0xFFF  # a bit per TCP state (UDP sockets use 1 and 7)
LISTENING = 1 << TCP_LISTEN
# not listeners, request or time-wait minisockets (a time-wait one still passes as its
# substate FIN_WAIT2 and carries no algorithm: the sampler keeps only sockets with one)
CONNECTIONS = ALL_STATES & ~(1 << TCP_SYN_RECV | 1 << TCP_TIME_WAIT | LISTENING)
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, seq, pid
_REQ = struct.Struct("=BBBxI")  # family, protocol, extensions, states (+ a zero socket id)
_SOCKID_BYTES = 48
# inet_diag_msg: family, state, timer, retrans; sport, dport (big-endian); src, dst (16 bytes
# each); interface; cookie (2 × u32); expires, rqueue, wqueue, uid, inode
_MSG = struct.Struct("=BBBB2s2s16s16sIQIIIII")
_RTA = struct.Struct("=HH")
_RECV_BYTES = 1 << 16

Transport = Literal["tcp", "udp"]
FAMILIES: tuple[int, ...] = (socket.AF_INET, socket.AF_INET6)
_PROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}


@dataclass(frozen=True, slots=True)
class SocketInfo:
    """One socket as inet_diag reports it (addresses as text, ports as numbers)."""

    transport: Transport
    family: int  # AF_INET or AF_INET6
    state: int  # TCP state numbers (UDP: 1 connected, 7 unconnected)
    src: str
    sport: int
    dst: str
    dport: int
    cookie: int  # the kernel's id of the socket, unique while the host runs
    congestion: str | None  # TCP: the congestion-control algorithm
    rcvbuf_bytes: int | None
    sndbuf_bytes: int | None


class DiagSocket:
    """A NETLINK_SOCK_DIAG socket of one namespace (created there; usable from any thread)."""

    def __init__(self, ns: str | None = None) -> None:
        if ns is None:
            self._sock = _netlink()
        else:
            with nsenter.enter(ns):
                self._sock = _netlink()
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> DiagSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def dump(self, transport: Transport, family: int, states: int = ALL_STATES) -> list[SocketInfo]:
        """Every `transport` socket of `family` in the namespace whose state is in `states`
        (a bit mask, `1 << state`). A listener-only dump is quick; any other TCP dump walks
        the host's established hash."""
        ext = 1 << (INET_DIAG_CONG - 1) | 1 << (INET_DIAG_SKMEMINFO - 1)
        self._request(_REQ.pack(family, _PROTO[transport], ext, states) + bytes(_SOCKID_BYTES))
        return [_socket_info(transport, p) for p in self._replies(f"{transport}/{family}")]

    def _request(self, body: bytes, flags: int = NLM_F_REQUEST | NLM_F_DUMP) -> None:
        """Send one SOCK_DIAG_BY_FAMILY request (`body`: inet_diag_req_v2 with its socket id)."""
        self._seq += 1
        head = _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, flags, self._seq, 0)
        self._sock.send(head + body)

    def _replies(self, what: str) -> Iterator[bytes]:
        """The payload of each socket message of the dump just requested."""
        while True:
            data = self._sock.recv(_RECV_BYTES)
            for kind, payload in _messages(data):
                if kind == NLMSG_DONE:
                    return
                if kind == NLMSG_ERROR:
                    (errno,) = struct.unpack_from("=i", payload)
                    if errno == 0:
                        continue
                    raise OSError(-errno, f"inet_diag {what}: error {-errno}")
                yield payload

    def tcp_state_of(self, sock: SocketInfo) -> TcpState | None:
        """The sender state of one known TCP connection (as a dump reported it) by an exact
        lookup — a hash lookup in the kernel, not a walk of the whole established hash as a
        dump is (≈ 0.02 ms instead of ≈ 3 ms per family here); None once it is gone."""
        sock_id = struct.pack(
            "=2s2s16s16sIQ",
            sock.sport.to_bytes(2, "big"),
            sock.dport.to_bytes(2, "big"),
            _packed_address(sock.family, sock.src),
            _packed_address(sock.family, sock.dst),
            0,  # any interface
            sock.cookie,  # the kernel checks it: a reused 4-tuple is not this connection
        )
        body = _REQ.pack(sock.family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), ALL_STATES)
        self._request(body + sock_id, flags=NLM_F_REQUEST)  # not a dump: one socket
        for kind, payload in _messages(self._sock.recv(_RECV_BYTES)):
            if kind == NLMSG_ERROR:
                (errno,) = struct.unpack_from("=i", payload)
                if -errno in (0, ENOENT, ESTALE):  # gone (or its cookie no longer matches)
                    return None
                raise OSError(-errno, f"inet_diag tcp lookup: error {-errno}")
            info = _attribute(payload, INET_DIAG_INFO)
            if info is None or len(info) < _TCP_INFO_MIN_BYTES:
                return None
            return tcp_state(_socket_info("tcp", payload), info)
        return None

    def sockets(
        self, transport: Transport, families: Sequence[int] = FAMILIES, states: int = ALL_STATES
    ) -> list[SocketInfo]:
        """Every `transport` socket of the namespace in `families` (default IPv4 and IPv6)
        whose state is in `states`."""
        return [s for family in families for s in self.dump(transport, family, states)]


@dataclass(frozen=True, slots=True)
class TcpState:
    """A TCP sender's state from tcp_info (`ss -ti`): the window in packets, the bytes the
    application wrote that are not sent yet, and the kernel's cumulative times (µs) the
    connection was busy (data in flight) and limited by the receive window or send buffer."""

    socket: SocketInfo
    mss_bytes: int  # tcpi_snd_mss
    cwnd_packets: int  # tcpi_snd_cwnd
    unacked_packets: int  # tcpi_unacked: sent, not yet acknowledged (or declared lost)
    sacked_packets: int  # tcpi_sacked: of those, selectively acknowledged
    lost_packets: int  # tcpi_lost: of those, marked lost
    retrans_packets: int  # tcpi_retrans: retransmissions in flight
    notsent_bytes: int  # tcpi_notsent_bytes
    busy_us: int  # tcpi_busy_time
    rwnd_limited_us: int  # tcpi_rwnd_limited
    sndbuf_limited_us: int  # tcpi_sndbuf_limited


# struct tcp_info offsets (include/uapi/linux/tcp.h); busy/rwnd/sndbuf times since kernel 4.10
_TCP_INFO_U32 = struct.Struct("=I")
_TCP_INFO_U64 = struct.Struct("=Q")
_SND_MSS, _UNACKED, _SACKED, _LOST, _RETRANS = 16, 24, 28, 32, 36
_SND_CWND, _NOTSENT = 80, 144
_BUSY, _RWND_LIMITED, _SNDBUF_LIMITED = 168, 176, 184
_TCP_INFO_MIN_BYTES = _SNDBUF_LIMITED + 8


def tcp_state(sock: SocketInfo, info: bytes) -> TcpState:
    """Decode the fields of a raw tcp_info (≥ 192 bytes, kernel ≥ 4.10) that TcpState holds."""
    if len(info) < _TCP_INFO_MIN_BYTES:
        raise ValueError(f"tcp_info of {len(info)} bytes; need {_TCP_INFO_MIN_BYTES} (kernel 4.10)")

    def u32(offset: int) -> int:
        return int(_TCP_INFO_U32.unpack_from(info, offset)[0])

    def u64(offset: int) -> int:
        return int(_TCP_INFO_U64.unpack_from(info, offset)[0])

    return TcpState(
        socket=sock,
        mss_bytes=u32(_SND_MSS),
        cwnd_packets=u32(_SND_CWND),
        unacked_packets=u32(_UNACKED),
        sacked_packets=u32(_SACKED),
        lost_packets=u32(_LOST),
        retrans_packets=u32(_RETRANS),
        notsent_bytes=u32(_NOTSENT),
        busy_us=u64(_BUSY),
        rwnd_limited_us=u64(_RWND_LIMITED),
        sndbuf_limited_us=u64(_SNDBUF_LIMITED),
    )


def _attribute(payload: bytes, wanted: int) -> bytes | None:
    """The value of the first netlink attribute of type `wanted` after an inet_diag_msg."""
    offset = _MSG.size
    while offset + _RTA.size <= len(payload):
        length, kind = _RTA.unpack_from(payload, offset)
        if length < _RTA.size:
            return None
        if kind == wanted:
            return payload[offset + _RTA.size : offset + length]
        offset += (length + 3) & ~3
    return None


def _netlink() -> socket.socket:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    s.bind((0, 0))
    return s


def _messages(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(type, payload) of each netlink message in one datagram."""
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size:
            return
        yield kind, data[offset + _NLMSGHDR.size : offset + length]
        offset += (length + 3) & ~3


def _packed_address(family: int, text: str) -> bytes:
    """An address as inet_diag's 16-byte field holds it (IPv4 in the first 4 bytes)."""
    return socket.inet_pton(family, text).ljust(16, b"\0")


def _address(family: int, raw: bytes) -> str:
    return socket.inet_ntop(family, raw[:4] if family == socket.AF_INET else raw)


def _socket_info(transport: Transport, payload: bytes) -> SocketInfo:
    family, state, _, _, sport, dport, src, dst, _, cookie, *_ = _MSG.unpack_from(payload)
    congestion = rcvbuf = sndbuf = None
    offset = _MSG.size
    while offset + _RTA.size <= len(payload):
        length, kind = _RTA.unpack_from(payload, offset)
        if length < _RTA.size:
            break
        value = payload[offset + _RTA.size : offset + length]
        if kind == INET_DIAG_CONG:
            congestion = value.split(b"\0", 1)[0].decode("ascii", "replace")
        elif kind == INET_DIAG_SKMEMINFO and len(value) >= 4 * (SK_MEMINFO_SNDBUF + 1):
            mem = struct.unpack_from(f"={len(value) // 4}I", value)
            rcvbuf, sndbuf = mem[SK_MEMINFO_RCVBUF], mem[SK_MEMINFO_SNDBUF]
        offset += (length + 3) & ~3
    return SocketInfo(
        transport=transport,
        family=family,
        state=state,
        src=_address(family, src),
        sport=int.from_bytes(sport, "big"),
        dst=_address(family, dst),
        dport=int.from_bytes(dport, "big"),
        cookie=cookie,
        congestion=congestion,
        rcvbuf_bytes=rcvbuf,
        sndbuf_bytes=sndbuf,
    )


# --- sampling while an agent runs ---------------------------------------------------------
@dataclass
class Seen:
    """What a sampler saw of one side (server or client): sockets by cookie, latest view."""

    # connections (never listeners), each as last seen with its congestion-control algorithm
    tcp: dict[int, SocketInfo] = field(default_factory=dict)
    udp: dict[int, SocketInfo] = field(default_factory=dict)

    def congestion(self) -> dict[str, int]:
        """algorithm → TCP connections that used it."""
        out: dict[str, int] = {}
        for s in self.tcp.values():
            name = s.congestion or "?"
            out[name] = out.get(name, 0) + 1
        return dict(sorted(out.items()))


@dataclass
class Sampled:
    """A sampler's result: the server's and the client's sockets, how many samples it took and
    the first error (a sampler that fails stops sampling; the measurement goes on)."""

    server: Seen
    client: Seen
    samples: int
    interval_s: float
    error: str | None = None


class Sampler:
    """Samples the server's TCP connections and UDP sockets on `port` and the client's TCP
    connections to `port` and all its UDP sockets (the client namespace holds only the agent)
    every `interval_s`, from a thread, between `start()` and `stop()`; only the `transports`
    asked for (an h2 phase needs TCP, an h3 phase UDP). The client's TCP side is
    dumped in `client_families` only (the family it connects with), the server's in the
    families it listens on `port` with (found at `start()`; a dual-stack server's IPv4
    connections are IPv6 sockets with mapped addresses)."""

    def __init__(
        self,
        server_ns: str,
        client_ns: str,
        port: int,
        *,
        transports: Sequence[Transport] = ("tcp", "udp"),
        client_families: Sequence[int] = FAMILIES,
        interval_s: float = 0.1,
    ) -> None:
        self.port = port
        self.transports = tuple(transports)
        self.client_families = tuple(client_families)
        self.server_families = FAMILIES
        self.interval_s = interval_s
        self._server = DiagSocket(server_ns)
        try:
            self._client = DiagSocket(client_ns)
        except BaseException:
            self._server.close()
            raise
        self._result = Sampled(Seen(), Seen(), 0, interval_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="inet-diag-sampler", daemon=True)

    def start(self) -> Sampler:
        """Find the server's listening families, then sample from the thread."""
        if "tcp" in self.transports:
            try:
                listeners = self._server.sockets("tcp", states=LISTENING)
            except BaseException:
                self.stop()
                raise
            listening = {s.family for s in listeners if s.sport == self.port}
            if listening:
                self.server_families = tuple(f for f in FAMILIES if f in listening)
        self._thread.start()
        return self

    def stop(self) -> Sampled:
        """Take a last sample, stop the thread, close the sockets; what was seen."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._server.close()
        self._client.close()
        return self._result

    def sample(self) -> None:
        """One sample of both namespaces."""
        r, port = self._result, self.port
        if "tcp" in self.transports:
            for s in self._server.sockets("tcp", self.server_families, CONNECTIONS):
                if s.sport == port and s.congestion is not None:
                    r.server.tcp[s.cookie] = s
            for s in self._client.sockets("tcp", self.client_families, CONNECTIONS):
                if s.dport == port and s.congestion is not None:
                    r.client.tcp[s.cookie] = s
        if "udp" in self.transports:
            for s in self._server.sockets("udp"):
                if s.sport == port:
                    r.server.udp[s.cookie] = s
            for s in self._client.sockets("udp"):
                r.client.udp[s.cookie] = s
        r.samples += 1

    def _loop(self) -> None:
        try:
            while True:
                stopping = self._stop.wait(self.interval_s)
                self.sample()
                if stopping:
                    return
        except OSError as e:
            self._result.error = f"{type(e).__name__}: {e}"
