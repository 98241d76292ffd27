"""Hostile QUIC client datagrams, for the server's flood tests and benchmark (loopback only).

Three kinds of client Initial datagram, each 1200 bytes (the minimum a server accepts):

- `real_initial`: a genuine ClientHello in a correctly protected Initial packet. One ClientHello is
  built once by aioquic's client (`client_hello()`) and re-protected under each fresh destination
  connection id (≈ 0.4 ms each, against ≈ 1.6 ms for a new client); to the server each is a new
  connection that completes its side of the handshake.
- `garbage_initial`: a well-formed version-1 Initial header whose payload is random bytes; it
  parses as a header but does not decrypt with the Initial keys.
- `retry_answer`: what a client that validates its address sends after a Retry packet: the same
  ClientHello to the Retry's source connection id, carrying its token.

`parse_retry` reads a server's Retry packet and checks its integrity tag (RFC 9001 §5.8).
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from functools import cache
from typing import Literal

import trio
from aioquic.buffer import Buffer
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoPair
from aioquic.quic.packet import (
    QuicFrameType,
    QuicPacketType,
    QuicProtocolVersion,
    get_retry_integrity_tag,
    pull_quic_header,
)
from aioquic.quic.packet_builder import QuicPacketBuilder

VERSION_1 = int(QuicProtocolVersion.VERSION_1)
INITIAL_DATAGRAM_BYTES = 1200
RETRY_INTEGRITY_TAG_BYTES = 16


@cache
def client_hello() -> tuple[bytes, bytes]:
    """(ClientHello, source connection id): the TLS ClientHello (CRYPTO data at offset 0) of an
    aioquic HTTP/3 client and the id its transport parameters name (initial_source_connection_id);
    Initials carrying it must use that source id, or the server closes the connection."""
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name="localhost")
    client = QuicConnection(configuration=cfg)
    client.connect(("127.0.0.1", 443), now=0.0)
    (datagram, _addr), *_ = client.datagrams_to_send(now=0.0)
    dcid = client._peer_cid.cid  # the random original destination connection id
    server_side = CryptoPair()
    server_side.setup_initial(dcid, is_client=False, version=VERSION_1)
    packet_length = pull_quic_header(Buffer(data=datagram), 8).packet_length
    packet = datagram[:packet_length]  # aioquic pads client datagrams after the packet
    offset = packet_number_offset(packet)
    _plain_header, payload, _pn = server_side.decrypt_packet(packet, offset, 0)
    return _crypto_frame_data(payload), client.host_cid


def packet_number_offset(datagram: bytes) -> int:
    """Offset of the packet number in a long-header Initial packet (after its Length field)."""
    pos = 6 + datagram[5]  # first byte, version, DCID length, DCID
    pos += 1 + datagram[pos]  # SCID length, SCID
    token_length_size = 1 << (datagram[pos] >> 6)
    token_length = _varint(datagram, pos)
    pos += token_length_size + token_length
    return pos + (1 << (datagram[pos] >> 6))


def _varint(data: bytes, pos: int) -> int:
    size = 1 << (data[pos] >> 6)
    value = data[pos] & 0x3F
    for b in data[pos + 1 : pos + size]:
        value = (value << 8) | b
    return value


def _crypto_frame_data(payload: bytes) -> bytes:
    buf = Buffer(data=payload)
    while not buf.eof():
        frame_type = buf.pull_uint_var()
        if frame_type == QuicFrameType.PADDING:
            continue
        if frame_type == QuicFrameType.PING:
            continue
        if frame_type != QuicFrameType.CRYPTO:
            raise ValueError(f"unexpected frame {frame_type:#x} in the client's Initial")
        offset, length = buf.pull_uint_var(), buf.pull_uint_var()
        if offset != 0:
            raise ValueError("the ClientHello does not start at offset 0")
        return buf.pull_bytes(length)
    raise ValueError("no CRYPTO frame in the client's Initial")


def real_initial(dcid: bytes | None = None, token: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """(datagram, dcid, scid): a protected client Initial carrying the ClientHello, to a fresh
    random destination connection id unless one is given."""
    hello, scid = client_hello()
    dcid = os.urandom(8) if dcid is None else dcid
    crypto = CryptoPair()
    crypto.setup_initial(dcid, is_client=True, version=VERSION_1)
    builder = QuicPacketBuilder(
        host_cid=scid,
        peer_cid=dcid,
        version=VERSION_1,
        is_client=True,
        max_datagram_size=INITIAL_DATAGRAM_BYTES,
        peer_token=token,
    )
    builder.start_packet(QuicPacketType.INITIAL, crypto)
    buf = builder.start_frame(QuicFrameType.CRYPTO)
    buf.push_uint_var(0)
    buf.push_uint_var(len(hello))
    buf.push_bytes(hello)
    datagrams, _packets = builder.flush()
    return datagrams[0], dcid, scid


def garbage_initial() -> bytes:
    """A version-1 Initial header (DCID and SCID 8 bytes, no token) over 1200 random bytes."""
    header = b"\xc3" + VERSION_1.to_bytes(4, "big") + b"\x08" + os.urandom(8) + b"\x08"
    header += os.urandom(8) + b"\x00"  # no token
    rest = INITIAL_DATAGRAM_BYTES - len(header) - 2
    return header + (0x4000 | rest).to_bytes(2, "big") + os.urandom(rest)


@dataclass(frozen=True)
class Retry:
    """A server's Retry packet, integrity tag verified."""

    source_cid: bytes  # the client's next destination connection id
    destination_cid: bytes  # the client's source connection id
    token: bytes


