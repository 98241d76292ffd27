"""TCP socket plumbing shared by the HTTP/2 server and client: listeners and per-socket options."""

from __future__ import annotations

import logging
import socket
import struct
from pathlib import Path
from typing import Any

import trio

log = logging.getLogger(__name__)
_warned: set[str] = set()


# Linux's value; Python's socket module lacks the constant on some builds
TCP_NOTSENT_LOWAT: int = getattr(socket, "TCP_NOTSENT_LOWAT", 25)


_SYSCTL_NOTSENT_LOWAT = Path("/proc/sys/net/ipv4/tcp_notsent_lowat")
UNBOUNDED_NOTSENT_LOWAT = 0xFFFFFFFF  # the kernel's own default of the sysctl


def kernel_notsent_lowat() -> int:
    """net.ipv4.tcp_notsent_lowat of this process's network namespace (bytes; normally
    unbounded, 4294967295), or unbounded when it cannot be read."""
    try:
        return int(_SYSCTL_NOTSENT_LOWAT.read_text().strip())
    except (OSError, ValueError):
        return UNBOUNDED_NOTSENT_LOWAT


def set_notsent_lowat(sock: socket.socket | trio.socket.SocketType, lowat: int | None) -> None:
    """TCP_NOTSENT_LOWAT = `lowat` bytes, or the kernel's default (net.ipv4.tcp_notsent_lowat)
    when None — set explicitly, because trio's SocketStream sets 16 KiB on every socket it
    wraps, which would give the reference stacks a bound Go's net/http2 does not have. Call it
    after any SocketStream wrapping."""
    value = kernel_notsent_lowat() if lowat is None else int(lowat)
    # an unsigned int: 4294967295 does not fit setsockopt's (signed) int form
    sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, struct.pack("=I", value))


def set_tcp_options(
    sock: socket.socket | trio.socket.SocketType,
    congestion: str,
    notsent_lowat: int | None = None,
) -> str | None:
    """TCP_NODELAY on, TCP_CONGESTION = `congestion` if the kernel allows it, and
    TCP_NOTSENT_LOWAT = `notsent_lowat` bytes, or the kernel's default when it is None
    (`set_notsent_lowat`).

    Returns the congestion control actually in use (None when it cannot be read). A refused
    algorithm is logged once and the socket keeps the system default.
    """
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    set_notsent_lowat(sock, notsent_lowat)
    if congestion:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, congestion.encode())
        except OSError as e:
            if congestion not in _warned:
                _warned.add(congestion)
                log.warning("TCP_CONGESTION=%s refused (%s); using the default", congestion, e)
    return congestion_of(sock)


def congestion_of(sock: socket.socket | trio.socket.SocketType) -> str | None:
    """The TCP congestion control algorithm of `sock`, or None when it cannot be read."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16)
    except OSError:
        return None
    return raw.split(b"\0", 1)[0].decode()


def notsent_lowat_of(sock: socket.socket | trio.socket.SocketType) -> int | None:
    """TCP_NOTSENT_LOWAT of `sock` in bytes (0xFFFFFFFF = unbounded), None if unreadable."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, 4)
    except OSError:
        return None
    return int(struct.unpack("=I", raw)[0])


def bind_tcp(host: str, port: int, backlog: int = 1024) -> list[socket.socket]:
    """Listening sockets for `host`: "::" or "" is one dual-stack socket (IPv6 + mapped IPv4).

    Port 0 picks a free port; every returned socket then shares the first one's port.
    """
    if host in ("", "::", "*"):
        infos: list[tuple[socket.AddressFamily, tuple[Any, ...]]] = [
            (socket.AF_INET6, ("::", port, 0, 0))
        ]
        dual = True
    else:
        dual = False
        seen: list[tuple[socket.AddressFamily, tuple[Any, ...]]] = []
        for family, _t, _p, _c, sockaddr in socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        ):
            if (family, sockaddr) not in seen:
                seen.append((family, sockaddr))
        infos = seen
    socks: list[socket.socket] = []
    try:
        for fam, addr in infos:
            s = socket.socket(fam, socket.SOCK_STREAM)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual else 1)
            if port == 0 and len(socks) > 1:
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            s.bind(addr)
            s.listen(backlog)
            s.setblocking(False)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks
