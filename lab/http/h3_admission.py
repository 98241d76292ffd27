"""Which datagrams may create connection state on the HTTP/3 server, and what to answer.

Sans-I/O: `Gate.admit` takes one parsed datagram that matched no connection, the number of
half-open connections (created, handshake not complete) and `now`, and returns a verdict; the
server does the sending. Order of the checks, cheapest first:

1. not a QUIC header → drop; not an Initial or a datagram < 1200 bytes → drop (RFC 9000 §14.1);
   shutting down → drop;
2. unsupported version → Version Negotiation;
3. destination connection id < 8 bytes (RFC 9000 §7.2) or packet protection that does not open
   with the Initial keys → drop: garbage never creates state;
4. a token of ours → valid: accept with the ids it vouches for; invalid → CONNECTION_CLOSE
   INVALID_TOKEN (RFC 9000 §8.1.3). No token (or another server's) while half-open ≥
   `retry_above_half_open` → Retry (RFC 9000 §8.1.2): the client must prove its address first;
5. half-open ≥ `max_half_open` → drop (see `lab.http.settings.QuicServerLimits` for why drop);
6. accept.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

from lab.http.quic_initial import (
    MIN_CLIENT_DCID_BYTES,
    SMALLEST_DATAGRAM_BYTES,
    opens_with_valid_initial,
)
from lab.http.retry_token import RETRY_TOKEN_LIFETIME_S, InvalidToken, RetryTokens
from lab.http.settings import QuicServerLimits

Verdict = Literal[
    "accept",  # create a connection
    "retry",  # answer with a Retry packet, keep no state
    "invalid_token",  # answer with CONNECTION_CLOSE(INVALID_TOKEN), keep no state
    "version_negotiation",  # answer with Version Negotiation, keep no state
    "drop_unknown_cid",  # not an Initial and no connection has that id (e.g. a late packet)
    "drop_short",  # an Initial in a datagram < 1200 bytes
    "drop_bad_dcid",  # an Initial with a destination connection id < 8 bytes
    "drop_undecryptable",  # an Initial whose protection does not open: garbage
    "drop_half_open_cap",  # `max_half_open` connections are half-open already
    "drop_not_accepting",  # the server is shutting down
]


@dataclass(frozen=True, slots=True)
class InitialHeader:
    """The fields of a datagram's first long header that admission looks at."""

    is_initial: bool
    version: int
    destination_cid: bytes
    source_cid: bytes
    token: bytes


@dataclass(frozen=True, slots=True)
class Admission:
    """A verdict; for "accept", the connection ids to create the connection with."""

    verdict: Verdict
    original_dcid: bytes | None = None  # the client's first destination connection id
    retry_source_cid: bytes | None = None  # set when the client came back from a Retry


class Gate:
    """Admission of new connections under the server's half-open limits."""

    def __init__(
        self,
        limits: QuicServerLimits,
        supported_versions: Collection[int],
        tokens: RetryTokens | None = None,
    ) -> None:
        self.limits = limits
        self.supported_versions = frozenset(supported_versions)
        # a client that got a Retry re-sends its Initial with the token while the cap holds it
        # off (up to handshake_timeout_s, then its retransmission backoff): keep the token valid
        lifetime_s = max(RETRY_TOKEN_LIFETIME_S, 3 * limits.handshake_timeout_s)
        self.tokens = RetryTokens(lifetime_s) if tokens is None else tokens

    def admit(
        self,
        header: InitialHeader,
        datagram: bytes,
        addr: Sequence[object],
        *,
        half_open: int,
        accepting: bool,
        now: float,
    ) -> Admission:
        """The verdict for a datagram that matched no connection."""
        if not header.is_initial:
            return Admission("drop_unknown_cid")
        if len(datagram) < SMALLEST_DATAGRAM_BYTES:
            return Admission("drop_short")
        if not accepting:
            return Admission("drop_not_accepting")
        if header.version not in self.supported_versions:
            return Admission("version_negotiation")
        if len(header.destination_cid) < MIN_CLIENT_DCID_BYTES:
            return Admission("drop_bad_dcid")
        if not opens_with_valid_initial(datagram):
            return Admission("drop_undecryptable")
        original_dcid, retry_source_cid = header.destination_cid, None
        if header.token and self.tokens.is_ours(header.token):
            try:
                valid = self.tokens.validate(addr, header.destination_cid, header.token, now)
            except InvalidToken:
                return Admission("invalid_token")
            original_dcid, retry_source_cid = valid.original_dcid, valid.retry_source_cid
        elif half_open >= self.limits.retry_above_half_open:
            return Admission("retry")
        if half_open >= self.limits.max_half_open:
            return Admission("drop_half_open_cap")
        return Admission("accept", original_dcid, retry_source_cid)