def parse_retry(datagram: bytes, original_dcid: bytes | None = None) -> Retry | None:
    """The Retry in a datagram, or None when it is not a Retry. With `original_dcid` (the
    destination id of the Initial it answers) the integrity tag is checked: ValueError if bad."""
    try:
        header = pull_quic_header(Buffer(data=datagram), host_cid_length=8)
    except ValueError:
        return None
    if header.packet_type != QuicPacketType.RETRY:
        return None
    if original_dcid is not None:
        body = datagram[: len(datagram) - RETRY_INTEGRITY_TAG_BYTES]
        tag = get_retry_integrity_tag(body, original_dcid, version=header.version or VERSION_1)
        if tag != header.integrity_tag:
            raise ValueError("Retry integrity tag does not match")
    return Retry(header.source_cid, header.destination_cid, header.token)


def retry_answer(retry: Retry) -> bytes:
    """The Initial a validating client sends after `retry` (new DCID, the token)."""
    datagram, _dcid, _scid = real_initial(dcid=retry.source_cid, token=retry.token)
    return datagram


def make_initials(count: int, kind: Literal["real", "garbage"]) -> list[bytes]:
    """`count` client Initial datagrams, each to a fresh destination connection id."""
    if kind == "real":
        return [real_initial()[0] for _ in range(count)]
    return [garbage_initial() for _ in range(count)]


@dataclass
class FloodReport:
    """What a flood sent and what came back."""

    sent: int = 0  # Initials sent
    retries_received: int = 0  # Retry packets that came back
    retry_answers_sent: int = 0  # Initials re-sent with the Retry's token
    other_replies: int = 0  # any other datagram that came back (handshake, close, VN)
    seconds: float = 0.0  # from the first send to the end of listening


async def flood(
    host: str,
    port: int,
    datagrams: list[bytes],
    *,
    sockets: int = 256,
    answer_retries: bool = False,
    listen_s: float = 0.5,
    rate_per_s: float | None = None,
) -> FloodReport:
    """Send `datagrams` from `sockets` UDP sockets (one source port each, round-robin), at most
    `rate_per_s` per second (None: as fast as possible), then listen `listen_s` more. With
    `answer_retries`, every Retry is answered at once like a validating client would (so
    half-open connections pile up behind the Retry threshold)."""
    report = FloodReport()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    pool = [trio.socket.socket(family, socket.SOCK_DGRAM) for _ in range(max(1, sockets))]
    t0 = time.monotonic()

    async def listen(sock: trio.socket.SocketType) -> None:
        while True:
            data, _addr = await sock.recvfrom(65_535)
            retry = parse_retry(data)
            if retry is None:
                report.other_replies += 1
                continue
            report.retries_received += 1
            if answer_retries:
                await sock.send(retry_answer(retry))
                report.retry_answers_sent += 1

    try:
        async with trio.open_nursery() as nursery:
            for sock in pool:
                await sock.connect((host, port))
                nursery.start_soon(listen, sock)
            for i, datagram in enumerate(datagrams):
                try:
                    await pool[i % len(pool)].send(datagram)
                except BlockingIOError:
                    await trio.sleep(0)
                report.sent += 1
                ahead_s = (
                    0.0 if rate_per_s is None else t0 + report.sent / rate_per_s - time.monotonic()
                )
                if ahead_s > 0:
                    await trio.sleep(ahead_s)
                elif i % 64 == 63:
                    await trio.sleep(0)  # let the listeners answer Retries as they come
            await trio.sleep(listen_s)
            nursery.cancel_scope.cancel()
    finally:
        for sock in pool:
            sock.close()
    report.seconds = time.monotonic() - t0
    return report
