"""Retry tokens of the HTTP/3 server (RFC 9000 §8.1.2–8.1.4): stateless address validation.

A token binds the client's address (host and port), its original destination connection id,
the Retry's source connection id and the issue time, under an HMAC-SHA256 tag with a key that
lives only in this process; the server keeps no state per token. Layout:

    b"LR" | issued_ms (8, big endian) | len | original dcid | len | retry scid | tag (16)

Sans-I/O: `now` (seconds, any monotonic clock) is an argument.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Sequence
from dataclasses import dataclass

MAGIC = b"LR"
TAG_BYTES = 16
RETRY_TOKEN_LIFETIME_S = 10.0  # a client returns a Retry token at once (RFC 9000 §8.1.4)


class InvalidToken(ValueError):
    """A token of ours that does not validate (forged, expired, other address or id)."""


@dataclass(frozen=True, slots=True)
class ValidatedToken:
    """What a valid token proves: the connection ids to give the new connection."""

    original_dcid: bytes  # the client's first destination connection id
    retry_source_cid: bytes  # the Retry's source connection id (= the Initial's DCID now)


def _address_bytes(addr: Sequence[object]) -> bytes:
    return f"{addr[0]}|{addr[1]}".encode()


class RetryTokens:
    """Issues and validates Retry tokens with one random key per server process."""

    def __init__(self, lifetime_s: float = RETRY_TOKEN_LIFETIME_S, key: bytes | None = None):
        self._key = os.urandom(32) if key is None else key
        self.lifetime_s = lifetime_s

    def _tag(self, addr: Sequence[object], body: bytes) -> bytes:
        return hmac.digest(self._key, _address_bytes(addr) + body, hashlib.sha256)[:TAG_BYTES]

    def create(
        self, addr: Sequence[object], original_dcid: bytes, retry_source_cid: bytes, now: float
    ) -> bytes:
        """A token for the client at `addr` (a (host, port, …) tuple)."""
        body = MAGIC + int(now * 1000).to_bytes(8, "big")
        body += bytes([len(original_dcid)]) + original_dcid
        body += bytes([len(retry_source_cid)]) + retry_source_cid
        return body + self._tag(addr, body)

    @staticmethod
    def is_ours(token: bytes) -> bool:
        """True when a token has this server's Retry-token layout (it may still be invalid)."""
        return token.startswith(MAGIC)

    def validate(
        self, addr: Sequence[object], dcid: bytes, token: bytes, now: float
    ) -> ValidatedToken:
        """The connection ids a token vouches for; raises InvalidToken."""
        body, tag = token[:-TAG_BYTES], token[-TAG_BYTES:]
        if len(token) < len(MAGIC) + 8 + 2 + TAG_BYTES or not token.startswith(MAGIC):
            raise InvalidToken("not a Retry token of this server")
        if not hmac.compare_digest(tag, self._tag(addr, body)):
            raise InvalidToken("bad tag (other address, other server, or forged)")
        issued_s = int.from_bytes(body[2:10], "big") / 1000
        pos = 10
        odcid = body[pos + 1 : pos + 1 + body[pos]]
        pos += 1 + body[pos]
        rscid = body[pos + 1 : pos + 1 + body[pos]]
        if not 0 <= now - issued_s <= self.lifetime_s:
            raise InvalidToken("expired")
        if dcid != rscid:  # the client must send to the Retry's source id (RFC 9000 §17.2.5.2)
            raise InvalidToken("destination connection id does not match")
        return ValidatedToken(odcid, rscid)
