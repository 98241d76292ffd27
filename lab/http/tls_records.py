"""Where TLS 1.3 records end in the ciphertext of one write (sans-I/O, no sockets).

The receiver reads none of a record before all of it has arrived, so a watch event can first be
read when the last byte of its record is in. The h2 server logs that byte's offset in the TCP
stream (lab.http.tcp_offsets); the emulator's log of first transmissions then says when it left.
"""

from __future__ import annotations

from collections.abc import Sequence

TLS13_RECORD_PLAINTEXT_BYTES = 16384  # OpenSSL's max_send_fragment (the TLS maximum)
TLS13_RECORD_OVERHEAD_BYTES = 22  # 5-byte header + 1 inner content type + 16-byte AEAD tag


def tls13_record_ends(
    plain_bytes: int, cipher_bytes: int, plain_ends: Sequence[int]
) -> list[int] | None:
    """For one TLS 1.3 write of `plain_bytes` that became `cipher_bytes` of records: the
    ciphertext end (exclusive, from the write's first byte) of the record holding byte
    `p - 1` of the plaintext, for each `p` in `plain_ends` (1 ≤ p ≤ plain_bytes).

    None when `cipher_bytes` is not what full records of TLS13_RECORD_PLAINTEXT_BYTES plus
    TLS13_RECORD_OVERHEAD_BYTES each make (other bytes rode along, e.g. session tickets before
    the first write): then only the write's end is known.
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
