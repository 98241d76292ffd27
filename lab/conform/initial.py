"""Raw client Initials for the socket-level cases (RFC 9000 §17.2.2, RFC 9001 §5).

`first_flight` is what aioquic's client sends first (one 1200-byte datagram); `strip_padding`
rebuilds its first Initial packet without the PADDING frames (decrypted with the keys its own
destination connection id gives, shortened, encrypted again), so the datagram is below 1200 bytes;
`version_negotiation_versions` reads a Version Negotiation packet.
"""

from __future__ import annotations

import ssl
import time

from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.crypto import CryptoPair

VERSION_1 = 0x00000001
PADDING, PING, CRYPTO = 0x00, 0x01, 0x06
MAX_PN_BYTES = 4


def first_flight(server_name: str, peer: tuple[str, int]) -> list[bytes]:
    """The datagrams a fresh aioquic client (ALPN h3, no verification) sends first."""
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["h3"], server_name=server_name)
    cfg.verify_mode = ssl.CERT_NONE
    quic = QuicConnection(configuration=cfg)
    quic.connect(peer, now=time.monotonic())
    return [data for data, _addr in quic.datagrams_to_send(now=time.monotonic())]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it) of the QUIC varint at `pos`."""
    n = 1 << (data[pos] >> 6)
    value = data[pos] & 0x3F
    for b in data[pos + 1 : pos + n]:
        value = (value << 8) | b
    return value, pos + n


def _frames_end(payload: bytes) -> int:
    """Where the last frame that is not PADDING ends (PING, CRYPTO and PADDING only)."""
    pos = end = 0
    while pos < len(payload):
        kind = payload[pos]
        if kind == PADDING:
            pos += 1
            continue
        if kind == PING:
            pos += 1
        elif kind == CRYPTO:
            _offset, pos = _varint(payload, pos + 1)
            length, pos = _varint(payload, pos)
            pos += length
        else:
            raise ValueError(f"unexpected frame 0x{kind:x} in a client's first Initial")
        end = pos
    return end


def strip_padding(datagram: bytes) -> bytes:
    """The datagram's first Initial packet with its PADDING frames removed (re-protected)."""
    dcid_len = datagram[5]
    dcid = datagram[6 : 6 + dcid_len]
    pos = 6 + dcid_len
    pos += 1 + datagram[pos]  # source connection id
    token_len, pos = _varint(datagram, pos)
    pos += token_len
    length_at = pos
    length, pn_at = _varint(datagram, pos)
    packet = datagram[: pn_at + length]
    server = CryptoPair()
    server.setup_initial(cid=dcid, is_client=False, version=VERSION_1)
    plain_header, payload, packet_number = server.decrypt_packet(packet, pn_at, 0)
    pn_bytes = plain_header[pn_at - len(plain_header) :] if len(plain_header) > pn_at else b""
    payload = payload[: _frames_end(payload)]
    new_length = len(pn_bytes) + len(payload) + 16  # + AEAD tag
    header = plain_header[:length_at] + (0x4000 | new_length).to_bytes(2, "big") + pn_bytes
    client = CryptoPair()
    client.setup_initial(cid=dcid, is_client=True, version=VERSION_1)
    return client.encrypt_packet(header, payload, packet_number)


def version_negotiation_versions(datagram: bytes) -> list[int] | None:
    """The versions a Version Negotiation packet lists, or None if it is not one."""
    if len(datagram) < 7 or not datagram[0] & 0x80 or datagram[1:5] != b"\x00\x00\x00\x00":
        return None
    pos = 6 + datagram[5]
    pos += 1 + datagram[pos]
    body = datagram[pos:]
    return [int.from_bytes(body[i : i + 4], "big") for i in range(0, len(body) - 3, 4)]
