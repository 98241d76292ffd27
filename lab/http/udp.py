"""A UDP socket on trio that reads datagrams in batches and stamps each with its receive time.

The socket is a non-blocking stdlib socket driven with `trio.lowlevel.wait_readable` /
`wait_writable`: one wake-up drains everything the kernel holds, which keeps the per-datagram
cost low (QUIC in Python is CPU-bound). Receive times are CLOCK_MONOTONIC ns taken per datagram.
"""

from __future__ import annotations

import contextlib
import socket
import time
from typing import Any

import trio

SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
MAX_DATAGRAM_BYTES = 65_535


def _family_for(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


class UdpEndpoint:
    """A bound UDP socket; addresses are (host, port) tuples as the socket module gives them."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed = False

    @classmethod
    def bind(cls, host: str, port: int) -> UdpEndpoint:
        """Bind to host:port; host "::" is dual-stack (IPv4-mapped addresses accepted)."""
        family = _family_for(host) if host else socket.AF_INET6
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            cls._tune(sock)
            sock.bind((host, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    @classmethod
    def for_peer(cls, host: str) -> UdpEndpoint:
        """An ephemeral socket of the right family to talk to `host`."""
        family = _family_for(host)
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            cls._tune(sock)
            sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    @staticmethod
    def _tune(sock: socket.socket) -> None:
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER_BYTES)

    @property
    def local_address(self) -> tuple[Any, ...]:
        """The bound (host, port[, flow, scope])."""
        return self.sock.getsockname()

    async def receive_batch(self, limit: int = 256) -> list[tuple[bytes, Any, int]]:
        """Wait for datagrams; return up to `limit` as (data, addr, receive time in ns)."""
        await trio.lowlevel.wait_readable(self.sock)
        out: list[tuple[bytes, Any, int]] = []
        recvfrom = self.sock.recvfrom
        while len(out) < limit:
            try:
                data, addr = recvfrom(MAX_DATAGRAM_BYTES)
            except (BlockingIOError, InterruptedError):
                break
            except ConnectionRefusedError:
                continue  # ICMP port unreachable from an earlier send; not fatal for UDP
            out.append((data, addr, time.monotonic_ns()))
        return out

    async def send(self, data: bytes, addr: Any) -> None:
        """Send one datagram, waiting while the socket buffer is full."""
        while True:
            try:
                self.sock.sendto(data, addr)
                return
            except (BlockingIOError, InterruptedError):
                await trio.lowlevel.wait_writable(self.sock)
            except OSError:
                return  # unreachable peer, bad address family: the datagram is lost, as UDP may

    async def send_many(self, datagrams: list[tuple[bytes, Any]]) -> None:
        """Send datagrams in order; only yields to trio when the socket buffer is full."""
        sendto = self.sock.sendto
        for data, addr in datagrams:
            try:
                sendto(data, addr)
            except (BlockingIOError, InterruptedError):
                await self.send(data, addr)
            except OSError:
                continue

    def close(self) -> None:
        """Close the socket (idempotent); wakes any task waiting on it."""
        if not self.closed:
            self.closed = True
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()
