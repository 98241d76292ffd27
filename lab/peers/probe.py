"""Readiness checks for a dual-stack server: the TCP port accepts and the UDP port speaks QUIC.

A UDP port cannot be "connected to", so the QUIC check sends a packet a QUIC server must answer:
first a long-header packet with a reserved version (0x?a?a?a?a, RFC 9000 §15), padded to 1200
bytes, which any server that does version negotiation answers with a Version Negotiation packet;
if that stays unanswered, a real client Initial (aioquic, ALPN h3), which every QUIC server answers.
Run as `python -m lab.peers.probe HOST PORT [--tcp] [--udp] [--timeout S]` (exit 0 when ready), e.g.
under `ip netns exec`, when the check must run in another network namespace.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time

FORCE_VN_VERSION = 0x1A2A3A4A  # reserved "force version negotiation" pattern
MIN_INITIAL_BYTES = 1200


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def tcp_ready(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when a TCP connection to (host, port) is accepted within timeout_s seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def version_negotiation_probe(dcid: bytes, scid: bytes) -> bytes:
    """A 1200-byte long-header packet with a reserved version: servers answer it with VN."""
    head = bytes([0xC0]) + FORCE_VN_VERSION.to_bytes(4, "big")
    head += bytes([len(dcid)]) + dcid + bytes([len(scid)]) + scid
    return head + b"\x00" * (MIN_INITIAL_BYTES - len(head))


def is_version_negotiation(datagram: bytes, dcid: bytes, scid: bytes) -> bool:
    """True when `datagram` is a VN packet answering a probe sent with (dcid, scid)."""
    if len(datagram) < 7 or not datagram[0] & 0x80:
        return False
    if int.from_bytes(datagram[1:5], "big") != 0:
        return False
    n = datagram[5]
    got_dcid = datagram[6 : 6 + n]
    m = datagram[6 + n] if len(datagram) > 6 + n else -1
    got_scid = datagram[7 + n : 7 + n + m] if m >= 0 else b""
    return got_dcid == scid and got_scid == dcid


def _client_initial(host: str, port: int) -> list[bytes]:
    """The datagrams of a real QUIC client Initial (aioquic, ALPN h3, no verification)."""
    from aioquic.quic.configuration import QuicConfiguration  # deferred: aioquic loads slowly
    from aioquic.quic.connection import QuicConnection  # deferred: aioquic loads slowly

    config = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name="localhost")
    conn = QuicConnection(configuration=config)
    conn.connect((host, port), now=time.monotonic())
    return [data for data, _addr in conn.datagrams_to_send(now=time.monotonic())]


def quic_ready(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """True when a QUIC server on UDP (host, port) answers a VN probe or a client Initial."""
    dcid, scid = os.urandom(8), os.urandom(8)
    with socket.socket(_family(host), socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s / 2)
        try:
            sock.connect((host, port))
            sock.send(version_negotiation_probe(dcid, scid))
            if is_version_negotiation(sock.recv(65536), dcid, scid):
                return True
        except TimeoutError:
            pass
        except OSError:  # ICMP port unreachable → ECONNREFUSED: nothing listens yet
            return False
        try:
            for datagram in _client_initial(host, port):
                sock.send(datagram)
            return len(sock.recv(65536)) > 0
        except OSError:
            return False


def wait_ready(
    host: str,
    port: int,
    *,
    tcp: bool = True,
    udp: bool = True,
    timeout_s: float = 15.0,
    interval_s: float = 0.1,
) -> bool:
    """Poll until the asked-for ports answer; False when timeout_s seconds pass first."""
    deadline = time.monotonic() + timeout_s
    tcp_ok, udp_ok = not tcp, not udp
    while True:
        tcp_ok = tcp_ok or tcp_ready(host, port)
        udp_ok = udp_ok or quic_ready(host, port)
        if tcp_ok and udp_ok:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when the server is ready, 1 when it is not within --timeout seconds."""
    p = argparse.ArgumentParser(prog="python -m lab.peers.probe", description=__doc__)
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--tcp", action="store_true", help="check TCP only (default: both)")
    p.add_argument("--udp", action="store_true", help="check QUIC only (default: both)")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds")
    args = p.parse_args(argv)
    both = not args.tcp and not args.udp
    ok = wait_ready(
        args.host, args.port, tcp=both or args.tcp, udp=both or args.udp, timeout_s=args.timeout
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
