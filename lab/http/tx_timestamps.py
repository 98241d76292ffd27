"""Sans-I/O parts of the h2 departure stamps: TCP transmit timestamps in, (sent_ns, left_ns) out.

With SO_TIMESTAMPING (TX_SOFTWARE | SOFTWARE | OPT_ID | OPT_TSONLY) on a TCP socket the kernel
reports, on the socket's error queue, when the skb holding the last byte of each send call went
to the device: an SCM_TIMESTAMPING cmsg (3 timespecs; [0] = software, CLOCK_REALTIME) and a
sock_extended_err whose ee_data is the key = the byte offset (u32, counted from when the option
was set) of that send call's last byte. A send call that joins a not-yet-sent skb moves the
skb's key to its own last byte, so keys only grow (a retransmission can repeat an old one).

Here, no clock reads and no sockets: `parse_tx_report` reads one recvmsg's cmsg list,
`clock_offset_ns` turns three clock readings into the REALTIME − MONOTONIC offset,
`tls13_record_ends` maps plaintext positions of one TLS write to the ciphertext ends of their
records, and `DepartureTracker` meets events (end offsets) with reports (keys).
"""

from __future__ import annotations

import errno
import struct
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

# linux/net_tstamp.h
SOF_TIMESTAMPING_TX_SOFTWARE = 1 << 1
SOF_TIMESTAMPING_SOFTWARE = 1 << 4
SOF_TIMESTAMPING_OPT_ID = 1 << 7
SOF_TIMESTAMPING_OPT_TSONLY = 1 << 11
SOF_TIMESTAMPING_OPT_ID_TCP = 1 << 16  # Linux ≥ 6.2: count keys from write_seq, not snd_una
TX_STAMP_FLAGS = (
    SOF_TIMESTAMPING_TX_SOFTWARE
    | SOF_TIMESTAMPING_SOFTWARE
    | SOF_TIMESTAMPING_OPT_ID
    | SOF_TIMESTAMPING_OPT_TSONLY
)
# asm-generic/socket.h (x86, arm, riscv; not sparc/parisc/alpha/mips)
SO_TIMESTAMPING_OLD = 37
SO_TIMESTAMPING_NEW = 65
SOL_SOCKET = 1
SOL_IP = 0
IP_RECVERR = 11
SOL_IPV6 = 41
IPV6_RECVERR = 25
SO_EE_ORIGIN_TIMESTAMPING = 4  # linux/errqueue.h
SCM_TSTAMP_SND = 0  # ee_info: "the skb went to the device"
KEY_MODULUS = 1 << 32  # ee_data is a u32

_TIMESPECS = struct.Struct("=qqqqqq")  # 3 × (tv_sec, tv_nsec) on 64-bit Linux (old and new)
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # ee_errno, origin, type, code, pad, info, data
ERRQUEUE_ANCILLARY_BYTES = 512  # room for both cmsgs, with the offender's sockaddr_in6

TLS13_RECORD_PLAINTEXT_BYTES = 16384  # OpenSSL's max_send_fragment (the TLS maximum)
TLS13_RECORD_OVERHEAD_BYTES = 22  # 5-byte header + 1 inner content type + 16-byte AEAD tag


@dataclass(frozen=True, slots=True)
class TxReport:
    """One transmit report: the send call whose last byte has offset `key` (u32) left the
    host at `realtime_ns` (CLOCK_REALTIME ns)."""

    key: int
    realtime_ns: int


@dataclass(frozen=True, slots=True)
class Departed:
    """The event stamped `sent_ns` left in a packet at `left_ns` (both CLOCK_MONOTONIC ns)."""

    sent_ns: int
    left_ns: int


def parse_tx_report(ancdata: Sequence[tuple[int, int, bytes]]) -> TxReport | None:
    """The software transmit report in one error-queue recvmsg's cmsg list, or None when the
    message is something else (no timestamp, not SCM_TSTAMP_SND, not a timestamping origin)."""
    realtime_ns: int | None = None
    key: int | None = None
    for level, kind, data in ancdata:
        if level == SOL_SOCKET and kind in (SO_TIMESTAMPING_OLD, SO_TIMESTAMPING_NEW):
            if len(data) < _TIMESPECS.size:
                return None
            sec, nsec = _TIMESPECS.unpack_from(data)[:2]
            realtime_ns = sec * 1_000_000_000 + nsec
        elif (level, kind) in ((SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)):
            if len(data) < _EXTENDED_ERR.size:
                return None
            ee_errno, origin, _t, _c, _p, info, ee_data = _EXTENDED_ERR.unpack_from(data)
            if ee_errno != errno.ENOMSG or origin != SO_EE_ORIGIN_TIMESTAMPING:
                return None
            if info != SCM_TSTAMP_SND:
                return None
            key = ee_data
    if realtime_ns is None or key is None or realtime_ns == 0:
        return None
    return TxReport(key, realtime_ns)


def clock_offset_ns(mono_before_ns: int, realtime_ns: int, mono_after_ns: int) -> tuple[int, int]:
    """(CLOCK_REALTIME − CLOCK_MONOTONIC, its error bound) in ns from a REALTIME reading taken
    between two MONOTONIC ones: the midpoint is at most half the gap away."""
    gap = mono_after_ns - mono_before_ns
    return realtime_ns - (mono_before_ns + gap // 2), (gap + 1) // 2


def tls13_record_ends(
    plain_bytes: int, cipher_bytes: int, plain_ends: Sequence[int]
) -> list[int] | None:
    """For one TLS 1.3 write of `plain_bytes` that became `cipher_bytes` of records: the
    ciphertext end (exclusive, from the write's first byte) of the record holding byte
    `p - 1` of the plaintext, for each `p` in `plain_ends` (1 ≤ p ≤ plain_bytes).

    The receiver reads none of a record before all of it arrives, so that end is when the
    bytes up to `p` can be read. None when `cipher_bytes` is not what full records of
    TLS13_RECORD_PLAINTEXT_BYTES plus TLS13_RECORD_OVERHEAD_BYTES each make (other bytes rode
    along, e.g. session tickets before the first write): then only the write's end is known.
    """
    size, overhead = TLS13_RECORD_PLAINTEXT_BYTES, TLS13_RECORD_OVERHEAD_BYTES
    if plain_bytes <= 0:
        return None
    records = -(-plain_bytes // size)
    if cipher_bytes != plain_bytes + records * overhead:
        return None
    ends = []
    for p in plain_ends:
        if not 1 <= p <= plain_bytes:
            raise ValueError(f"plaintext end {p} outside 1..{plain_bytes}")
        ends.append(min(((p - 1) // size + 1) * (size + overhead), cipher_bytes))
    return ends


class DepartureTracker:
    """Meets events with transmit reports on one TCP connection.

    `pending(sent_ns, end_offset)`: an event whose bytes (with the rest of its TLS record) end
    at ciphertext offset `end_offset` (exclusive, counted from when timestamping was set; Python
    ints, no wrap) has been handed to the socket; offsets never decrease between calls.
    `reported(key, mono_ns)`: a report (u32 key, wraps at 2**32; unwrapped here against the
    previous one) at `mono_ns`. An event departs with the first report whose key ≥ its
    end_offset − 1: the send call holding its last byte, or a later one that joined the same
    skb — both left in that skb. When the event's bytes ended inside a longer send call, the
    report is that call's last byte: an upper bound of at most one call (the caller cuts its
    calls where events end to keep it exact).

    A report may come before its event is known (the send returns after the packet left): the
    last `recent` reports are kept and searched. Repeated keys (retransmissions) are ignored.
    At most `max_pending` events wait; more are dropped and counted in `dropped`.
    """

    __slots__ = ("_pending", "_recent", "_top", "dropped", "max_pending")

    def __init__(self, max_pending: int = 100_000, recent: int = 1024) -> None:
        self.max_pending = max_pending
        self.dropped = 0
        self._pending: deque[tuple[int, int]] = deque()  # (end_offset, sent_ns), in order
        self._recent: deque[tuple[int, int]] = deque(maxlen=recent)  # (key, mono_ns), rising
        self._top = -1  # the highest unwrapped key reported so far

    @property
    def waiting(self) -> int:
        """Events handed to the socket whose report has not come yet."""
        return len(self._pending)

    def pending(self, sent_ns: int, end_offset: int) -> list[Departed]:
        """Note an event; returns it at once (a one-element list) when its report came already."""
        if end_offset < 1:
            raise ValueError(f"end offset {end_offset}: an event has at least one byte")
        if self._pending and end_offset < self._pending[-1][0]:
            raise ValueError(f"end offset {end_offset} below {self._pending[-1][0]}")
        last_byte = end_offset - 1
        if last_byte <= self._top:
            return [Departed(sent_ns, self._first_report_from(last_byte))]
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return []
        self._pending.append((end_offset, sent_ns))
        return []

    def reported(self, key: int, mono_ns: int) -> list[Departed]:
        """Note a report; returns the events it completes, oldest first."""
        if not 0 <= key < KEY_MODULUS:
            raise ValueError(f"key {key} is not a u32")
        unwrapped = self._unwrap(key)
        if unwrapped <= self._top:
            return []  # a retransmission, or a key we had
        self._top = unwrapped
        self._recent.append((unwrapped, mono_ns))
        out: list[Departed] = []
        pending = self._pending
        while pending and pending[0][0] - 1 <= unwrapped:
            _end, sent_ns = pending.popleft()
            out.append(Departed(sent_ns, mono_ns))
        return out

    def _unwrap(self, key: int) -> int:
        """`key` as the offset nearest the previous top (within ±2**31)."""
        base = max(self._top, 0)
        delta = (key - base + KEY_MODULUS // 2) % KEY_MODULUS - KEY_MODULUS // 2
        return base + delta

    def _first_report_from(self, last_byte: int) -> int:
        """Time of the earliest kept report with key ≥ last_byte (the oldest kept one when
        older ones were forgotten: later, so still no earlier than the bytes left)."""
        when = self._recent[-1][1]
        for key, mono_ns in reversed(self._recent):
            if key < last_byte:
                break
            when = mono_ns
        return when
